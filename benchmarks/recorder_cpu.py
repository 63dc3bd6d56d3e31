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


async def feed(tree: str, calls: int, rate: float, idle: bool, pg_url: str | None) -> float:
    """CPU seconds per call of one run (in this process, importing from ``tree``)."""
    sys.path.insert(0, tree)
    from callflow.flow.events import (
        CallAnswered,
        CallInfo,
        Outcome,
        OutcomeKind,
        StepKind,
        StepRecord,
        StepResult,
    )
    from callflow.store.db import create_engine, upgrade
    from callflow.store.recorder import Recorder

    t0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def events(n: int) -> list[tuple[str, Any]]:
        cid = f"bench-{n}"
        at = t0 + timedelta(seconds=n)
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

    with tempfile.TemporaryDirectory() as tmp:
        url = pg_url or f"sqlite+aiosqlite:///{tmp}/bench.db"
        engine = create_engine(url)
        await upgrade(engine)
        rec = Recorder(engine, Path(tmp) / "spool", node="bench")
        writer = None if idle else asyncio.create_task(rec.run())
        all_events = [events(n) for n in range(calls)]
        if writer is not None:  # warm up: imports, compiled statements, the spool's file
            for name, ev in events(-1):
                if name == "call_ended":
                    rec.call_ended(*ev)
                else:
                    getattr(rec, name)(ev)
            await rec.flush()
        await asyncio.sleep(0.2)
        cpu0 = time.process_time()
        start = time.monotonic()
        for n, evs in enumerate(all_events):
            for name, ev in evs:
                if idle:
                    continue
                if name == "call_ended":
                    rec.call_ended(*ev)
                else:
                    getattr(rec, name)(ev)
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


def child(args: argparse.Namespace) -> int:
    per_call = asyncio.run(feed(args.child, args.calls, args.rate, args.idle, args.pg_url))
    print(json.dumps(per_call))
    return 0


def run_child(tree: str, args: argparse.Namespace, idle: bool) -> float:
    cmd = [sys.executable, __file__, "--child", tree, "--calls", str(args.calls)]
    cmd += ["--rate", str(args.rate)] + (["--idle"] if idle else [])
    if args.pg_url:
        cmd += ["--pg-url", args.pg_url]
    env = {**os.environ, "PYTHONPATH": tree}
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tree", action="append", help="a callflow checkout (repeatable)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--calls", type=int, default=150)
    p.add_argument("--rate", type=float, default=25.0, help="calls per second")
    p.add_argument("--pg-url", help="PostgreSQL instead of SQLite")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--idle", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    trees = [str(Path(t).resolve()) for t in (args.tree or [str(HERE)])]
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
