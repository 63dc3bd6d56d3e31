"""Whether a calendar is open at a given instant, and why.

Pure: nothing here reads the clock, every answer is computed from the datetime given
(the daemon passes ``now``; tests and ``callflow calendar`` pass any instant).

Precedence, highest first; the first layer that applies decides:

1. override        -- set at runtime (e.g. "closed until tomorrow 08:00"), ignored once
                      its ``until`` has passed, so it reverts by itself;
2. opening         -- ``open:`` exceptional openings, and the events of ``open_feeds``
                      (they beat holidays and closures);
3. closure         -- ``closed:`` absences and vacations, and the events of
                      ``closed_feeds`` (iCal feeds, :mod:`callflow.schedule.ical`);
4. holiday         -- public holidays of ``holidays:``, closed 00:00-24:00 local time;
                      a weekly range crossing midnight is closed only on the holiday's
                      side of midnight;
5. weekly          -- ``weekly:`` opening hours, closed outside them.

All calendar times are wall-clock time in the calendar's timezone; DST gaps and folds
follow the rules of :mod:`callflow.schedule.localtime` (a wall time in the spring gap is
the first instant after it, an ambiguous one is its first occurrence).  A weekly range
that crosses midnight ("sat 20:00-08:00") belongs to its start day: Saturday evening and
the early hours of Sunday.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

import holidays

from callflow.schedule.ical import FeedBook, feed_location
from callflow.schedule.localtime import day_start, to_utc, wall_to_utc
from callflow.schedule.spec import (
    DAY_NAMES,
    CalendarSpec,
    PeriodSpec,
    TimeRange,
    parse_days,
    parse_time_range,
    period_bounds,
)

# `until` is searched this far ahead: far enough to cross a long weekend or a holiday
# week, short enough to stay cheap when evaluated on every call.
HORIZON = timedelta(days=14)
# The smallest step of a datetime: [t, t + _INSTANT) asks for what covers instant t.
_INSTANT = timedelta(microseconds=1)


class Source(StrEnum):
    OVERRIDE = "override"
    OPENING = "opening"
    CLOSURE = "closure"
    HOLIDAY = "holiday"
    WEEKLY = "weekly"


@dataclass(frozen=True)
class Override:
    """A runtime decision that beats the calendar until ``until`` (an aware datetime)."""

    open: bool
    until: datetime
    label: str | None = None
    set_by: str | None = None

    def __post_init__(self) -> None:
        if self.until.tzinfo is None:
            raise ValueError("Override.until must be timezone-aware")


@dataclass(frozen=True)
class CalendarState:
    """The calendar's answer at one instant.

    ``until`` is the next instant at which the answer changes (in the calendar's tz): the
    end of the current override, opening or closure, or else the first change within
    ``HORIZON``; None if nothing changes in that window.  Compare it
    with ``<``/``>=`` or in UTC: per PEP 495 an aware datetime inside a DST fold is never
    ``==`` to one of another tzinfo.
    """

    open: bool
    source: Source
    reason: str
    label: str | None
    until: datetime | None = None
    feed: str | None = None  # the feed whose event decided (its name), if one did


@dataclass(frozen=True)
class Interval:
    """``[start, end)`` during which the calendar's state stays the same."""

    start: datetime
    end: datetime
    state: CalendarState


@dataclass(frozen=True)
class _Period:
    start: datetime  # UTC
    end: datetime  # UTC
    label: str | None
    text: str
    feed: str | None = None


class Calendar:
    def __init__(
        self,
        name: str,
        spec: CalendarSpec,
        tz: ZoneInfo,
        feeds: FeedBook | None = None,
        base: Path = Path("."),
        *,
        language: str = "en",
    ) -> None:
        """``feeds`` holds the feeds read so far (the daemon refreshes it); ``base`` is the
        folder that relative feed paths are relative to (the flow file's); ``language``
        names the holidays ("fr" for the practice, "en" for logs)."""
        self.name = name
        self.language = language  # of holiday names: "fr" for the practice, "en" for logs
        self.spec = spec
        self.tz = tz
        self.feeds = feeds if feeds is not None else FeedBook()
        #: (location, is an opening feed) for each feed of the spec, in order.
        self.feed_locations: list[tuple[str, bool]] = [
            *((feed_location(f, base), True) for f in spec.open_feeds),
            *((feed_location(f, base), False) for f in spec.closed_feeds),
        ]
        for location, _ in self.feed_locations:
            # So that the daemon pre-warms each new copy of the feed in this zone, off the
            # event loop: a call's schedule step then never expands a year itself.
            self.feeds.want(location, tz)
        self._weekly: dict[int, list[TimeRange]] = {d: [] for d in range(7)}
        for key, ranges in spec.weekly.items():
            for day in parse_days(key):
                self._weekly[day].extend(parse_time_range(r) for r in ranges)
        for day_ranges in self._weekly.values():
            day_ranges.sort()
        self._openings = [self._period(p) for p in spec.open]
        self._closures = [self._period(p) for p in spec.closed]
        self._holidays: dict[int, holidays.HolidayBase] = {}

    def _period(self, spec: PeriodSpec) -> _Period:
        lo, hi = period_bounds(spec.from_, spec.to)
        if isinstance(spec.to, datetime):
            text = f"{lo:%Y-%m-%d %H:%M} to {hi:%Y-%m-%d %H:%M}"
        else:
            text = f"{spec.from_:%Y-%m-%d} to {spec.to:%Y-%m-%d}"
        return _Period(wall_to_utc(lo, self.tz), wall_to_utc(hi, self.tz), spec.label, text)

    def __repr__(self) -> str:
        return f"Calendar({self.name!r}, tz={self.tz.key!r})"

    def _feed_periods(self, opening: bool, lo: datetime, hi: datetime) -> list[_Period]:
        """The feeds' events of one kind overlapping UTC ``[lo, hi)``."""
        found: list[_Period] = []
        for location, is_open in self.feed_locations:
            feed = self.feeds.get(location) if is_open is opening else None
            if feed is None:
                continue
            for e in feed.events(lo, hi, self.tz):
                text = f"{e.start.astimezone(self.tz):%Y-%m-%d %H:%M} to "
                text += f"{e.end.astimezone(self.tz):%Y-%m-%d %H:%M}"
                found.append(_Period(e.start, e.end, e.summary, text, e.feed))
        return found

    def _layers(self, lo: datetime, hi: datetime) -> list[tuple[Source, list[_Period]]]:
        """Openings, then closures, that may overlap UTC ``[lo, hi)``: the flow's own
        (all of them: few) and the feeds' (only those overlapping)."""
        return [
            (Source.OPENING, [*self._openings, *self._feed_periods(True, lo, hi)]),
            (Source.CLOSURE, [*self._closures, *self._feed_periods(False, lo, hi)]),
        ]

    def _period_bounds(self, lo: datetime, hi: datetime) -> set[datetime]:
        return {b for _, ps in self._layers(lo, hi) for p in ps for b in (p.start, p.end)}

    # -- holidays ----------------------------------------------------------------------

    def holiday_name(self, day: date) -> str | None:
        """Name of the public holiday on local ``day`` (names joined by "; "), or None."""
        if self.spec.holidays is None:
            return None
        table = self._holidays.get(day.year)
        if table is None:
            # One table per year, built on first use: the holidays package computes
            # Easter-based dates per year, and a daemon running for years needs new ones.
            spec = self.spec.holidays
            table = holidays.country_holidays(
                spec.country,
                subdiv=spec.subdivision,
                years=day.year,
                expand=False,
                language=_language(spec.country, self.language),
            )
            self._holidays[day.year] = table
        name: str | None = table.get(day)
        return name

    # -- state -------------------------------------------------------------------------

    def state_at(self, at: datetime, override: Override | None = None) -> CalendarState:
        """State at ``at`` (aware, or naive local time in the calendar's tz)."""
        t = to_utc(at, self.tz)
        state, period_end = self._eval(t, override)
        return _with_until(state, self._next_change(t, state, period_end, override), self.tz)

    def _eval(
        self, t: datetime, override: Override | None
    ) -> tuple[CalendarState, datetime | None]:
        """State at UTC ``t`` without ``until``, and the end of the period that decided it."""
        if override is not None and t < override.until:
            return _override_state(override, self.tz), override.until
        for src, periods in self._layers(t, t + _INSTANT):
            for p in periods:
                if p.start <= t < p.end:
                    reason = f"{src}: {p.label or p.text}"
                    if p.feed is not None:
                        reason += f" ({p.text}, feed {p.feed})"
                    state = CalendarState(src is Source.OPENING, src, reason, p.label, feed=p.feed)
                    return state, p.end
        today = t.astimezone(self.tz).date()
        # Neighbouring days too: a weekly range of yesterday may run past midnight, and
        # this keeps the answer right in zones whose DST change happens at midnight.
        days = (today - timedelta(days=1), today, today + timedelta(days=1))
        for day in days:
            name = self.holiday_name(day)
            if name and day_start(day, self.tz) <= t < day_start(_next(day), self.tz):
                return CalendarState(False, Source.HOLIDAY, f"holiday: {name}", name), None
        for day in days:
            for rng, start, end in self._ranges(day):
                if start <= t < end:
                    reason = f"weekly: {DAY_NAMES[day.weekday()]} {rng}"
                    return CalendarState(True, Source.WEEKLY, reason, None), None
        return CalendarState(False, Source.WEEKLY, "weekly: outside opening hours", None), None

    def _ranges(self, day: date) -> Iterator[tuple[TimeRange, datetime, datetime]]:
        """Weekly ranges that start on local ``day``, with their UTC bounds."""
        midnight = datetime.combine(day, datetime.min.time())
        for rng in self._weekly[day.weekday()]:
            start = midnight + timedelta(minutes=rng.start)
            end = midnight + timedelta(minutes=rng.end)
            if rng.crosses_midnight:
                end += timedelta(days=1)
            yield rng, wall_to_utc(start, self.tz), wall_to_utc(end, self.tz)

    def _boundaries(
        self, after: datetime, upto: datetime, override: Override | None
    ) -> list[datetime]:
        """Every UTC instant in ``(after, upto]`` at which some layer may change.

        The state is constant between two consecutive boundaries, so evaluating it at
        each boundary is enough to find every change.
        """
        found: set[datetime] = set()
        if override is not None:
            found.add(override.until.astimezone(UTC))
        found.update(self._period_bounds(after, upto + _INSTANT))
        day = after.astimezone(self.tz).date() - timedelta(days=1)
        last = upto.astimezone(self.tz).date() + timedelta(days=1)
        while day <= last:
            found.add(day_start(day, self.tz))  # holidays change at midnight
            for _, start, end in self._ranges(day):
                found.update((start, end))
            day = _next(day)
        return sorted(b for b in found if after < b <= upto)

    def _next_change(
        self,
        t: datetime,
        state: CalendarState,
        period_end: datetime | None,
        override: Override | None,
    ) -> datetime | None:
        """First instant after UTC ``t`` where the state differs from ``state``."""
        if state.source is Source.OVERRIDE:
            return period_end  # then the calendar itself answers, a different source
        after, upto = t, t + HORIZON
        if period_end is not None:
            # Inside an opening or closure only another period can change the state (the
            # override is over), so skip the weekly and holiday boundaries: a closure of
            # several weeks still gets its exact end.
            bounds = self._period_bounds(t, period_end + _INSTANT)
            for boundary in sorted(b for b in bounds if t < b <= period_end):
                if self._eval(boundary, override)[0] != state:
                    return boundary
            after, upto = period_end, period_end + HORIZON  # an identical period follows
        for boundary in self._boundaries(after, upto, override):
            if self._eval(boundary, override)[0] != state:
                return boundary
        return None


def timeline(
    cal: Calendar, start: datetime, end: datetime, override: Override | None = None
) -> list[Interval]:
    """Consecutive ``[start, end)`` intervals covering the window, each with one state.

    Bounds may be aware or naive (local); the intervals' datetimes are in the calendar's
    tz.  Each state's ``until`` is its interval's end, except for the last interval where
    it is looked up past ``end`` as ``state_at`` would.
    """
    a, b = to_utc(start, cal.tz), to_utc(end, cal.tz)
    if b <= a:
        return []
    runs: list[tuple[datetime, CalendarState]] = []
    for point in [a, *cal._boundaries(a, b, override)]:
        if point == b:
            break
        state = cal._eval(point, override)[0]
        if not runs or runs[-1][1] != state:
            runs.append((point, state))
    intervals: list[Interval] = []
    for i, (run_start, state) in enumerate(runs):
        until: datetime | None
        if i + 1 < len(runs):
            run_end = until = runs[i + 1][0]
        else:
            run_end = b
            until = cal.state_at(run_start, override).until
        intervals.append(
            Interval(
                run_start.astimezone(cal.tz),
                run_end.astimezone(cal.tz),
                _with_until(state, until, cal.tz),
            )
        )
    return intervals


class OverrideStore:
    """Runtime overrides per calendar key, in memory; expired ones are dropped on read."""

    def __init__(self) -> None:
        self._items: dict[str, Override] = {}

    def set(self, calendar_key: str, override: Override) -> None:
        self._items[calendar_key] = override

    def clear(self, key: str) -> None:
        self._items.pop(key, None)

    async def put(self, calendar_key: str, flow: str, override: Override) -> None:
        """Set an override as the admin API does: here, in memory; a shared store (several
        nodes, ``callflow.overrides``) writes it where every node sees it, then here."""
        self.set(calendar_key, override)

    async def remove(self, key: str) -> None:
        """Cancel an override as the admin API does (see ``put``)."""
        self.clear(key)

    def get(self, key: str, at: datetime) -> Override | None:
        """The override of ``key`` still in force at aware ``at``, else None."""
        if at.tzinfo is None:
            raise ValueError("OverrideStore.get needs a timezone-aware datetime")
        override = self._items.get(key)
        if override is not None and at >= override.until:
            del self._items[key]
            return None
        return override

    def active(self, at: datetime) -> dict[str, Override]:
        """All overrides still in force at aware ``at`` (dropping expired ones)."""
        return {k: o for k in list(self._items) if (o := self.get(k, at)) is not None}


def _override_state(override: Override, tz: ZoneInfo) -> CalendarState:
    word = "open" if override.open else "closed"
    reason = f"override: {word} until {override.until.astimezone(tz):%Y-%m-%d %H:%M}"
    notes = [n for n in (override.label, override.set_by and f"set by {override.set_by}") if n]
    if notes:
        reason += f" ({', '.join(notes)})"
    return CalendarState(override.open, Source.OVERRIDE, reason, override.label)


def _with_until(state: CalendarState, until: datetime | None, tz: ZoneInfo) -> CalendarState:
    local = until.astimezone(tz) if until is not None else None
    return replace(state, until=local)


def _next(day: date) -> date:
    return day + timedelta(days=1)


@cache
def _language(country: str, language: str = "en") -> str | None:
    """Holiday names in ``language`` ("fr", "en") when the country has them, else in the
    country's own; never from the daemon's LANG (the holidays package reads it by default)."""
    entity = holidays.country_holidays(country, years=())
    supported: tuple[str, ...] = tuple(entity.supported_languages)
    for code in (language, "en_US" if language == "en" else language):
        if code in supported:
            return code
    default: str | None = entity.default_language
    return default
