"""A big calendar feed does not hold the event loop: it is parsed and expanded in a
worker thread while the loop keeps running, the copy the calendars get is already
expanded in their zone (the first call after a refresh expands nothing), and a feed over
the size limit is refused with its last copy kept."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from callflow import feeds
from callflow.feeds import MAX_FEED_BYTES, FeedFetcher
from callflow.schedule import Calendar, CalendarSpec, FeedBook, ParsedFeed, Source, localize
from callflow.schedule.ical import _Expansion
from tests.support.bigfeed import big_feed

PARIS = ZoneInfo("Europe/Paris")
ICS = (Path(__file__).parent / "feeds" / "fermetures.ics").read_bytes()
WEDNESDAY = localize(datetime(2026, 12, 9, 15, 0), PARIS)  # a weekly closure of fermetures
# The generated feed starts on Monday 2025-01-06; its first event (all-day) is that day.
BIG_FIRST_DAY = localize(datetime(2025, 1, 6, 12, 0), PARIS)
NOW = localize(datetime(2025, 1, 5, 12, 0), PARIS).timestamp()


def calendar(book: FeedBook, location: str, tz: ZoneInfo = PARIS) -> Calendar:
    spec = CalendarSpec.model_validate(
        {"weekly": {"mon-fri": ["08:00-19:00"]}, "closed_feeds": [location]}
    )
    return Calendar("office", spec, tz, book)


def fetcher(book: FeedBook, location: str, cache: Path, now: float = NOW) -> FeedFetcher:
    return FeedFetcher(book, lambda: [location], cache, interval=3600, timeout=5, clock=lambda: now)


class Expansions:
    """Counts the costly expansions of a year (by ``recurring-ical-events``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.years: list[int] = []
        real: Callable[[ParsedFeed, int], _Expansion] = ParsedFeed._expand

        def spy(feed: ParsedFeed, year: int) -> _Expansion:
            self.years.append(year)
            return real(feed, year)

        monkeypatch.setattr(ParsedFeed, "_expand", spy)


class Ticker:
    """A task that counts the loop's turns: it only advances while the loop is free."""

    def __init__(self) -> None:
        self.ticks = 0

    async def run(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0)


@pytest.fixture
async def ticker() -> AsyncIterator[Ticker]:
    t = Ticker()
    task = asyncio.create_task(t.run())
    yield t
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_loop_keeps_running_while_a_big_feed_is_parsed_and_expanded(
    tmp_path: Path, ticker: Ticker, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "agenda.ics"
    source.write_bytes(big_feed(events=1000, rules=10))
    book = FeedBook()
    cal = calendar(book, str(source))
    # The loop's turns counted at the start and the end of the parse and of each expansion
    # (the worker reads the ticker: an int, no lock needed).
    seen: dict[str, list[tuple[int, int]]] = {"parse": [], "expand": []}
    real_parse, real_expand = feeds.parse_feed, ParsedFeed._expand

    def parse(data: bytes, name: str) -> ParsedFeed:
        before = ticker.ticks
        try:
            return real_parse(data, name)
        finally:
            seen["parse"].append((before, ticker.ticks))

    def expand(feed: ParsedFeed, year: int) -> _Expansion:
        before = ticker.ticks
        try:
            return real_expand(feed, year)
        finally:
            seen["expand"].append((before, ticker.ticks))

    monkeypatch.setattr(feeds, "parse_feed", parse)
    monkeypatch.setattr(ParsedFeed, "_expand", expand)

    assert await fetcher(book, str(source), tmp_path / "cache").refresh_one(str(source))
    assert len(seen["parse"]) == 1 and len(seen["expand"]) == 2  # 2025 and 2026
    # The loop turned while the feed was being parsed and while each year was expanded.
    for before, after in seen["parse"] + seen["expand"]:
        assert after > before, seen
    assert cal.state_at(BIG_FIRST_DAY).source is Source.CLOSURE  # the all-day event


async def test_after_a_refresh_the_first_lookup_expands_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "fermetures.ics"
    source.write_bytes(ICS)
    book = FeedBook()
    cal = calendar(book, str(source))  # Europe/Paris
    now = localize(datetime(2026, 12, 1, 9, 0), PARIS).timestamp()
    expansions = Expansions(monkeypatch)
    assert await fetcher(book, str(source), tmp_path / "cache", now).refresh_one(str(source))
    assert expansions.years == [2026, 2027]  # in the worker: each year once
    expansions.years.clear()
    state = cal.state_at(WEDNESDAY)  # a call's schedule step
    assert state.source is Source.CLOSURE and state.feed == "Cabinet fermetures"
    assert expansions.years == []


async def test_the_cached_copy_read_at_start_is_pre_warmed_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "fermetures.ics"
    source.write_bytes(ICS)
    now = localize(datetime(2026, 12, 1, 9, 0), PARIS).timestamp()
    cache = tmp_path / "cache"
    assert await fetcher(FeedBook(), str(source), cache, now).refresh_one(str(source))
    source.unlink()  # the feed is down at the restart: the cached copy is used
    book = FeedBook()
    cal = calendar(book, str(source))
    expansions = Expansions(monkeypatch)
    restarted = fetcher(book, str(source), cache, now)
    await restarted.load_cache()
    assert restarted.status(str(source)).cached
    expansions.years.clear()
    assert cal.state_at(WEDNESDAY).feed == "Cabinet fermetures"
    assert expansions.years == []


def test_one_expansion_serves_every_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The all-day event (Formation DPC, 2026-12-11) is that local day in each zone, the
    timed ones the same instants, from one expansion of the year."""
    feed = feeds.parse_feed(ICS, "fermetures.ics")
    book = FeedBook({"/f.ics": feed})
    new_york = ZoneInfo("America/New_York")
    paris, ny = calendar(book, "/f.ics"), calendar(book, "/f.ics", new_york)
    assert set(book.zones("/f.ics")) == {PARIS, new_york}
    expansions = Expansions(monkeypatch)
    in_paris = localize(datetime(2026, 12, 11, 0, 30), PARIS)
    in_ny = localize(datetime(2026, 12, 11, 0, 30), new_york)
    dpc = "Formation DPC (cabinet fermé)"
    assert paris.state_at(in_paris).label == dpc
    assert ny.state_at(in_ny).label == dpc
    assert ny.state_at(in_paris).label != dpc  # 18:30 on the 10th in New York
    assert paris.state_at(WEDNESDAY).feed == ny.state_at(WEDNESDAY).feed == "Cabinet fermetures"
    assert expansions.years == [2026]


async def test_a_feed_over_the_size_limit_is_refused_and_its_copy_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert MAX_FEED_BYTES == 5 * 1024 * 1024
    source = tmp_path / "fermetures.ics"
    source.write_bytes(ICS)
    book = FeedBook()
    cal = calendar(book, str(source))
    f = fetcher(book, str(source), tmp_path / "cache")
    assert await f.refresh_one(str(source))
    # Still an iCalendar file, but padded past the limit (a description of 5 MiB).
    padding = b"DESCRIPTION:" + b"x" * MAX_FEED_BYTES + b"\r\n"
    source.write_bytes(ICS.replace(b"END:VCALENDAR", padding + b"END:VCALENDAR"))
    caplog.set_level(logging.WARNING, "callflow.feeds")
    assert not await f.refresh_one(str(source))
    assert f.status(str(source)).failures == 1
    assert cal.state_at(WEDNESDAY).feed == "Cabinet fermetures"  # the last copy
    assert f.cache_path(str(source)).read_bytes() == ICS
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "larger than 5 MiB, the limit for a calendar feed" in w and "keeping the last copy" in w
        for w in warnings
    ), warnings


def test_the_generated_feed_is_what_it_says() -> None:
    feed = feeds.parse_feed(big_feed(events=40, rules=2), "agenda.ics")
    start = localize(datetime(2025, 1, 6), PARIS)
    end = localize(datetime(2025, 1, 16), PARIS)
    found = feed.events(start, end, PARIS)
    assert len([e for e in found if e.summary.startswith("Rendez-vous")]) == 40
    # Two daily rules over ten days, each skipping one day (7 and 8 days after the first).
    assert len([e for e in found if e.summary.startswith("Creneau")]) == 2 * 10 - 2
    all_day = [e for e in found if e.summary == "Rendez-vous 0"]
    assert all_day[0].start.astimezone(PARIS).date() == date(2025, 1, 6)
