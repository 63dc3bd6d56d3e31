#!/usr/bin/env python3
"""Benchmark of the call log: the engine runs simulated calls, the recorder writes them.

Prints, in one run and in this order:

1. the baseline: the engine's per-step latency with no recorder (median, p99);
2. with the recorder on SQLite: steps recorded per second (every step in the database,
   measured from the first call to the recorder's final flush) and the per-step latency;
3. the same on PostgreSQL, when a URL is given (``--pg-url``, or the environment variable
   CALLFLOW_TEST_PG_URL, e.g. ``export CALLFLOW_TEST_PG_URL="$(scripts/postgres up)"``).

The per-step latency is the time between two consecutive events of one call as the
engine reports them (call start → step 1 → step 2 ...): with simulated calls the PBX answers
at once, so it is the engine's own time per step plus whatever the observer and the
recorder's writer task (which shares the event loop) cost it.

    python benchmarks/recorder.py [--calls 3000] [--concurrency 50] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from callflow.flow.engine import Engine  # noqa: E402
from callflow.flow.events import (  # noqa: E402
    CallAnswered,
    CallInfo,
    NullObserver,
    Observer,
    Outcome,
    StepRecord,
)
from callflow.flow.registry import LoadedFlow, load_flows  # noqa: E402
from callflow.flow.services import CallbackSink, MemoryCallbacks, Services  # noqa: E402
from callflow.simulate import Scenario, SimulatedCall  # noqa: E402
from callflow.store.db import create_engine, upgrade  # noqa: E402
from callflow.store.recorder import Recorder  # noqa: E402

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # Monday 10:00 in Paris: the office is open
SCENARIOS = [
    Scenario(digits=["2"]),  # the desk answers
    Scenario(digits=["1", "2"]),  # a child's fever: the on-call doctor
    Scenario(digits=["2"], no_answer={"secretariat"}),  # nobody: a callback request
    Scenario(digits=["1", "1"]),  # chest pain: emergency
    Scenario(digits=["9", "9", "9"]),  # wrong keys three times: the desk
    Scenario(hangup_after_prompts=2),  # the caller hangs up
]


class StepTimer:
    """Measures the time between consecutive events of each call, then passes them on."""

    def __init__(self, inner: Observer) -> None:
        self.inner = inner
        self.last: dict[str, float] = {}
        self.gaps: list[float] = []
        self.steps = 0

    def call_started(self, info: CallInfo) -> None:
        self.last[info.call_id] = time.perf_counter()
        self.inner.call_started(info)

    def step(self, record: StepRecord) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self.last[record.call_id])
        self.steps += 1
        self.inner.step(record)
        self.last[record.call_id] = time.perf_counter()

    def call_answered(self, event: CallAnswered) -> None:
        self.inner.call_answered(event)

    def call_ended(self, info: CallInfo, outcome: Outcome, at: datetime) -> None:
        self.last.pop(info.call_id, None)
        self.inner.call_ended(info, outcome, at)


@dataclass
class Result:
    name: str
    calls: int
    steps: int
    seconds: float
    gaps: list[float]
    written: int | None = None

    def line(self) -> str:
        gaps = sorted(self.gaps)
        median = statistics.median(gaps) * 1e6
        p99 = gaps[max(0, int(len(gaps) * 0.99) - 1)] * 1e6
        rate = f"{self.steps / self.seconds:>10.0f}" if self.written is not None else " " * 9 + "-"
        return (
            f"{self.name:<22}{self.calls:>7}{self.steps:>8}{self.seconds:>9.2f}{rate}"
            f"{median:>12.1f}{p99:>12.1f}"
        )


async def run_calls(
    flow: LoadedFlow,
    observer: Observer,
    callbacks: CallbackSink,
    calls: int,
    concurrency: int,
) -> None:
    start = time.perf_counter()
    services = Services(
        clock=lambda: T0 + timedelta(seconds=time.perf_counter() - start),
        callbacks=callbacks,
        observer=observer,
    )
    engine = Engine(services)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(calls):
        queue.put_nowait(n)

    async def worker() -> None:
        while not queue.empty():
            n = queue.get_nowait()
            call = SimulatedCall(
                flow, SCENARIOS[n % len(SCENARIOS)], caller="0612345678", dialed="0388000000"
            )
            await engine.run(flow, call)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def baseline(flow: LoadedFlow, calls: int, concurrency: int) -> Result:
    timer = StepTimer(NullObserver())
    t0 = time.perf_counter()
    await run_calls(flow, timer, MemoryCallbacks(), calls, concurrency)
    return Result("engine, no recorder", calls, timer.steps, time.perf_counter() - t0, timer.gaps)


async def with_recorder(
    name: str, url: str, flow: LoadedFlow, calls: int, concurrency: int, **engine_args: Any
) -> Result:
    engine = create_engine(url, **engine_args)
    await upgrade(engine)
    with tempfile.TemporaryDirectory() as spool:
        rec = Recorder(engine, Path(spool))
        timer = StepTimer(rec)
        writer = asyncio.create_task(rec.run())
        t0 = time.perf_counter()
        await run_calls(flow, timer, rec, calls, concurrency)
        await rec.close()  # every record is in the database when it returns
        seconds = time.perf_counter() - t0
        await writer
        if rec.spool_size or rec.dropped or rec.rejected:
            print(f"  warning: {name}: spooled {rec.spool_size}, dropped {rec.dropped}")
    await engine.dispose()
    return Result(name, calls, timer.steps, seconds, timer.gaps, rec.written)


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=50, help="calls in progress at once")
    p.add_argument("--pg-url", default=os.environ.get("CALLFLOW_TEST_PG_URL"))
    args = p.parse_args()
    flow = load_flows([REPO / "dialplans" / "cabinet-du-parc.yaml"]).flows["cabinet-du-parc"]

    results = [await baseline(flow, args.calls, args.concurrency)]
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/bench.db"
        results.append(
            await with_recorder("recorder, SQLite", url, flow, args.calls, args.concurrency)
        )
    if args.pg_url:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(args.pg_url)
        async with admin.begin() as conn:
            await conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        try:
            results.append(
                await with_recorder(
                    "recorder, PostgreSQL",
                    args.pg_url,
                    flow,
                    args.calls,
                    args.concurrency,
                    connect_args={"server_settings": {"search_path": schema}},
                )
            )
        finally:
            async with admin.begin() as conn:
                await conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
            await admin.dispose()
    else:
        print("PostgreSQL: skipped (give --pg-url or set CALLFLOW_TEST_PG_URL)\n")

    print(f"{args.calls} simulated calls, {args.concurrency} at a time\n")
    print(
        f"{'':<22}{'calls':>7}{'steps':>8}{'seconds':>9}{'steps/s':>10}"
        f"{'median µs':>12}{'p99 µs':>12}"
    )
    for r in results:
        print(r.line())
    print("\nsteps/s: steps recorded per second, from the first call to the last row written;")
    print("median, p99: the engine's time per step (between consecutive events of a call).")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
