"""iCal feeds of closures and exceptional openings (``closed_feeds`` / ``open_feeds``).

Pure: this module turns the bytes of an ``.ics`` file (as exported by Google Agenda,
Cal.com or a scheduling platform) into dated events; fetching and caching the bytes is
the daemon's business (:mod:`callflow.feeds`).  Recurring events (RRULE, RDATE, EXDATE,
modified occurrences) are expanded by ``recurring-ical-events``, lazily, one local year
at a time, so a feed with an endless weekly rule costs nothing until a date is asked.

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


@dataclass
class ParsedFeed:
    """A feed read from its bytes; its occurrences are expanded per (year, timezone)."""

    name: str
    calendar: icalendar.Calendar = field(repr=False)
    errors: list[str] = field(default_factory=list)  # years that could not be expanded
    _years: dict[tuple[int, str], tuple[FeedEvent, ...]] = field(default_factory=dict, repr=False)

    def events(self, start: datetime, end: datetime, tz: tzinfo) -> list[FeedEvent]:
        """Occurrences overlapping UTC ``[start, end)``, all-day ones in local ``tz``."""
        found: set[FeedEvent] = set()
        first, last = start.astimezone(tz).year, end.astimezone(tz).year
        for year in range(first, last + 1):
            found.update(e for e in self._year(year, tz) if e.start < end and e.end > start)
        return sorted(found, key=lambda e: (e.start, e.end, e.summary))

    def _year(self, year: int, tz: tzinfo) -> tuple[FeedEvent, ...]:
        key = (year, str(tz))
        cached = self._years.get(key)
        if cached is None:
            lo, hi = date(year, 1, 1), date(year + 1, 1, 1)
            # A day of margin either side: "between" works in each event's own zone.
            try:
                query = recurring_ical_events.of(self.calendar)
                components = query.between(lo - timedelta(days=1), hi + timedelta(days=1))
                cached = tuple(_occurrences(components, self.name, tz))
            except Exception as exc:  # the library's errors have no common base
                # A call's schedule step must get an answer: a feed whose rules cannot be
                # expanded adds nothing to that year, and says so to whoever looks.
                self.errors.append(f"{year}: {exc}")
                cached = ()
            self._years[key] = cached
        return cached


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


def _occurrences(components: Iterable[Any], feed: str, tz: tzinfo) -> Iterator[FeedEvent]:
    for c in components:
        if getattr(c, "name", None) != "VEVENT":
            continue
        if str(c.get("STATUS", "")).upper() == "CANCELLED":
            continue
        start = c.get("DTSTART")
        if start is None:
            continue
        lo = _instant(start.dt, tz)
        end = c.get("DTEND")
        if end is not None:
            hi = _instant(end.dt, tz)
        elif c.get("DURATION") is not None:
            hi = lo + c.get("DURATION").dt
        elif not isinstance(start.dt, datetime):
            hi = _instant(start.dt + timedelta(days=1), tz)  # RFC 5545: a DATE lasts a day
        else:
            continue  # an instant, no length: it closes or opens nothing
        if hi <= lo:
            continue
        summary = str(c.get("SUMMARY") or "").strip() or "(no title)"
        yield FeedEvent(lo, hi, summary, feed)


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

    def get(self, location: str) -> ParsedFeed | None:
        return self._feeds.get(location)

    def put(self, location: str, feed: ParsedFeed) -> None:
        self._feeds[location] = feed

    def __contains__(self, location: object) -> bool:
        return location in self._feeds
