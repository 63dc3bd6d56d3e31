#!/usr/bin/env python3
"""What a calendar feed's refresh costs the event loop, and the first call after it.

A generated feed like a practice's main Google Agenda (``--events`` appointments, one in
ten all-day, and ``--rules`` daily RRULEs: 3,000 and 20 by default, ~0.6 MB) is read from
a file while ``callflow.looplag.LoopLag`` samples the loop every 5 ms.  Two rows:

1. baseline: the work the refresh used to do on the loop (parse, pre-warm this year and
   the next in UTC), then the first lookup in Europe/Paris, which expanded the year again
   (the old cache was keyed per zone);
2. the daemon's ``FeedFetcher.refresh_one``: parse and pre-warm in a worker thread, in the
   zones the calendars use, then the same lookup.

Columns: the loop's worst and p99 lag during the refresh (ms), the refresh's wall time (s),
and a calendar's first and second ``state_at`` after it (ms: a call's schedule step).

    python benchmarks/feedlag.py [--events 3000] [--rules 20]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from callflow.feeds import FeedFetcher  # noqa: E402
from callflow.looplag import LoopLag  # noqa: E402
from callflow.schedule import Calendar, CalendarSpec, FeedBook, parse_feed  # noqa: E402
from tests.support.bigfeed import big_feed  # noqa: E402

PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # inside the generated feed's span
SAMPLE = 0.005


def calendar(book: FeedBook, location: str) -> Calendar:
    spec = CalendarSpec.model_validate(
        {"weekly": {"mon-fri": ["08:00-19:00"]}, "closed_feeds": [location]}
    )
    return Calendar("office", spec, PARIS, book)


async def measure(name: str, refresh: Callable[[], Awaitable[None]], cal: Calendar) -> str:
    lags: list[float] = []
    async with LoopLag(SAMPLE, on_sample=lags.append):
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        await refresh()
        wall = time.perf_counter() - started
        await asyncio.sleep(0.05)
    lookups = []
    for _ in range(2):
        t = time.perf_counter()
        cal.state_at(NOW)
        lookups.append((time.perf_counter() - t) * 1e3)
    lags.sort()
    worst = lags[-1] * 1e3
    p99 = lags[max(0, int(len(lags) * 0.99) - 1)] * 1e3
    return (
        f"{name:<34} {worst:>9.0f} {p99:>8.0f} {wall:>9.2f} {lookups[0]:>12.1f} {lookups[1]:>12.1f}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rules", type=int, default=20)
    args = parser.parse_args()
    data = big_feed(args.events, args.rules)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "agenda.ics"
        path.write_bytes(data)
        location = str(path)
        print(f"feed: {len(data) / 1e3:.0f} kB, {args.events} events, {args.rules} daily RRULEs")
        print(
            f"{'':<34} {'worst ms':>9} {'p99 ms':>8} {'refresh s':>9} {'1st call ms':>12}"
            f" {'2nd call ms':>12}"
        )

        old_book = FeedBook()
        old_cal = calendar(old_book, location)

        async def on_the_loop() -> None:
            feed = parse_feed(path.read_bytes(), "agenda.ics")
            feed.prewarm(NOW, NOW + timedelta(days=366), [UTC])
            feed._expanded.clear()  # the old cache held each zone's own expansion
            old_book.put(location, feed)

        print(await measure("baseline: on the loop (before)", on_the_loop, old_cal))

        book = FeedBook()
        cal = calendar(book, location)
        fetcher = FeedFetcher(book, lambda: [location], Path(tmp) / "cache", clock=NOW.timestamp)

        async def in_a_worker() -> None:
            assert await fetcher.refresh_one(location)

        print(await measure("FeedFetcher: in a worker (after)", in_a_worker, cal))
        await fetcher.aclose()


if __name__ == "__main__":
    asyncio.run(main())
