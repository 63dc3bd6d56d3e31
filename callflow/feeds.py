"""Fetching the calendars' iCal feeds, with a disk cache: the adapter beside the pure
:mod:`callflow.schedule.ical`.

``FeedFetcher`` is a part of the daemon (an async context manager): on entering it puts the
cached copy of every feed in the ``FeedBook`` (so the calendars know the closures at once,
even with the network down), then reads every feed and again every ``interval`` seconds
(and at once after a reload of the flows, ``wake()``).  A URL is downloaded with aiohttp, a
file is read.  A feed that answers with a readable iCalendar file replaces the last copy,
in memory and on disk (``cache_dir``, owner-only mode: a private Google Agenda URL's
events are the practice's business); a feed that is down, or answers something else,
keeps the last copy, with a warning in the log and in the metrics (``FeedStatus``).

A feed's URL may hold a secret (Google's private addresses do): logs and metric labels
name a feed by ``feed_key`` (host or file name and a hash), never by its URL.

Parsing a feed and expanding its recurring events (seconds for a big agenda) happen in a
short-lived worker thread (``asyncio.to_thread``), never on the event loop: the new copy,
already expanded for this year and the next in every zone its calendars use, replaces the
old one in the book only once complete, so a call never waits for a feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from .files import write_private
from .schedule.ical import FeedBook, FeedError, ParsedFeed, is_url, parse_feed
from .tasks import BackgroundPart, Tasks

log = logging.getLogger("callflow.feeds")

#: Bigger than a practice's agenda (a main agenda of 3,000 events is ~0.5 MiB): a feed
#: answering more is refused, not read, and its last copy kept.  Parsing and expanding
#: cost seconds of a worker's CPU per MiB: this bounds what a feed costs every refresh.
MAX_FEED_BYTES = 5 * 1024 * 1024
#: Expanded ahead on every read: the calendars' lookups (two weeks ahead) stay inside.
PREWARM = timedelta(days=366)


def feed_key(location: str) -> str:
    """A name for logs and metric labels: host (or file name) and a short hash."""
    digest = hashlib.sha256(location.encode()).hexdigest()[:8]
    if is_url(location):
        return f"{urlsplit(location).hostname or 'feed'}#{digest}"
    return f"{Path(location).name}#{digest}"


@dataclass
class FeedStatus:
    """How one feed is doing, for the metrics (``callflow.metrics.parts.FeedReading``)."""

    feed: str  # feed_key
    last_success: float | None = None  # Unix time of the last good read
    failures: int = 0  # failed reads since the daemon started
    up: bool | None = None  # did the last read succeed (None: not tried yet)
    cached: bool = False  # the calendars use a copy from the disk cache


class FeedFetcher(BackgroundPart):
    """Keeps the ``FeedBook`` filled with the feeds that ``locations()`` names."""

    def __init__(
        self,
        book: FeedBook,
        locations: Callable[[], Iterable[str]],
        cache_dir: Path,
        *,
        interval: float = 900.0,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
        write_cache: bool = True,
    ) -> None:
        self.book = book
        self.locations = locations
        self.cache_dir = cache_dir
        self.interval = interval
        self.timeout = timeout
        self.clock = clock
        self.write_cache = write_cache  # False for the command line: the cache is the daemon's
        self._status: dict[str, FeedStatus] = {}
        self._wake = asyncio.Event()
        self._tasks = Tasks("calendar feeds", log)
        self._session: aiohttp.ClientSession | None = None

    def statuses(self) -> list[FeedStatus]:
        """The feeds' states now (the metrics' probe)."""
        return [self._status[loc] for loc in self.locations() if loc in self._status]

    def status(self, location: str) -> FeedStatus:
        found = self._status.get(location)
        if found is None:
            found = self._status[location] = FeedStatus(feed_key(location))
        return found

    def wake(self) -> None:
        """Read every feed now (the flows were reloaded: there may be new ones)."""
        self._wake.set()

    # -- lifetime -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.load_cache()

    async def stop(self) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session (the refresh task, if any, is the part's to stop)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def run(self) -> None:
        while True:
            await self.refresh()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    def _new_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": "callflow (calendar feeds)", "Accept": "text/calendar"},
        )

    # -- reading ----------------------------------------------------------------------------

    async def load_cache(self) -> None:
        """Put the cached copy of each feed not read yet in the book."""
        for location in list(self.locations()):
            if location not in self.book:
                await self._load_cached(location)

    async def _load_cached(self, location: str) -> None:
        key = feed_key(location)
        try:
            data = await asyncio.to_thread(_read_file, self.cache_path(location))
        except FileNotFoundError:
            return
        except (OSError, FeedError) as exc:
            log.warning("calendar feed %s: cannot read its cache: %s", key, _why(exc))
            return
        try:
            feed = await self._prepare(location, data)
        except FeedError as exc:
            log.warning("calendar feed %s: its cache is unreadable: %s", key, exc)
            return
        if location in self.book:  # read meanwhile: that copy is newer
            return
        self.book.put(location, feed)
        self.status(location).cached = True

    async def _prepare(self, location: str, data: bytes) -> ParsedFeed:
        """Parse and pre-warm a feed in a worker thread; the copy returned is the loop's."""
        now = datetime.fromtimestamp(self.clock(), UTC)
        zones = self.book.zones(location)  # read here, on the loop, not by the worker
        return await asyncio.to_thread(_prepared, data, _fallback_name(location), now, zones)

    async def refresh(self) -> None:
        """Read every feed once; one failing feed does not stop the others."""
        for location in list(self.locations()):
            await self.refresh_one(location)

    async def refresh_one(self, location: str) -> bool:
        """Read one feed; True if the book now has its fresh copy."""
        status = self.status(location)
        try:
            data = await self._read(location)
            feed = await self._prepare(location, data)
        except (OSError, aiohttp.ClientError, TimeoutError, FeedError) as exc:
            status.failures += 1
            status.up = False
            if location not in self.book:
                await self._load_cached(location)
            kept = "keeping the last copy" if location in self.book else "no copy to keep"
            log.warning(
                "calendar feed %s: read failed (%s): %s",
                status.feed,
                _why(exc),
                kept,
            )
            return False
        if self.write_cache:
            try:
                await asyncio.to_thread(self._write_cache, location, data)  # fsync'd
            except OSError as exc:
                log.warning("calendar feed %s: cannot write its cache: %s", status.feed, exc)
        # On the loop, in one go: the calendars get the complete copy (the worker is done
        # with it) as the status says it is up.
        self.book.put(location, feed)
        if feed.errors:
            log.warning("calendar feed %s: events not expanded: %s", status.feed, feed.errors[0])
        if status.up is False:
            log.info("calendar feed %s: read again after %d failures", status.feed, status.failures)
        status.up = True
        status.cached = False
        status.last_success = self.clock()
        return True

    async def _read(self, location: str) -> bytes:
        if not is_url(location):
            return await asyncio.to_thread(_read_file, Path(location))
        if self._session is None:  # a reload brought the first URL
            self._session = self._new_session()
        async with self._session.get(location) as resp:
            if resp.status != 200:
                raise FeedError(f"HTTP {resp.status}")
            if (resp.content_length or 0) > MAX_FEED_BYTES:
                raise FeedError(TOO_BIG)
            data = await resp.content.read(MAX_FEED_BYTES + 1)
        if len(data) > MAX_FEED_BYTES:
            raise FeedError(TOO_BIG)
        return data

    # -- cache --------------------------------------------------------------------------------

    def cache_path(self, location: str) -> Path:
        name = hashlib.sha256(location.encode()).hexdigest()[:32]
        return self.cache_dir / f"{name}.ics"

    def _write_cache(self, location: str, data: bytes) -> None:
        """Atomically, owner-only (0600 in a 0700 folder), fsync'd."""
        self.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(self.cache_path(location), data)


TOO_BIG = f"larger than {MAX_FEED_BYTES // (1024 * 1024)} MiB, the limit for a calendar feed"


def _read_file(path: Path) -> bytes:
    with path.open("rb") as f:
        data = f.read(MAX_FEED_BYTES + 1)
    if len(data) > MAX_FEED_BYTES:
        raise FeedError(TOO_BIG)
    return data


def _prepared(data: bytes, name: str, now: datetime, zones: Sequence[tzinfo]) -> ParsedFeed:
    """In a worker thread: parse, then expand this year and the next in every zone the
    calendars read the feed in (so no call expands it), and so that a rule the library
    cannot expand is said at once (the calendars do without that feed's events then)."""
    feed = parse_feed(data, name)
    feed.prewarm(now, now + PREWARM, zones)
    return feed


def _fallback_name(location: str) -> str:
    if is_url(location):
        return urlsplit(location).hostname or "feed"
    return Path(location).name


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    # No URL in the text: aiohttp's errors quote it, and it may hold a secret.
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status}"
    if isinstance(exc, aiohttp.ClientError):
        return type(exc).__name__
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc)


async def read_feeds_once(
    book: FeedBook, locations: Iterable[str], cache_dir: Path, *, timeout: float = 30.0
) -> list[FeedStatus]:
    """For the command line: read each feed once, the daemon's cached copy of a feed that
    is down (the cache is left as it is: it belongs to the daemon's user)."""
    wanted = list(locations)
    fetcher = FeedFetcher(book, lambda: wanted, cache_dir, timeout=timeout, write_cache=False)
    try:
        await fetcher.refresh()
    finally:
        await fetcher.aclose()
    return fetcher.statuses()


__all__ = ["MAX_FEED_BYTES", "FeedFetcher", "FeedStatus", "feed_key", "read_feeds_once"]
