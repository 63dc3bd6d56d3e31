"""Calendar feeds, the pure part: real .ics files (a Google Agenda export with a weekly
RRULE, an EXDATE, an all-day event and a cancelled one; a Cal.com export with a Sunday
opening) read into calendars, and the state they give."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from callflow.schedule import (
    Calendar,
    CalendarSpec,
    FeedBook,
    FeedError,
    Source,
    format_timeline,
    localize,
    parse_feed,
    timeline,
)

PARIS = ZoneInfo("Europe/Paris")
FEEDS = Path(__file__).parent / "feeds"
CLOSED = FEEDS / "fermetures.ics"
OPEN = FEEDS / "permanences.ics"

OFFICE: dict[str, Any] = {
    "weekly": {"mon-fri": ["08:00-12:30", "14:00-19:00"], "sat": ["09:00-12:00"]},
    "closed_feeds": ["feeds/fermetures.ics"],
    "open_feeds": ["feeds/permanences.ics"],
}


def book() -> FeedBook:
    return FeedBook(
        {
            str(CLOSED): parse_feed(CLOSED.read_bytes(), "fermetures.ics"),
            str(OPEN): parse_feed(OPEN.read_bytes(), "permanences.ics"),
        }
    )


def office(feeds: FeedBook | None = None) -> Calendar:
    spec = CalendarSpec.model_validate(OFFICE)
    here = Path(__file__).parent
    return Calendar("office", spec, PARIS, book() if feeds is None else feeds, here)


def at(text: str) -> datetime:
    return localize(datetime.fromisoformat(text), PARIS)


def test_relative_feed_paths_are_relative_to_the_flow_folder() -> None:
    assert office().feed_locations == [(str(OPEN), True), (str(CLOSED), False)]


def test_weekly_rrule_closes_every_wednesday_afternoon() -> None:
    cal = office()
    for day in ("2026-12-02", "2026-12-09", "2026-12-23", "2027-03-03", "2027-06-30"):
        state = cal.state_at(at(f"{day} 15:00"))
        assert not state.open, day
        assert state.source is Source.CLOSURE
        assert state.feed == "Cabinet fermetures"
        assert state.label == "Mercredi après-midi fermé"
        assert "feed Cabinet fermetures" in state.reason
    # The morning is the weekly hours'; the event ends at 19:00 local, summer time too.
    assert cal.state_at(at("2026-12-09 10:00")).source is Source.WEEKLY
    summer = cal.state_at(at("2027-06-30 18:59"))
    assert summer.source is Source.CLOSURE and summer.until == at("2027-06-30 19:00")


def test_exdate_leaves_that_wednesday_open() -> None:
    state = office().state_at(at("2026-12-16 15:00"))
    assert state.open and state.source is Source.WEEKLY and state.feed is None


def test_all_day_event_closes_the_whole_local_day() -> None:
    cal = office()
    for hour in ("00:00", "10:00", "23:59"):
        state = cal.state_at(at(f"2026-12-11 {hour}"))
        assert not state.open and state.source is Source.CLOSURE, hour
        assert state.label == "Formation DPC (cabinet fermé)"
    assert cal.state_at(at("2026-12-11 10:00")).until == at("2026-12-12 00:00")
    assert cal.state_at(at("2026-12-10 10:00")).open  # the day before: weekly hours


def test_cancelled_event_closes_nothing() -> None:
    state = office().state_at(at("2026-12-04 10:00"))
    assert state.open and state.source is Source.WEEKLY


def test_exceptional_opening_on_a_sunday() -> None:
    cal = office()
    state = cal.state_at(at("2026-12-13 10:00"))
    assert state.open and state.source is Source.OPENING
    assert state.feed == "Permanences Cal.com" and state.label == "Permanence du dimanche"
    assert state.until == at("2026-12-13 12:00")  # 11:00Z
    assert not cal.state_at(at("2026-12-13 12:00")).open
    assert not cal.state_at(at("2026-12-20 10:00")).open  # not a recurring one


def test_opening_feed_beats_closing_feed() -> None:
    data = {**OFFICE, "open_feeds": ["feeds/fermetures.ics"], "closed_feeds": []}
    spec = CalendarSpec.model_validate(data)
    cal = Calendar("office", spec, PARIS, book(), Path(__file__).parent)
    state = cal.state_at(at("2026-12-09 15:00"))
    assert state.open and state.source is Source.OPENING


def test_a_feed_not_read_yet_changes_nothing() -> None:
    cal = office(FeedBook())
    assert cal.state_at(at("2026-12-09 15:00")).source is Source.WEEKLY
    assert not cal.state_at(at("2026-12-13 10:00")).open


def test_timeline_names_the_feed_event_that_decided() -> None:
    cal = office()
    text = format_timeline(timeline(cal, at("2026-12-09 00:00"), at("2026-12-14 00:00")))
    assert (
        "Wed 2026-12-09  14:00-19:00  closed (closure: Mercredi après-midi fermé "
        "(2026-12-09 14:00 to 2026-12-09 19:00, feed Cabinet fermetures))"
    ) in text
    assert "Fri 2026-12-11  00:00-24:00  closed (closure: Formation DPC (cabinet fermé)" in text
    assert (
        "Sun 2026-12-13  09:00-12:00  open   (opening: Permanence du dimanche "
        "(2026-12-13 09:00 to 2026-12-13 12:00, feed Permanences Cal.com))"
    ) in text


def test_feed_name_falls_back_when_the_file_has_none() -> None:
    data = OPEN.read_bytes().replace(b"X-WR-CALNAME:Permanences Cal.com\r\n", b"")
    assert parse_feed(data, "permanences.ics").name == "permanences.ics"


@pytest.mark.parametrize("data", [b"", b"<html>Not found</html>", b"BEGIN:VEVENT\r\nEND:VEVENT"])
def test_not_an_icalendar_file_is_refused(data: bytes) -> None:
    with pytest.raises(FeedError, match="not an iCalendar file"):
        parse_feed(data, "x")


@pytest.mark.parametrize(
    ("feed", "message"),
    [
        ("ftp://example.org/x.ics", "unsupported feed 'ftp'"),
        ("https:///x.ics", "no host"),
        ("  ", "empty feed"),
    ],
)
def test_bad_feed_entries_are_refused(feed: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CalendarSpec.model_validate({"closed_feeds": [feed]})


def test_webcal_urls_are_read_over_https() -> None:
    spec = CalendarSpec.model_validate({"open_feeds": ["webcal://cal.example.org/a.ics"]})
    cal = Calendar("c", spec, PARIS)
    assert cal.feed_locations == [("https://cal.example.org/a.ics", True)]


ZONES = b"""BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//test//zones//EN\r
BEGIN:VEVENT\r
UID:ny@x\r
DTSTART;TZID=America/New_York:20261207T090000\r
DTEND;TZID=America/New_York:20261207T100000\r
SUMMARY:Visio New York\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:floating@x\r
DTSTART:20261208T100000\r
DTEND:20261208T110000\r
SUMMARY:Heure flottante\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:broken@x\r
DTSTART:20261209T100000\r
DURATION:PT1H\r
SUMMARY:Avec DURATION\r
END:VEVENT\r
END:VCALENDAR\r
"""


def test_time_zones_of_feed_events() -> None:
    spec = CalendarSpec.model_validate(
        {"weekly": {"mon-fri": ["08:00-19:00"]}, "closed_feeds": ["z.ics"]}
    )
    cal = Calendar("c", spec, PARIS, FeedBook({"/f/z.ics": parse_feed(ZONES, "z.ics")}), Path("/f"))
    # 09:00-10:00 in New York is 15:00-16:00 in Paris.
    assert cal.state_at(at("2026-12-07 15:30")).label == "Visio New York"
    assert cal.state_at(at("2026-12-07 09:30")).source is Source.WEEKLY
    assert cal.state_at(at("2026-12-07 15:00")).until == at("2026-12-07 16:00")
    # A floating time is the flow's wall-clock time; DURATION gives the end.
    assert cal.state_at(at("2026-12-08 10:30")).label == "Heure flottante"
    assert cal.state_at(at("2026-12-09 10:59")).label == "Avec DURATION"
    assert cal.state_at(at("2026-12-09 11:00")).source is Source.WEEKLY


def test_a_feed_whose_rules_cannot_be_expanded_still_answers() -> None:
    bad = ZONES.replace(b"DURATION:PT1H", b"RRULE:FREQ=NEVERLY")
    feed = parse_feed(bad, "z.ics")
    spec = CalendarSpec.model_validate(
        {"weekly": {"mon-fri": ["08:00-19:00"]}, "closed_feeds": ["z.ics"]}
    )
    cal = Calendar("c", spec, PARIS, FeedBook({"/f/z.ics": feed}), Path("/f"))
    state = cal.state_at(at("2026-12-08 10:30"))  # a call's schedule step gets an answer
    assert state.open and state.source is Source.WEEKLY
    assert feed.errors and feed.errors[0].startswith("2026: ")
