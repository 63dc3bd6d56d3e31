#!/usr/bin/env python3
"""What weighs on the event loop while calls run: loop lag and CPU per call, with and
without the call log.

Calls arrive at a steady rate (``--rates``, calls per second, for ``--seconds`` each);
each is the example practice's flow run by the real engine on a simulated call (the PBX
answers at once), so what the loop does is the daemon's own work.  For each rate it
prints, in one run and in this order:

1. the baseline: the engine with no call log;
2. the engine with the call log on SQLite (the recorder: the fsync'd journal in a worker
   thread, the database fed by aiosqlite's thread);
3. the same on PostgreSQL, when a URL is given (``--pg-url`` or CALLFLOW_TEST_PG_URL).

Columns: event-loop lag (``callflow.looplag.LoopLag`` sampling every 5 ms: p50, p99 and
max, in ms), the loop thread's CPU per call (``time.thread_time`` of the loop's thread, in
ms), and the CPU of every other thread per call (the journal and database threads; the
process CPU minus the loop's).  The recorder's time to write its last records after the
last call is included, so nothing it costs is left out.

    python benchmarks/looplag.py [--rates 50,200] [--seconds 10] [--pg-url URL]
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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from callflow.flow.engine import Engine  # noqa: E402
from callflow.flow.events import NullObserver, Observer  # noqa: E402
from callflow.flow.registry import LoadedFlow, load_flows  # noqa: E402
from callflow.flow.services import CallbackSink, MemoryCallbacks, Services  # noqa: E402
from callflow.looplag import LoopLag  # noqa: E402
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
SAMPLE = 0.005  # seconds between two loop-lag measurements


@dataclass
class Result:
    name: str
    rate: int
    calls: int
    lags: list[float]
    loop_cpu: float  # seconds, the loop's thread
    process_cpu: float  # seconds, every thread

    def line(self) -> str:
        lags = sorted(self.lags) or [0.0]
        p50 = statistics.median(lags) * 1e3
        p99 = lags[max(0, int(len(lags) * 0.99) - 1)] * 1e3
        worst = lags[-1] * 1e3
        loop = self.loop_cpu / self.calls * 1e3
        other = max(0.0, self.process_cpu - self.loop_cpu) / self.calls * 1e3
        return (
            f"{self.name:<22}{self.rate:>6}{self.calls:>7}{p50:>9.2f}{p99:>9.2f}{worst:>9.2f}"
            f"{loop:>12.3f}{other:>13.3f}"
        )


HEADER = (
    f"{'':<35}{'loop lag (ms)':>27}{'CPU per call (ms)':>25}\n"
    f"{'configuration':<22}{'cps':>6}{'calls':>7}{'p50':>9}{'p99':>9}{'max':>9}"
    f"{'loop':>12}{'other':>13}"
)


async def paced_calls(
    flow: LoadedFlow, observer: Observer, callbacks: CallbackSink, rate: int, seconds: float
) -> int:
    """Start ``rate`` calls a second for ``seconds``; return once every call has ended."""
    start = time.perf_counter()
    services = Services(
        clock=lambda: T0 + timedelta(seconds=time.perf_counter() - start),
        callbacks=callbacks,
        observer=observer,
    )
    engine = Engine(services)
    loop = asyncio.get_running_loop()
    total = int(rate * seconds)
    t0 = loop.time()
    tasks = []
    for n in range(total):
        due = t0 + n / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        call = SimulatedCall(
            flow, SCENARIOS[n % len(SCENARIOS)], caller="0612345678", dialed="0388000000"
        )
        tasks.append(asyncio.ensure_future(engine.run(flow, call)))
    await asyncio.gather(*tasks)
    return total


@asynccontextmanager
async def measured(name: str, rate: int, out: list[Result]) -> AsyncIterator[list[int]]:
    """Loop lag and CPU over the block; the block puts the number of calls in the list."""
    lags: list[float] = []
    calls: list[int] = []
    async with LoopLag(SAMPLE, on_sample=lags.append):
        cpu0, loop0 = time.process_time(), time.thread_time()
        yield calls
        loop_cpu, cpu = time.thread_time() - loop0, time.process_time() - cpu0
    out.append(Result(name, rate, calls[0], lags, loop_cpu, cpu))


async def baseline(flow: LoadedFlow, rate: int, seconds: float, out: list[Result]) -> None:
    async with measured("engine, no call log", rate, out) as calls:
        calls.append(await paced_calls(flow, NullObserver(), MemoryCallbacks(), rate, seconds))


async def with_recorder(
    name: str,
    url: str,
    flow: LoadedFlow,
    rate: int,
    seconds: float,
    out: list[Result],
    **engine_args: Any,
) -> None:
    db = create_engine(url, **engine_args)
    await upgrade(db)
    with tempfile.TemporaryDirectory() as spool:
        rec = Recorder(db, Path(spool))
        writer = asyncio.create_task(rec.run())
        async with measured(name, rate, out) as calls:
            calls.append(await paced_calls(flow, rec, rec, rate, seconds))
            await rec.close()  # every record in the database: its cost is counted
        await writer
        if rec.spool_size or rec.dropped or rec.rejected:
            print(f"  warning: {name}: spooled {rec.spool_size}, dropped {rec.dropped}")
    await db.dispose()


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", default="50,200", help="calls per second, comma-separated")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of calls per rate")
    p.add_argument("--pg-url", default=os.environ.get("CALLFLOW_TEST_PG_URL"))
    args = p.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    flow = load_flows([REPO / "dialplans" / "cabinet-du-parc.yaml"]).flows["cabinet-du-parc"]
    results: list[Result] = []
    for rate in rates:
        await baseline(flow, rate, args.seconds, results)
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite+aiosqlite:///{tmp}/bench.db"
            await with_recorder("call log, SQLite", url, flow, rate, args.seconds, results)
        if args.pg_url:
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(args.pg_url)
            async with admin.begin() as conn:
                await conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
            try:
                await with_recorder(
                    "call log, PostgreSQL",
                    args.pg_url,
                    flow,
                    rate,
                    args.seconds,
                    results,
                    connect_args={"server_settings": {"search_path": schema}},
                )
            finally:
                async with admin.begin() as conn:
                    await conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
                await admin.dispose()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {datetime.now(UTC):%Y-%m-%d}")
    print(HEADER)
    for r in results:
        print(r.line())
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
