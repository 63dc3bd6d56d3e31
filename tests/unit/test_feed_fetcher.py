"""Calendar feeds, the adapter: a real local HTTP server serves a Google Agenda export,
then goes down, then answers garbage; the calendars keep the last good copy (in memory,
and on disk across a restart), the log warns without the feed's secret URL, and the
metrics say it."""

from __future__ import annotations

import logging
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web

from callflow.feeds import MAX_FEED_BYTES, FeedFetcher, feed_key, read_feeds_once
from callflow.metrics import Metrics, Probes
from callflow.schedule import Calendar, CalendarSpec, FeedBook, Source, localize
from tests.support.polling import wait_until

PARIS = ZoneInfo("Europe/Paris")
ICS = (Path(__file__).parent / "feeds" / "fermetures.ics").read_bytes()
SECRET_PATH = "/calendar/ical/cabinet.example.org/private-5ecr3t/basic.ics"
WEDNESDAY = localize(datetime(2026, 12, 9, 15, 0), PARIS)  # a weekly closure of the feed


@dataclass
class Feed:
    """A feed server we can switch: serve the file, answer garbage, or be down."""

    body: bytes = ICS
    status: int = 200
    runner: web.AppRunner | None = None
    url: str = ""
    hits: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(body=self.body, status=self.status, content_type="text/calendar")

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_get(SECRET_PATH, self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        assert site._server is not None
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{bound}{SECRET_PATH}"

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()  # connections now refused


@pytest.fixture
async def feed() -> AsyncIterator[Feed]:
    server = Feed()
    await server.start()
    yield server
    if server.runner is not None:
        await server.runner.cleanup()


def calendar(book: FeedBook, url: str) -> Calendar:
    weekly = {"mon-fri": ["08:00-19:00"]}
    spec = CalendarSpec.model_validate({"weekly": weekly, "closed_feeds": [url]})
    return Calendar("office", spec, PARIS, book)


def fetcher(book: FeedBook, url: str, cache: Path) -> FeedFetcher:
    return FeedFetcher(book, lambda: [url], cache, interval=3600, timeout=5, clock=lambda: 1e9)


async def test_a_feed_that_goes_down_keeps_its_last_copy(
    feed: Feed, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    book = FeedBook()
    cal = calendar(book, feed.url)
    cache = tmp_path / "state" / "feeds"
    assert cal.state_at(WEDNESDAY).source is Source.WEEKLY  # nothing read yet
    caplog.set_level(logging.WARNING, "callflow.feeds")

    async with fetcher(book, feed.url, cache) as f:
        status = f.status(feed.url)
        await wait_until(lambda: status.up is not None, timeout=30)
        assert status.up and status.last_success == 1e9 and status.failures == 0
        state = cal.state_at(WEDNESDAY)
        assert state.source is Source.CLOSURE and state.feed == "Cabinet fermetures"
        # Cached on disk, readable by the daemon's user only.
        (cached,) = cache.iterdir()
        assert cached.read_bytes() == ICS
        assert stat.S_IMODE(cached.stat().st_mode) == 0o600
        assert stat.S_IMODE(cache.stat().st_mode) == 0o700

        await feed.stop()
        f.wake()
        await wait_until(lambda: status.failures == 1, timeout=30)
        assert status.up is False and status.last_success == 1e9
        assert cal.state_at(WEDNESDAY).feed == "Cabinet fermetures"  # the last copy

        metrics = Metrics(Probes(feeds=f.statuses), process=False).render().decode()
        key = feed_key(feed.url)
        assert f'callflow_calendar_feed_up{{feed="{key}"}} 0.0' in metrics
        assert f'callflow_calendar_feed_failures_total{{feed="{key}"}} 1.0' in metrics
        assert (
            f'callflow_calendar_feed_last_success_timestamp_seconds{{feed="{key}"}} 1e+09'
            in metrics
        )

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(key in w and "keeping the last copy" in w for w in warnings), warnings
    assert not any("5ecr3t" in w for w in warnings)  # the secret part of the URL
    assert "5ecr3t" not in metrics


async def test_a_restart_with_the_feed_down_uses_the_disk_cache(feed: Feed, tmp_path: Path) -> None:
    cache = tmp_path / "feeds"
    first = FeedBook()
    assert await read_feeds_once(first, [feed.url], cache) != []
    async with fetcher(first, feed.url, cache) as f:
        await wait_until(lambda: f.status(feed.url).up is True, timeout=30)
    await feed.stop()

    book = FeedBook()
    cal = calendar(book, feed.url)
    restarted = fetcher(book, feed.url, cache)
    async with restarted:
        # The copy is there at once, before any read of the feed.
        assert cal.state_at(WEDNESDAY).feed == "Cabinet fermetures"
        status = restarted.status(feed.url)
        assert status.cached
        await wait_until(lambda: status.failures == 1, timeout=30)
        assert status.up is False and status.last_success is None
        assert cal.state_at(WEDNESDAY).source is Source.CLOSURE


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"<html>Service unavailable</html>", 503), (b"<html>login</html>", 200)],
)
async def test_an_answer_that_is_not_the_feed_keeps_the_last_copy(
    feed: Feed, tmp_path: Path, body: bytes, status: int
) -> None:
    book = FeedBook()
    cal = calendar(book, feed.url)
    f = fetcher(book, feed.url, tmp_path)
    assert await f.refresh_one(feed.url)
    feed.body, feed.status = body, status
    assert not await f.refresh_one(feed.url)
    await f.aclose()
    assert feed.hits == 2
    assert f.status(feed.url).failures == 1
    assert cal.state_at(WEDNESDAY).feed == "Cabinet fermetures"
    # The garbage never replaced the copy.
    assert f.cache_path(feed.url).read_bytes() == ICS


async def test_a_file_feed_is_read_and_cached(tmp_path: Path) -> None:
    source = tmp_path / "fermetures.ics"
    source.write_bytes(ICS)
    book = FeedBook()
    cal = calendar(book, str(source))
    f = fetcher(book, str(source), tmp_path / "cache")
    assert await f.refresh_one(str(source))
    source.unlink()
    assert not await f.refresh_one(str(source))
    assert cal.state_at(WEDNESDAY).source is Source.CLOSURE
    assert feed_key(str(source)).startswith("fermetures.ics#")


async def test_a_feed_never_read_and_not_cached_adds_nothing(tmp_path: Path) -> None:
    book = FeedBook()
    url = "http://127.0.0.1:9/nothing.ics"  # discard port: refused
    cal = calendar(book, url)
    statuses = await read_feeds_once(book, [url], tmp_path / "cache", timeout=5)
    assert [(s.up, s.cached, s.failures) for s in statuses] == [(False, False, 1)]
    assert cal.state_at(WEDNESDAY).source is Source.WEEKLY
    assert not (tmp_path / "cache").exists()  # the command line writes no cache


async def test_a_feed_answering_over_the_size_limit_is_refused_and_its_copy_kept(
    feed: Feed, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    book = FeedBook()
    cal = calendar(book, feed.url)
    f = fetcher(book, feed.url, tmp_path)
    assert await f.refresh_one(feed.url)
    padding = b"DESCRIPTION:" + b"x" * MAX_FEED_BYTES + b"\r\n"
    feed.body = ICS.replace(b"END:VCALENDAR", padding + b"END:VCALENDAR")
    caplog.set_level(logging.WARNING, "callflow.feeds")
    assert not await f.refresh_one(feed.url)
    await f.aclose()
    assert feed.hits == 2 and f.status(feed.url).failures == 1
    assert cal.state_at(WEDNESDAY).feed == "Cabinet fermetures"
    assert f.cache_path(feed.url).read_bytes() == ICS
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("larger than 5 MiB" in w and "keeping the last copy" in w for w in warnings)
