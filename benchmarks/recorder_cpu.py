#!/usr/bin/env python3
"""The call log's CPU per call, one code tree against another (issue #11).

The records of a typical call (its start, two steps, the answer, its end) are reported to
a ``Recorder`` on SQLite at a steady rate (25 calls per second by default, the rate
``load.py`` measures), with the recorder's own intervals (a group commit every 50 ms, a
database feed every second), and the process's CPU time (every thread: the spool's worker
thread counts) is divided by the calls.  An idle run (the same feeding, no recorder) gives
what the feeding itself costs; ``net`` is the difference.

Each variant runs in a subprocess that imports callflow from the tree given (``--tree``,
repeatable; default: this one), the variants interleaved, several rounds:

    python benchmarks/recorder_cpu.py --tree /work/main --tree . [--rounds 4] [--calls 150]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]


def _events(n: int) -> list[tuple[str, Any]]:
    """What the engine reports of a typical call: its start, two steps, the answer, its end
    (callflow imported from the tree on ``sys.path``)."""
    from callflow.flow.events import (
        CallAnswered,
        CallInfo,
        Outcome,
        OutcomeKind,
        StepKind,
        StepRecord,
        StepResult,
    )

    cid = f"bench-{n}"
    at = datetime(2026, 3, 2, 9, 0, tzinfo=UTC) + timedelta(seconds=n)
    info = CallInfo(cid, "cabinet", "v1", "0612345678", "0388000000", at)
    step1 = StepRecord(
        cid, "cabinet", 1, "welcome", StepKind.PLAY, StepResult.PLAYED, "menu", at, 2.5
    )
    step2 = StepRecord(
        cid, "cabinet", 2, "menu", StepKind.MENU, StepResult.PRESSED, "desk", at, 1.25, key="2"
    )
    answered = CallAnswered(cid, "cabinet", at, "desk", "secretariat", None, 1)
    outcome = Outcome(OutcomeKind.ANSWERED, "desk", "secretariat", None, 1)
    return [
        ("call_started", info),
        ("step", step1),
        ("step", step2),
        ("call_answered", answered),
        ("call_ended", (info, outcome, at + timedelta(seconds=30))),
    ]


async def feed(tree: str, calls: int, rate: float, idle: bool, pg_url: str | None) -> float:
    """CPU seconds per call of one run (in this process, importing from ``tree``)."""
    sys.path.insert(0, tree)
    from callflow.store.db import create_engine, upgrade
    from callflow.store.recorder import Recorder

    def report(rec: Any, name: str, ev: Any) -> None:
        if name == "call_ended":
            rec.call_ended(*ev)
        else:
            getattr(rec, name)(ev)

    with tempfile.TemporaryDirectory() as tmp:
        url = pg_url or f"sqlite+aiosqlite:///{tmp}/bench.db"
        engine = create_engine(url)
        await upgrade(engine)
        rec = Recorder(engine, Path(tmp) / "spool", node="bench")
        writer = None if idle else asyncio.create_task(rec.run())
        all_events = [_events(n) for n in range(calls)]
        if writer is not None:  # warm up: imports, compiled statements, the spool's file
            for name, ev in _events(-1):
                report(rec, name, ev)
            await rec.flush()
        await asyncio.sleep(0.2)
        cpu0 = time.process_time()
        start = time.monotonic()
        for n, evs in enumerate(all_events):
            for name, ev in evs:
                if idle:
                    continue
                report(rec, name, ev)
            await asyncio.sleep(max(0.0, start + (n + 1) / rate - time.monotonic()))
        if writer is not None:
            await rec.flush()  # every record in the database
        cpu = time.process_time() - cpu0
        if writer is not None:
            await rec.close()
            await writer
            assert rec.written == 5 * (calls + 1), rec.written
        await engine.dispose()
    return cpu / calls


async def parts(tree: str, calls: int, reps: int) -> dict[str, float]:
    """Each stage on its own, µs per call (the best of ``reps``): events to records (the
    loop), records to spool lines (the spool's thread), lines read back (a restart's
    replay), records to SQLite in transactions of a second's worth at 25 calls/s (CPU time of
    the process: the loop and aiosqlite's thread)."""
    sys.path.insert(0, tree)
    from callflow.store import recorder as recorder_module
    from callflow.store.db import create_engine, upgrade
    from callflow.store.recorder import Recorder
    from callflow.store.spool import decode_line, encode_line
    from callflow.store.writer import write_records

    best: dict[str, float] = {}

    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp}/bench.db")
        await upgrade(engine)
        rec = Recorder(engine, Path(tmp) / "spool", node="bench")
        for r in range(reps + 1):  # the first round warms up (and is not kept)
            evs = [
                recorder_module.CallEnded(*ev) if name == "call_ended" else ev
                for n in range(calls)
                for name, ev in _events(r * calls + n)
            ]
            t = time.perf_counter()
            records = [recorder_module._no_nul(rec._record(e)) for e in evs]
            cut = [time.perf_counter() - t]
            t = time.perf_counter()
            lines = [encode_line(x) for x in records]
            cut.append(time.perf_counter() - t)
            t = time.perf_counter()
            for line in lines:
                decode_line(line)
            cut.append(time.perf_counter() - t)
            t = time.process_time()  # CPU: the commits' fsyncs are waits, not work
            for i in range(0, len(records), 125):
                async with engine.begin() as conn:
                    await write_records(conn, records[i : i + 125], node="bench")
            cut.append(time.process_time() - t)
            if r:
                for name, seconds in zip(("record", "encode", "decode", "db"), cut, strict=True):
                    best[name] = min(best.get(name, 1e9), seconds / calls * 1e6)
        await engine.dispose()
    return best


def child(args: argparse.Namespace) -> int:
    if args.parts:
        print(json.dumps(asyncio.run(parts(args.child, args.calls, 5))))
        return 0
    per_call = asyncio.run(feed(args.child, args.calls, args.rate, args.idle, args.pg_url))
    print(json.dumps(per_call))
    return 0


def run_child(tree: str, args: argparse.Namespace, idle: bool) -> float:
    cmd = [sys.executable, __file__, "--child", tree, "--calls", str(args.calls)]
    cmd += ["--rate", str(args.rate)] + (["--idle"] if idle else [])
    cmd += ["--parts"] if args.parts else []
    if args.pg_url:
        cmd += ["--pg-url", args.pg_url]
    env = {**os.environ, "PYTHONPATH": tree}
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main_parts(trees: list[str], args: argparse.Namespace) -> int:
    got: dict[str, list[dict[str, float]]] = {t: [] for t in trees}
    for r in range(args.rounds):
        for t in trees if r % 2 == 0 else trees[::-1]:
            env = {**os.environ, "PYTHONPATH": t}
            cmd = [sys.executable, __file__, "--child", t, "--calls", str(args.calls), "--parts"]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            got[t].append(json.loads(out.stdout.strip().splitlines()[-1]))
    stages = ("record", "encode", "decode", "db")
    print(f"{args.calls} calls, {args.rounds} rounds (best of 5 in each), load {os.getloadavg()}")
    print(
        f"µs per call, median of the rounds' best:\n{'tree':<30}"
        + "".join(f"{s:>9}" for s in stages)
    )
    for t in trees:
        cells = "".join(f"{statistics.median(x[s] for x in got[t]):>9.1f}" for s in stages)
        print(f"{t:<30}{cells}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tree", action="append", help="a callflow checkout (repeatable)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--calls", type=int, default=150)
    p.add_argument("--rate", type=float, default=25.0, help="calls per second")
    p.add_argument("--pg-url", help="PostgreSQL instead of SQLite")
    p.add_argument("--parts", action="store_true", help="each stage alone, µs per call")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--idle", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    trees = [str(Path(t).resolve()) for t in (args.tree or [str(HERE)])]
    if args.parts:
        return main_parts(trees, args)
    figures: dict[str, list[float]] = {t: [] for t in trees}
    idle: list[float] = []
    for r in range(args.rounds):
        order = trees if r % 2 == 0 else trees[::-1]
        idle.append(run_child(trees[0], args, idle=True))
        for t in order:
            figures[t].append(run_child(t, args, idle=False))
        line = "  ".join(f"{Path(t).name}={figures[t][-1] * 1e3:.3f}" for t in trees)
        print(f"round {r + 1}: ms CPU per call: {line}  idle={idle[-1] * 1e3:.3f}", flush=True)
    base = statistics.median(idle)
    print(f"\n{args.calls} calls at {args.rate:g}/s, {args.rounds} rounds, load {os.getloadavg()}")
    print(f"{'tree':<30}{'median ms/call':>16}{'net of idle':>14}{'min':>9}{'max':>9}")
    for t in trees:
        xs = figures[t]
        med = statistics.median(xs)
        print(
            f"{t:<30}{med * 1e3:>16.3f}{(med - base) * 1e3:>14.3f}"
            f"{min(xs) * 1e3:>9.3f}{max(xs) * 1e3:>9.3f}"
        )
    print(f"{'idle (feeding only)':<30}{base * 1e3:>16.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
