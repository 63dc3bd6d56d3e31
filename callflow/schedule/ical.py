"""iCal feeds of closures and exceptional openings (``closed_feeds`` / ``open_feeds``).

Pure: this module turns the bytes of an ``.ics`` file (as exported by Google Agenda,
Cal.com or a scheduling platform) into dated events; fetching and caching the bytes is
the daemon's business (:mod:`callflow.feeds`).  Recurring events (RRULE, RDATE, EXDATE,
modified occurrences) are expanded by ``recurring-ical-events``, lazily, one year at a
time and once for every timezone, so a feed with an endless weekly rule costs nothing
until a date is asked (the daemon asks in a worker thread: ``ParsedFeed.prewarm``).

Times: a timed event with a TZID or in UTC is that instant; an all-day event (a DATE) and
a floating time (no zone) are wall-clock time of the flow's timezone, like every time
written in a flow file.  A cancelled event (``STATUS:CANCELLED``) closes or opens nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import icalendar
import recurring_ical_events

from callflow.schedule.localtime import wall_to_utc

__all__ = [
    "FeedBook",
    "FeedError",
    "FeedEvent",
    "ParsedFeed",
    "feed_location",
    "is_url",
    "parse_feed",
]


class FeedError(ValueError):
    """The bytes are not an iCalendar file we can read."""


@dataclass(frozen=True)
class FeedEvent:
    """One occurrence of a feed's event: ``[start, end)`` in UTC."""

    start: datetime
    end: datetime
    summary: str
    feed: str  # the feed's name (X-WR-CALNAME, else the file's or the host's name)


@dataclass(frozen=True)
class _Raw:
    """One expanded occurrence as the feed writes it, before any timezone is applied."""

    start: date | datetime
    end: date | datetime | None  # DTEND
    duration: timedelta | None  # DURATION, when there is no DTEND
    summary: str

    def fixed(self) -> bool:
        """Its instants are the same in every zone (no DATE, no floating time)."""
        return _aware(self.start) and (self.end is None or _aware(self.end))

    def event(self, tz: tzinfo, feed: str) -> FeedEvent | None:
        lo = _instant(self.start, tz)
        if self.end is not None:
            hi = _instant(self.end, tz)
        elif self.duration is not None:
            hi = lo + self.duration
        elif not isinstance(self.start, datetime):
            hi = _instant(self.start + timedelta(days=1), tz)  # RFC 5545: a DATE lasts a day
        else:
            return None  # an instant, no length: it closes or opens nothing
        return FeedEvent(lo, hi, self.summary, feed) if hi > lo else None


@dataclass(frozen=True)
class _Expansion:
    """One year's occurrences, expanded once for every zone: those at fixed instants
    already as events, the all-day and floating ones still as written."""

    fixed: tuple[FeedEvent, ...]
    wall: tuple[_Raw, ...]


@dataclass
class ParsedFeed:
    """A feed read from its bytes; its occurrences are expanded once per year (the costly
    part, by ``recurring-ical-events``), then placed in each timezone asked (cheap: only
    the all-day and floating ones depend on it) and kept per (year, timezone).

    Not thread-safe: the daemon builds and pre-warms one in a worker thread
    (``prewarm``), and only then hands it to the event loop, which alone touches it after.
    """

    name: str
    calendar: icalendar.Calendar = field(repr=False)
    errors: list[str] = field(default_factory=list)  # years that could not be expanded
    _expanded: dict[int, _Expansion] = field(default_factory=dict, repr=False)
    _years: dict[tuple[int, str], tuple[FeedEvent, ...]] = field(default_factory=dict, repr=False)

    def events(self, start: datetime, end: datetime, tz: tzinfo) -> list[FeedEvent]:
        """Occurrences overlapping UTC ``[start, end)``, all-day ones in local ``tz``."""
        found: set[FeedEvent] = set()
        for year in _local_years(start, end, tz):
            found.update(e for e in self._year(year, tz) if e.start < end and e.end > start)
        return sorted(found, key=lambda e: (e.start, e.end, e.summary))

    def prewarm(self, start: datetime, end: datetime, zones: Iterable[tzinfo]) -> None:
        """Expand the years of UTC ``[start, end)`` and place them in each of ``zones``
        (the calendars' zones), so that no lookup in that window expands anything; a rule
        the library cannot expand is then in ``errors``."""
        for year in _local_years(start, end, UTC):
            self._expansion(year)
        for tz in zones:
            for year in _local_years(start, end, tz):
                self._year(year, tz)

    def _year(self, year: int, tz: tzinfo) -> tuple[FeedEvent, ...]:
        key = (year, str(tz))
        cached = self._years.get(key)
        if cached is None:
            expansion = self._expansion(year)
            placed = (r.event(tz, self.name) for r in expansion.wall)
            cached = expansion.fixed + tuple(e for e in placed if e is not None)
            self._years[key] = cached
        return cached

    def _expansion(self, year: int) -> _Expansion:
        found = self._expanded.get(year)
        if found is None:
            found = self._expanded[year] = self._expand(year)
        return found

    def _expand(self, year: int) -> _Expansion:
        """The costly part: the library expands the year's recurring events."""
        lo, hi = date(year, 1, 1), date(year + 1, 1, 1)
        # A day of margin either side: "between" works in each event's own zone, and a
        # local year in any zone lies within the UTC year and a day.
        try:
            query = recurring_ical_events.of(self.calendar)
            components = query.between(lo - timedelta(days=1), hi + timedelta(days=1))
            raws = list(_raw_occurrences(components))
        except Exception as exc:  # the library's errors have no common base
            # A call's schedule step must get an answer: a feed whose rules cannot be
            # expanded adds nothing to that year, and says so to whoever looks.
            self.errors.append(f"{year}: {exc}")
            return _Expansion((), ())
        fixed = (r.event(UTC, self.name) for r in raws if r.fixed())
        return _Expansion(
            tuple(e for e in fixed if e is not None), tuple(r for r in raws if not r.fixed())
        )


def _local_years(start: datetime, end: datetime, tz: tzinfo) -> range:
    return range(start.astimezone(tz).year, end.astimezone(tz).year + 1)


def parse_feed(data: bytes, fallback_name: str) -> ParsedFeed:
    """Read an ``.ics`` file; ``fallback_name`` names it when it has no X-WR-CALNAME."""
    try:
        cal = icalendar.Calendar.from_ical(data)
    except (ValueError, KeyError, IndexError) as exc:
        raise FeedError(f"not an iCalendar file: {exc}") from None
    if not isinstance(cal, icalendar.Calendar) or cal.name != "VCALENDAR":
        raise FeedError("not an iCalendar file: no VCALENDAR")
    name = str(cal.get("X-WR-CALNAME") or "").strip() or fallback_name
    return ParsedFeed(name, cal)


def _raw_occurrences(components: Iterable[Any]) -> Iterator[_Raw]:
    for c in components:
        if getattr(c, "name", None) != "VEVENT":
            continue
        if str(c.get("STATUS", "")).upper() == "CANCELLED":
            continue
        start = c.get("DTSTART")
        if start is None:
            continue
        end = c.get("DTEND")
        duration = c.get("DURATION")
        summary = str(c.get("SUMMARY") or "").strip() or "(no title)"
        yield _Raw(
            start.dt,
            end.dt if end is not None else None,
            duration.dt if end is None and duration is not None else None,
            summary,
        )


def _aware(value: date | datetime) -> bool:
    return isinstance(value, datetime) and value.tzinfo is not None


def _instant(value: date | datetime, tz: tzinfo) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:  # floating time: wall-clock time of the flow
            return wall_to_utc(value, tz)
        return value.astimezone(UTC)
    return wall_to_utc(datetime.combine(value, datetime.min.time()), tz)


def feed_location(source: str, base: Path) -> str:
    """The place a feed is read from: an ``https://`` (``webcal://`` is https) or ``http://``
    URL as written, else a file path, relative ones to ``base`` (the flow file's folder)."""
    text = source.strip()
    scheme = urlsplit(text).scheme.lower()
    if scheme == "webcal":
        return "https" + text[len("webcal") :]
    if scheme in ("http", "https"):
        return text
    if scheme == "file":
        return urlsplit(text).path
    path = Path(text).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def is_url(location: str) -> bool:
    return urlsplit(location).scheme in ("http", "https")


class FeedBook:
    """The feeds read so far, by location: the daemon's fetcher fills it, the calendars
    read it on every evaluation (so a refresh needs no reload of the flows).  A location
    with nothing read yet contributes no event."""

    def __init__(self, feeds: Mapping[str, ParsedFeed] | None = None) -> None:
        self._feeds: dict[str, ParsedFeed] = dict(feeds or {})
        self._zones: dict[str, dict[str, tzinfo]] = {}

    def want(self, location: str, tz: tzinfo) -> None:
        """A calendar in ``tz`` reads this feed: a new copy is pre-warmed for that zone."""
        self._zones.setdefault(location, {})[str(tz)] = tz

    def zones(self, location: str) -> tuple[tzinfo, ...]:
        """The zones the calendars read this feed in (a copy, for a worker thread)."""
        return tuple(self._zones.get(location, {}).values())

    def get(self, location: str) -> ParsedFeed | None:
        return self._feeds.get(location)

    def put(self, location: str, feed: ParsedFeed) -> None:
        self._feeds[location] = feed

    def __contains__(self, location: object) -> bool:
        return location in self._feeds
