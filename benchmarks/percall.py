#!/usr/bin/env python3
"""The daemon's own Python work per call on the hot paths, timed alone, beside a baseline.

    .venv/bin/python benchmarks/percall.py [--baseline DIR] [--rounds 5]

No socket, no Asterisk, no call log: each figure is CPU µs (``time.process_time``) per call
of the benchmarks' IVR (answer, a prompt with barge-in, a key, hangup), for one piece:

* ``metrics``: the metrics observer's share of a call (start, two steps, end);
* ``rest frames``: the three ``RESTRequest`` frames of a call (answer, play, hangup);
* ``event decode``: ten event frames decoded (a ``StasisStart`` each), as the pump does;
* ``waits (key in prompt)``: an ``AriCall`` answered, a barge-in prompt, a key pressed
  during it, a hangup, against a stub client that answers at once;
* ``waits (key after)``: the same, the key 1 ms after the prompt's end (the benchmarks'
  caller presses it 1 s after the answer), so the call waits for it after the prompt.

Each figure is measured in a fresh process of its own, the checkout given by ``--baseline``
(e.g. ``git archive main | tar -x -C /tmp/base``) and this one alternately, ``--rounds``
times; the medians are printed.  On a shared machine read the two columns side by side,
never alone: the load of other jobs moves both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
N = 20_000  # calls per figure (the waits: N // 5)

EVENT = json.dumps(
    {
        "type": "StasisStart",
        "timestamp": "2026-12-03T13:00:00.000+0000",
        "args": [],
        "channel": {
            "id": "1701234567.123",
            "name": "PJSIP/sipp-00000001",
            "state": "Ring",
            "protocol_id": "abc@127.0.0.1",
            "caller": {"name": "", "number": "0612345678"},
            "connected": {"name": "", "number": ""},
            "accountcode": "",
            "dialplan": {
                "context": "callflow",
                "exten": "100",
                "priority": 2,
                "app_name": "Stasis",
                "app_data": "callflow",
            },
            "creationtime": "2026-12-03T13:00:00.000+0000",
            "language": "fr",
            "tenantid": "",
        },
        "asterisk_id": "00:11:22:33:44:55",
        "application": "callflow",
    }
)


def per_call(fn: Any, n: int) -> float:
    t = time.process_time()
    for i in range(n):
        fn(i)
    return (time.process_time() - t) / n * 1e6


def metrics() -> float:
    from prometheus_client import CollectorRegistry

    from callflow.flow.events import (
        CallInfo,
        Outcome,
        OutcomeKind,
        StepKind,
        StepRecord,
        StepResult,
    )
    from callflow.metrics.calls import CallMetrics
    from callflow.telephony import Driver

    m = CallMetrics(CollectorRegistry())
    now = datetime.now(UTC)
    steps = [("menu", StepKind.MENU, StepResult.PRESSED), ("bye", StepKind.HANGUP, StepResult.DONE)]

    def call(i: int) -> None:
        info = CallInfo(str(i), "bench", "1", "0612345678", "100", now, Driver.ARI)
        m.call_started(info)
        for seq, (step, kind, result) in enumerate(steps, 1):
            m.step(
                StepRecord(
                    call_id=str(i),
                    flow="bench",
                    seq=seq,
                    step=step,
                    kind=kind,
                    result=result,
                    next=None,
                    at=now,
                    duration=0.5,
                    detail="",
                )
            )
        m.call_ended(info, Outcome(OutcomeKind.HANGUP, "bye"), now)

    return per_call(call, N)


def frames() -> float:
    from callflow.ari import websocket

    def call(i: int) -> None:
        chan = f"1701234567.{i}"
        for method, path, params in (
            ("POST", f"/channels/{chan}/answer", None),
            ("POST", f"/channels/{chan}/play", {"media": "sound:vm-intro", "playbackId": "p"}),
            ("DELETE", f"/channels/{chan}", {"reason": "normal"}),
        ):
            frame: Any = websocket._frame(str(i), method, path, params, None)
            if not isinstance(frame, str):  # before: a dict, sent as json.dumps(frame)
                json.dumps(frame)

    return per_call(call, N)


def decode() -> float:
    from callflow.ari.frames import parse_frame as _parse_frame

    def call(i: int) -> None:
        for _ in range(10):
            _parse_frame(EVENT)

    return per_call(call, N)


def waits(late: bool) -> float:
    from callflow.ari.call import AriCall
    from callflow.ari.channels import ChannelRegistry

    class Stub:
        """The AriClient's calls the waits make, answered at once; the prompt ends at once."""

        call: Any = None

        async def answer(self, channel_id: str) -> None:
            return None

        async def play(self, channel_id: str, media: str, playback_id: str) -> dict[str, Any]:
            loop = asyncio.get_running_loop()
            end = {"id": playback_id, "state": "done", "target_uri": f"channel:{channel_id}"}
            loop.call_soon(self.call.on_event, {"type": "PlaybackFinished", "playback": end})
            key = {"type": "ChannelDtmfReceived", "digit": "1", "channel": {"id": channel_id}}
            if late:
                loop.call_later(0.001, self.call.on_event, key)
            else:
                loop.call_soon(self.call.on_event, key)
            return {}

        async def hangup(self, channel_id: str, reason: str = "normal") -> None:
            return None

        async def stop_playback(self, playback_id: str) -> None:
            return None

    async def run() -> float:
        registry, stub = ChannelRegistry(), Stub()

        async def one(i: int) -> None:
            channel = {"id": f"c{i}", "caller": {"number": "0612345678"}}
            call = AriCall(stub, registry, channel, dialed="100")  # type: ignore[arg-type]
            stub.call = call
            await call.answer()
            key = await call.collect("vm-intro", max_digits=1, first_timeout=5, inter_timeout=5)
            assert key == "1", key
            await call.hangup()
            call.close()

        for i in range(200):  # warm-up
            await one(i)
        n = N // 5
        t = time.process_time()
        for i in range(n):
            await one(i)
        return (time.process_time() - t) / n * 1e6

    return asyncio.run(run())


FIGURES = {
    "metrics": metrics,
    "rest frames": frames,
    "event decode": decode,
    "waits (key in prompt)": lambda: waits(late=False),
    "waits (key after)": lambda: waits(late=True),
}


def measure(checkout: Path, figure: str) -> float:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    out = subprocess.run(
        [sys.executable, __file__, "--one", figure],
        env=env,
        cwd="/",  # import callflow from PYTHONPATH, not from the working directory
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--baseline", type=Path, help="a checkout to compare with (e.g. main's)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--one", help=argparse.SUPPRESS)  # a child: print one figure
    args = p.parse_args()
    if args.one:
        print(FIGURES[args.one]())
        return 0
    checkouts = {"this": REPO}
    if args.baseline is not None:
        checkouts = {"baseline": args.baseline.resolve(), "this": REPO}
    load = os.getloadavg()
    print(f"# per-call hot paths, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores")
    print(f"# load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start")
    print(
        f"# medians of {args.rounds} rounds, CPU µs per call; "
        + ", ".join(f"{k}: {v}" for k, v in checkouts.items())
    )
    print("| piece | " + " | ".join(checkouts) + " |")
    print("| --- |" + " ---: |" * len(checkouts))
    for figure in FIGURES:
        got: dict[str, list[float]] = {k: [] for k in checkouts}
        for _ in range(args.rounds):  # alternately
            for name, checkout in checkouts.items():
                got[name].append(measure(checkout, figure))
        cells = " | ".join(f"{statistics.median(v):.1f}" for v in got.values())
        print(f"| {figure} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
