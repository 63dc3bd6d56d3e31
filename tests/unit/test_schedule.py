"""callflow.schedule: calendar state from a given datetime (no clock)."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from callflow.schedule import (
    Calendar,
    CalendarSpec,
    Override,
    OverrideStore,
    Source,
    format_timeline,
    localize,
    parse_timezone,
    timeline,
)

PARIS = ZoneInfo("Europe/Paris")

OFFICE: dict[str, Any] = {
    "weekly": {"mon-fri": ["08:00-12:30", "14:00-19:00"], "sat": ["09:00-12:00"]},
    "holidays": {"country": "FR"},
    "closed": [
        {"from": "2026-08-03", "to": "2026-08-21", "label": "congés d'été"},
        {"from": "2026-12-24 12:00", "to": "2026-12-24 19:00", "label": "réveillon"},
    ],
    "open": [{"from": "2026-12-28 09:00", "to": "2026-12-28 12:00", "label": "permanence"}],
}


def make(data: dict[str, Any], tz: ZoneInfo = PARIS) -> Calendar:
    return Calendar("office", CalendarSpec.model_validate(data), tz)


def paris(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, fold: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=PARIS, fold=fold)


# -- weekly hours ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hour", "minute", "is_open"),
    [
        (7, 59, False),
        (8, 0, True),
        (12, 29, True),
        (12, 30, False),
        (13, 59, False),
        (14, 0, True),
        (18, 59, True),
        (19, 0, False),
    ],
)
def test_weekly_boundaries_at_the_exact_minute(hour: int, minute: int, is_open: bool) -> None:
    cal = make(OFFICE)
    assert cal.state_at(paris(2026, 3, 10, hour, minute)).open is is_open  # a Tuesday


def test_weekly_reason_and_until() -> None:
    cal = make(OFFICE)
    state = cal.state_at(paris(2026, 3, 14, 10, 0))  # Saturday
    assert (state.open, state.source, state.reason, state.label) == (
        True,
        Source.WEEKLY,
        "weekly: sat 09:00-12:00",
        None,
    )
    assert state.until == paris(2026, 3, 14, 12, 0)
    closed = cal.state_at(paris(2026, 3, 14, 12, 0))
    assert closed.reason == "weekly: outside opening hours"
    assert closed.until == paris(2026, 3, 16, 8, 0)  # Monday morning


def test_naive_is_local_and_other_zones_are_converted() -> None:
    cal = make(OFFICE)
    local = cal.state_at(datetime(2026, 3, 10, 8, 0))
    utc = cal.state_at(datetime(2026, 3, 10, 7, 0, tzinfo=UTC))
    assert local == utc
    assert local.open


def test_day_keys_lists_ranges_and_wraparound() -> None:
    cal = make({"weekly": {"mon,wed": ["10:00-11:00"], "fri-sun": ["10:00-11:00"]}})
    opened = [d for d in range(7) if cal.state_at(paris(2026, 3, 9 + d, 10, 30)).open]
    assert opened == [0, 2, 4, 5, 6]


def test_range_crossing_midnight_belongs_to_its_start_day() -> None:
    cal = make({"weekly": {"sat": ["20:00-08:00"]}})
    assert not cal.state_at(paris(2026, 3, 14, 19, 59)).open
    sat = cal.state_at(paris(2026, 3, 14, 20, 0))
    assert sat.open and sat.reason == "weekly: sat 20:00-08:00"
    assert sat.until == paris(2026, 3, 15, 8, 0)
    sun = cal.state_at(paris(2026, 3, 15, 7, 59))
    assert sun.open and sun.reason == "weekly: sat 20:00-08:00"
    assert not cal.state_at(paris(2026, 3, 15, 8, 0)).open
    assert not cal.state_at(paris(2026, 3, 14, 7, 0)).open  # Saturday early: Friday had none


def test_all_day_with_24_00() -> None:
    cal = make({"weekly": {"sun": ["00:00-24:00"]}})
    assert cal.state_at(paris(2026, 3, 15, 0, 0)).open
    assert cal.state_at(paris(2026, 3, 15, 23, 59)).open
    assert not cal.state_at(paris(2026, 3, 16, 0, 0)).open


# -- DST (Europe/Paris: 2026-03-29 02:00→03:00, 2026-10-25 03:00→02:00) --------------------


def test_spring_forward_range_across_the_gap() -> None:
    cal = make({"weekly": {"sun": ["01:00-04:00"]}})
    assert not cal.state_at(paris(2026, 3, 29, 0, 59)).open
    start = cal.state_at(paris(2026, 3, 29, 1, 0))
    assert start.open
    assert start.until == paris(2026, 3, 29, 4, 0)
    assert start.until is not None and start.until.utcoffset() == timedelta(hours=2)
    assert cal.state_at(paris(2026, 3, 29, 3, 59)).open
    assert not cal.state_at(paris(2026, 3, 29, 4, 0)).open
    [iv] = [i for i in timeline(cal, paris(2026, 3, 29), paris(2026, 3, 30)) if i.state.open]
    assert iv.end.astimezone(UTC) - iv.start.astimezone(UTC) == timedelta(hours=2)


def test_spring_forward_bound_inside_the_gap_means_end_of_gap() -> None:
    cal = make({"weekly": {"sun": ["02:30-05:00"]}})
    before = cal.state_at(paris(2026, 3, 29, 1, 59))
    assert not before.open
    assert before.until == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST
    assert cal.state_at(datetime(2026, 3, 29, 1, 0, tzinfo=UTC)).open
    # A naive wall time in the gap is read the same way.
    assert localize(datetime(2026, 3, 29, 2, 30), PARIS) == paris(2026, 3, 29, 3, 0)


def test_fall_back_range_across_the_fold() -> None:
    cal = make({"weekly": {"sun": ["01:00-04:00"]}})
    assert cal.state_at(paris(2026, 10, 25, 2, 30, fold=0)).open  # CEST
    assert cal.state_at(paris(2026, 10, 25, 2, 30, fold=1)).open  # CET
    assert not cal.state_at(paris(2026, 10, 25, 4, 0)).open
    [iv] = [i for i in timeline(cal, paris(2026, 10, 25), paris(2026, 10, 26)) if i.state.open]
    assert iv.end.astimezone(UTC) - iv.start.astimezone(UTC) == timedelta(hours=4)


def test_fall_back_ambiguous_bound_is_first_occurrence() -> None:
    cal = make({"weekly": {"sun": ["01:00-02:30"]}})
    state = cal.state_at(paris(2026, 10, 25, 1, 0))
    # An aware datetime in a fold never == one of another zone (PEP 495): compare in UTC.
    assert state.until is not None and state.until.fold == 0
    assert state.until.astimezone(UTC) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # CEST
    assert not cal.state_at(paris(2026, 10, 25, 2, 15, fold=1)).open


def test_dst_days_render_with_a_note() -> None:
    cal = make({"weekly": {"sun": ["01:00-04:00"]}})
    text = format_timeline(timeline(cal, paris(2026, 3, 29), paris(2026, 3, 30)))
    assert text.splitlines() == [
        "Sun 2026-03-29  note: UTC offset changes from +01:00 to +02:00",
        "Sun 2026-03-29  00:00-01:00  closed (weekly: outside opening hours)",
        "Sun 2026-03-29  01:00-04:00  open   (weekly: sun 01:00-04:00)",
        "Sun 2026-03-29  04:00-24:00  closed (weekly: outside opening hours)",
    ]


# -- holidays ----------------------------------------------------------------------------

EASTER = {  # year: (Good Friday, Easter Monday, Ascension, Whit Monday)
    2025: (date(2025, 4, 18), date(2025, 4, 21), date(2025, 5, 29), date(2025, 6, 9)),
    2026: (date(2026, 4, 3), date(2026, 4, 6), date(2026, 5, 14), date(2026, 5, 25)),
    2027: (date(2027, 3, 26), date(2027, 3, 29), date(2027, 5, 6), date(2027, 5, 17)),
}


@pytest.mark.parametrize("year", sorted(EASTER))
def test_easter_based_holidays(year: int) -> None:
    good_friday, *others = EASTER[year]
    national = make({"weekly": {"mon-fri": ["08:00-19:00"]}, "holidays": {"country": "FR"}})
    for day in others:
        assert national.holiday_name(day), day
        state = national.state_at(datetime.combine(day, datetime.min.time()).replace(hour=10))
        assert (state.open, state.source) == (False, Source.HOLIDAY)
        assert not national.holiday_name(day - timedelta(days=1))
    assert national.holiday_name(good_friday) is None
    assert national.state_at(
        datetime.combine(good_friday, datetime.min.time()).replace(hour=10)
    ).open
    for subdivision in ("57", "6AE"):
        local = make({"holidays": {"country": "FR", "subdivision": subdivision}})
        assert local.holiday_name(good_friday) == "Good Friday"
        assert all(local.holiday_name(day) for day in others)


def test_holiday_names() -> None:
    cal = make({"holidays": {"country": "FR", "subdivision": "57"}})
    assert cal.holiday_name(date(2026, 4, 6)) == "Easter Monday"
    assert cal.holiday_name(date(2026, 5, 14)) == "Ascension Day"
    assert cal.holiday_name(date(2026, 12, 25)) == "Christmas Day"
    assert cal.holiday_name(date(2026, 12, 26)) == "Saint Stephen's Day"
    assert make({"holidays": {"country": "FR"}}).holiday_name(date(2026, 12, 26)) is None
    assert make({}).holiday_name(date(2026, 12, 25)) is None


def test_st_stephen_closes_the_whole_day_in_moselle() -> None:
    cal = make(
        {"weekly": {"sat": ["00:00-24:00"]}, "holidays": {"country": "FR", "subdivision": "57"}}
    )
    state = cal.state_at(paris(2026, 12, 26, 10, 0))  # a Saturday
    assert (state.open, state.source, state.reason, state.label) == (
        False,
        Source.HOLIDAY,
        "holiday: Saint Stephen's Day",
        "Saint Stephen's Day",
    )
    assert state.until == paris(2026, 12, 27, 0, 0)


# -- closures, openings, precedence -------------------------------------------------------


def test_closure_date_bounds_are_whole_days_inclusive() -> None:
    cal = make(OFFICE)
    assert cal.state_at(paris(2026, 7, 31, 18, 0)).open  # the Friday before
    first = cal.state_at(paris(2026, 8, 3, 10, 0))
    assert (first.open, first.source, first.reason, first.label) == (
        False,
        Source.CLOSURE,
        "closure: congés d'été",
        "congés d'été",
    )
    assert first.until == paris(2026, 8, 22, 0, 0)  # beyond 14 days: closure's end
    last = cal.state_at(paris(2026, 8, 21, 18, 59))
    assert last.source is Source.CLOSURE and not last.open
    assert cal.state_at(paris(2026, 8, 22, 10, 0)).source is Source.WEEKLY  # reverts
    assert cal.state_at(paris(2026, 8, 24, 8, 0)).open


def test_closure_datetime_bounds_are_half_open() -> None:
    cal = make(OFFICE)
    assert cal.state_at(paris(2026, 12, 24, 11, 59)).open
    assert cal.state_at(paris(2026, 12, 24, 12, 0)).reason == "closure: réveillon"
    assert cal.state_at(paris(2026, 12, 24, 18, 59)).source is Source.CLOSURE
    assert cal.state_at(paris(2026, 12, 24, 19, 0)).source is Source.WEEKLY


def test_unlabelled_period_reason_shows_dates() -> None:
    cal = make(
        {
            "closed": [{"from": "2026-08-03", "to": "2026-08-05"}],
            "open": [{"from": "2026-08-04 09:00", "to": "2026-08-04 10:00"}],
        }
    )
    assert cal.state_at(paris(2026, 8, 3, 9)).reason == "closure: 2026-08-03 to 2026-08-05"
    assert cal.state_at(paris(2026, 8, 4, 9)).reason == (
        "opening: 2026-08-04 09:00 to 2026-08-04 10:00"
    )


LAYERS: dict[str, Any] = {
    "weekly": {"mon-fri": ["08:00-19:00"]},
    "holidays": {"country": "FR"},
    "closed": [{"from": "2026-12-24", "to": "2026-12-26", "label": "fermeture"}],
    "open": [{"from": "2026-12-25 10:00", "to": "2026-12-25 11:00", "label": "permanence"}],
}
CHRISTMAS_10_15 = paris(2026, 12, 25, 10, 15)
CLOSED_UNTIL_10_30 = Override(
    open=False, until=paris(2026, 12, 25, 10, 30), label="grève", set_by="dr.martin"
)


@pytest.mark.parametrize(
    ("without", "expected"),
    [
        (
            (),
            (
                False,
                Source.OVERRIDE,
                "override: closed until 2026-12-25 10:30 (grève, set by dr.martin)",
            ),
        ),
        (("override",), (True, Source.OPENING, "opening: permanence")),
        (("override", "open"), (False, Source.CLOSURE, "closure: fermeture")),
        (("override", "open", "closed"), (False, Source.HOLIDAY, "holiday: Christmas Day")),
        (
            ("override", "open", "closed", "holidays"),
            (True, Source.WEEKLY, "weekly: fri 08:00-19:00"),
        ),
    ],
)
def test_precedence_each_layer_beats_the_next(
    without: tuple[str, ...], expected: tuple[bool, Source, str]
) -> None:
    cal = make({k: v for k, v in LAYERS.items() if k not in without})
    override = None if "override" in without else CLOSED_UNTIL_10_30
    state = cal.state_at(CHRISTMAS_10_15, override)
    assert (state.open, state.source, state.reason) == expected


def test_override_auto_reverts() -> None:
    cal = make(LAYERS)
    ov = Override(open=True, until=paris(2026, 12, 25, 10, 30))
    during = cal.state_at(paris(2026, 12, 25, 10, 29), ov)
    assert during.open and during.source is Source.OVERRIDE
    assert during.reason == "override: open until 2026-12-25 10:30"
    assert during.until == ov.until
    after = cal.state_at(paris(2026, 12, 25, 10, 30), ov)
    assert after.source is Source.OPENING


def test_long_periods_give_their_exact_end() -> None:
    cal = make({**OFFICE, "closed": [{"from": "2026-06-01", "to": "2026-09-30"}]})
    assert cal.state_at(paris(2026, 6, 2)).until == paris(2026, 10, 1)
    forever = Override(open=False, until=paris(2100, 1, 1))
    assert cal.state_at(paris(2026, 6, 2), forever).until == paris(2100, 1, 1)


def test_override_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Override(open=False, until=datetime(2026, 1, 1))


def test_override_store_drops_expired() -> None:
    store = OverrideStore()
    ov = Override(open=False, until=datetime(2026, 12, 28, 7, 0, tzinfo=UTC))
    store.set("office", ov)
    assert store.get("office", paris(2026, 12, 28, 7, 59)) is ov
    assert store.active(paris(2026, 12, 28, 7, 59)) == {"office": ov}
    assert store.get("office", paris(2026, 12, 28, 8, 0)) is None
    store.set("office", ov)
    store.clear("office")
    store.clear("absent")
    assert store.get("office", paris(2026, 1, 1)) is None
    with pytest.raises(ValueError):
        store.get("office", datetime(2026, 1, 1))


# -- timeline ----------------------------------------------------------------------------


def test_timeline_and_format() -> None:
    cal = make({**OFFICE, "holidays": {"country": "FR", "subdivision": "57"}})
    intervals = timeline(cal, datetime(2026, 12, 24), datetime(2026, 12, 29))
    assert intervals[0].start == paris(2026, 12, 24)
    assert intervals[-1].end == paris(2026, 12, 29)
    for a, b in itertools.pairwise(intervals):
        assert a.end == b.start == a.state.until
        assert (a.state.open, a.state.reason) != (b.state.open, b.state.reason)
    assert format_timeline(intervals) == "\n".join(
        [
            "Thu 2026-12-24  00:00-08:00  closed (weekly: outside opening hours)",
            "Thu 2026-12-24  08:00-12:00  open   (weekly: thu 08:00-12:30)",
            "Thu 2026-12-24  12:00-19:00  closed (closure: réveillon)",
            "Thu 2026-12-24  19:00-24:00  closed (weekly: outside opening hours)",
            "Fri 2026-12-25  00:00-24:00  closed (holiday: Christmas Day)",
            "Sat 2026-12-26  00:00-24:00  closed (holiday: Saint Stephen's Day)",
            "Sun 2026-12-27  00:00-24:00  closed (weekly: outside opening hours)",
            "Mon 2026-12-28  00:00-08:00  closed (weekly: outside opening hours)",
            "Mon 2026-12-28  08:00-09:00  open   (weekly: mon 08:00-12:30)",
            "Mon 2026-12-28  09:00-12:00  open   (opening: permanence)",
            "Mon 2026-12-28  12:00-12:30  open   (weekly: mon 08:00-12:30)",
            "Mon 2026-12-28  12:30-14:00  closed (weekly: outside opening hours)",
            "Mon 2026-12-28  14:00-19:00  open   (weekly: mon 14:00-19:00)",
            "Mon 2026-12-28  19:00-24:00  closed (weekly: outside opening hours)",
        ]
    )
    # An empty window has no intervals.
    assert timeline(cal, paris(2026, 12, 24), paris(2026, 12, 24)) == []


def test_timeline_with_override_then_revert() -> None:
    cal = make(OFFICE)
    ov = Override(open=False, until=paris(2026, 3, 10, 10, 0), label="grève")
    intervals = timeline(cal, paris(2026, 3, 10, 7, 0), paris(2026, 3, 10, 13, 0), ov)
    assert [(i.start.hour, i.end.hour, i.state.source) for i in intervals] == [
        (7, 10, Source.OVERRIDE),
        (10, 12, Source.WEEKLY),
        (12, 13, Source.WEEKLY),
    ]
    assert intervals[-1].state.until == paris(2026, 3, 10, 14, 0)


ZONES = [PARIS, ZoneInfo("America/Santiago"), ZoneInfo("Australia/Lord_Howe")]
RANDOM_SPEC: dict[str, Any] = {
    "weekly": {
        "mon-fri": ["08:00-12:30", "14:00-19:00"],
        "sat": ["20:00-08:00"],
        "sun": ["00:00-01:00", "01:00-04:00", "02:30-03:30"],
    },
    "holidays": {"country": "FR", "subdivision": "57"},
    "closed": [
        {"from": "2026-03-27", "to": "2026-03-30", "label": "c1"},
        {"from": "2026-10-25 02:30", "to": "2026-10-25 05:00"},
    ],
    "open": [{"from": "2026-03-29 02:15", "to": "2026-03-29 03:30"}],
}


# Random instants rarely land on DST days, so half of them are drawn near a transition
# of one of ZONES (Paris, Santiago, Lord Howe: a 30-minute shift).
TRANSITIONS = [
    datetime(2026, 3, 29, 1, tzinfo=UTC),
    datetime(2026, 10, 25, 1, tzinfo=UTC),
    datetime(2026, 4, 5, 3, tzinfo=UTC),
    datetime(2026, 9, 6, 4, tzinfo=UTC),
    datetime(2026, 4, 4, 15, tzinfo=UTC),
    datetime(2026, 10, 3, 15, tzinfo=UTC),
]
INSTANTS = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
) | st.builds(
    lambda t, minutes: t + timedelta(minutes=minutes),
    st.sampled_from(TRANSITIONS),
    st.integers(min_value=-2000, max_value=2000),
)


@settings(max_examples=200, deadline=None)
@given(
    at=INSTANTS,
    zone=st.sampled_from(ZONES),
    override_minutes=st.none() | st.integers(min_value=-600, max_value=6000),
    override_open=st.booleans(),
)
def test_state_at_agrees_with_timeline(
    at: datetime, zone: ZoneInfo, override_minutes: int | None, override_open: bool
) -> None:
    cal = make(RANDOM_SPEC, zone)
    override = None
    if override_minutes is not None:
        override = Override(override_open, at + timedelta(minutes=override_minutes))
    state = cal.state_at(at, override)
    intervals = timeline(cal, at - timedelta(days=2), at + timedelta(days=2), override)
    [iv] = [i for i in intervals if i.start <= at < i.end]
    assert (state.open, state.source, state.reason, state.label) == (
        iv.state.open,
        iv.state.source,
        iv.state.reason,
        iv.state.label,
    )
    if iv is not intervals[-1]:
        assert state.until is not None
        assert state.until.astimezone(UTC) == iv.end.astimezone(UTC)
    # Wall-clock view agrees: the same instant given as naive local time (with its fold).
    local = at.astimezone(zone)
    assert cal.state_at(local.replace(tzinfo=None)) == cal.state_at(at)


# -- validation --------------------------------------------------------------------------


def errors(data: dict[str, Any]) -> list[tuple[tuple[int | str, ...], str]]:
    with pytest.raises(ValidationError) as info:
        CalendarSpec.model_validate(data)
    return [(e["loc"], e["msg"]) for e in info.value.errors()]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "25:00-26:00",
            "invalid time range '25:00-26:00': hours must be 00-24, expected 'HH:MM-HH:MM'",
        ),
        ("8h-12h", "invalid time range '8h-12h': expected 'HH:MM-HH:MM'"),
        ("12:00-12:00", "invalid time range '12:00-12:00': empty"),
        ("08:00-12:60", "minutes must be 00-59"),
        ("24:00-02:00", "24:00 can only end a range"),
        ("08:00-24:30", "24:00 is the latest time"),
    ],
)
def test_bad_time_range(text: str, message: str) -> None:
    [(loc, msg)] = errors({"weekly": {"mon-fri": ["08:00-12:00"], "sat": ["09:00-10:00", text]}})
    assert loc == ("weekly", "sat", 1)
    assert message in msg


@pytest.mark.parametrize("key", ["satx", "mon-frx", "mon--fri", ""])
def test_bad_day_key(key: str) -> None:
    [(loc, msg)] = errors({"weekly": {key: ["08:00-12:00"]}})
    assert loc == ("weekly", key)
    assert "day" in msg and "expected mon, tue" in msg


def test_bad_day_key_and_bad_range_reported_together() -> None:
    found = errors({"weekly": {"satx": ["8h"], "sat": "09:00-12:00"}})
    assert [loc for loc, _ in found] == [
        ("weekly", "satx"),
        ("weekly", "satx", 0),
        ("weekly", "sat"),
    ]
    assert found[1][1].count("Value error") == 1


def test_bad_holidays() -> None:
    [(loc, msg)] = errors({"holidays": {"country": "XX"}})
    assert loc == ("holidays", "country")
    assert "unknown country 'XX'" in msg
    [(loc, msg)] = errors({"holidays": {"country": "FR", "subdivision": "99"}})
    assert loc == ("holidays", "subdivision")
    assert "unknown subdivision '99' for FR; valid: 57, 6AE, 971" in msg
    [(_, msg)] = errors({"holidays": {"country": "US", "subdivision": "ZZ"}})
    assert msg.endswith("more)")
    [(loc, _)] = errors({"holidays": {"country": "FR", "region": "57"}})
    assert loc == ("holidays", "region")


def test_holidays_accept_case_and_aliases() -> None:
    spec = CalendarSpec.model_validate({"holidays": {"country": "fr", "subdivision": "moselle"}})
    assert spec.holidays is not None
    assert (spec.holidays.country, spec.holidays.subdivision) == ("FR", "57")


@pytest.mark.parametrize(
    ("period", "loc", "message"),
    [
        (
            {"from": "2026-08-21", "to": "2026-08-03"},
            ("closed", 0, "to"),
            "'to' (2026-08-03) is before 'from' (2026-08-21)",
        ),
        (
            {"from": "2026-12-24 19:00", "to": "2026-12-24 12:00"},
            ("closed", 0, "to"),
            "'to' (2026-12-24 12:00) is before 'from' (2026-12-24 19:00)",
        ),
        (
            {"from": "2026-12-24 12:00", "to": "2026-12-24 12:00"},
            ("closed", 0, "to"),
            "empty period",
        ),
        (
            {"from": "2026-02-30", "to": "2026-03-01"},
            ("closed", 0, "from"),
            "invalid date '2026-02-30': day is out of range for month",
        ),
        (
            {"from": "2026-08-03", "to": "next week"},
            ("closed", 0, "to"),
            "invalid date 'next week': expected 'YYYY-MM-DD' or 'YYYY-MM-DD HH:MM'",
        ),
        (
            {"from": "2026-08-03", "to": "2026-08-04", "note": "x"},
            ("closed", 0, "note"),
            "Extra inputs",
        ),
    ],
)
def test_bad_period(period: dict[str, str], loc: tuple[Any, ...], message: str) -> None:
    [(got_loc, msg)] = errors({"closed": [period]})
    assert got_loc == loc
    assert message in msg


def test_periods_accept_date_objects_and_names() -> None:
    spec = CalendarSpec.model_validate(
        {
            "closed": [{"from": date(2026, 8, 3), "to": datetime(2026, 8, 4, 12, 0)}],
            "open": [{"from_": "2026-08-05", "to": "2026-08-05"}],  # populate_by_name
        }
    )
    assert spec.closed[0].from_ == date(2026, 8, 3)
    assert spec.open[0].to == date(2026, 8, 5)
    cal = Calendar("x", spec, PARIS)
    assert cal.state_at(paris(2026, 8, 4, 11, 59)).source is Source.CLOSURE
    assert cal.state_at(paris(2026, 8, 4, 12, 0)).source is Source.WEEKLY
    with pytest.raises(ValidationError):
        CalendarSpec.model_validate(
            {"closed": [{"from": datetime(2026, 8, 3, tzinfo=UTC), "to": "2026-08-04"}]}
        )


def test_parse_timezone() -> None:
    assert parse_timezone("Europe/Paris") == PARIS
    for bad in ("Europe/Pariss", "", "../etc/passwd"):
        with pytest.raises(ValueError, match="unknown timezone"):
            parse_timezone(bad)
