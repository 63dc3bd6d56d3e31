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
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from .files import write_private
from .schedule.ical import FeedBook, FeedError, is_url, parse_feed
from .tasks import BackgroundPart, Tasks

log = logging.getLogger("callflow.feeds")

#: Bigger than any practice's calendar: a feed answering more is refused, not read.
MAX_FEED_BYTES = 20 * 1024 * 1024


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
        self.load_cache()

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

    def load_cache(self) -> None:
        """Put the cached copy of each feed not read yet in the book."""
        for location in self.locations():
            if location not in self.book:
                self._load_cached(location)

    def _load_cached(self, location: str) -> None:
        key = feed_key(location)
        try:
            data = self.cache_path(location).read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("calendar feed %s: cannot read its cache: %s", key, exc)
            return
        try:
            self.book.put(location, parse_feed(data, _fallback_name(location)))
        except FeedError as exc:
            log.warning("calendar feed %s: its cache is unreadable: %s", key, exc)
            return
        self.status(location).cached = True

    async def refresh(self) -> None:
        """Read every feed once; one failing feed does not stop the others."""
        for location in list(self.locations()):
            await self.refresh_one(location)

    async def refresh_one(self, location: str) -> bool:
        """Read one feed; True if the book now has its fresh copy."""
        status = self.status(location)
        try:
            data = await self._read(location)
            feed = parse_feed(data, _fallback_name(location))
        except (OSError, aiohttp.ClientError, TimeoutError, FeedError) as exc:
            status.failures += 1
            status.up = False
            if location not in self.book:
                self._load_cached(location)
            kept = "keeping the last copy" if location in self.book else "no copy to keep"
            log.warning(
                "calendar feed %s: read failed (%s): %s",
                status.feed,
                _why(exc),
                kept,
            )
            return False
        self.book.put(location, feed)
        # Expand this year and the next now, so that a rule the library cannot expand is
        # said here (the calendars then do without that feed's events for those years).
        now = datetime.fromtimestamp(self.clock(), UTC)
        feed.events(now, now + timedelta(days=366), UTC)
        if feed.errors:
            log.warning("calendar feed %s: events not expanded: %s", status.feed, feed.errors[0])
        if status.up is False:
            log.info("calendar feed %s: read again after %d failures", status.feed, status.failures)
        status.up = True
        status.cached = False
        status.last_success = self.clock()
        if not self.write_cache:
            return True
        try:
            self._write_cache(location, data)
        except OSError as exc:
            log.warning("calendar feed %s: cannot write its cache: %s", status.feed, exc)
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
                raise FeedError(f"larger than {MAX_FEED_BYTES} bytes")
            data = await resp.content.read(MAX_FEED_BYTES + 1)
        if len(data) > MAX_FEED_BYTES:
            raise FeedError(f"larger than {MAX_FEED_BYTES} bytes")
        return data

    # -- cache --------------------------------------------------------------------------------

    def cache_path(self, location: str) -> Path:
        name = hashlib.sha256(location.encode()).hexdigest()[:32]
        return self.cache_dir / f"{name}.ics"

    def _write_cache(self, location: str, data: bytes) -> None:
        """Atomically, owner-only (0600 in a 0700 folder), fsync'd."""
        self.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(self.cache_path(location), data)


def _read_file(path: Path) -> bytes:
    with path.open("rb") as f:
        data = f.read(MAX_FEED_BYTES + 1)
    if len(data) > MAX_FEED_BYTES:
        raise FeedError(f"larger than {MAX_FEED_BYTES} bytes")
    return data


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
