#!/usr/bin/env python3
"""How long Kamailio (deploy/kamailio/kamailio.cfg) takes to mark a dead node down.

A node is a SIPp UAS (tests/integration/sipp/uas-answer.xml answers OPTIONS 200) on
127.0.0.21:5060, the one node of dispatcher set 1; Kamailio listens on 127.0.0.20:5060 with
the configuration's own probing settings (``--interval``, ``--timeout-ms``: its
``PING_INTERVAL`` and ``NODE_TIMEOUT``). Each trial starts the node, waits until Kamailio
has it up, waits a random part of a probe interval (the death falls anywhere in the probe
cycle), kills the node with SIGKILL, and reads when Kamailio marked it down (its log line
``node down: ... at <time>``). No call is placed: this is the probe's time alone, the
longest a dead node keeps being offered calls (each such call reaches another node
``NODE_TIMEOUT`` later, by failover). Printed beside the bound, interval + timeout.

Needs kamailio (Debian's), kamcmd and sipp; run it isolated:

    unshare --net bash -c 'ip link set lo up && .venv/bin/python benchmarks/failover.py'
    [--trials 5] [--interval 5] [--timeout-ms 2000]
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CFG = REPO / "deploy" / "kamailio" / "kamailio.cfg"
UAS = REPO / "tests" / "integration" / "sipp" / "uas-answer.xml"
KAMAILIO = "127.0.0.20:5060"
NODE = ("127.0.0.21", 5060)


def wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise SystemExit(f"failover: timed out after {timeout} s waiting for {what}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--interval", type=int, default=5, help="PING_INTERVAL, seconds")
    ap.add_argument("--timeout-ms", type=int, default=2000, help="NODE_TIMEOUT, ms")
    args = ap.parse_args()
    for tool in ("kamailio", "kamcmd", "sipp"):
        if shutil.which(tool) is None:
            raise SystemExit(f"failover: {tool} missing (apt-get install kamailio sip-tester)")

    with tempfile.TemporaryDirectory(prefix="callflow-failover-") as tmp:
        d = Path(tmp)
        (d / "dispatcher.list").write_text(f"1 sip:{NODE[0]}:{NODE[1]} 8 0 duid=node1\n")
        ctl = f"unixs:{d / 'ctl'}"
        defines = {
            "LISTEN": f"udp:{KAMAILIO}",
            "DISPATCHER_LIST": f'"{d / "dispatcher.list"}"',
            "CTL_SOCKET": f'"{ctl}"',
            "PING_INTERVAL": str(args.interval),
            "NODE_TIMEOUT": str(args.timeout_ms),
        }
        cmd = ["kamailio", "-f", str(CFG), "-DD", "-E", "-Y", tmp, "-w", tmp]
        for k, v in defines.items():
            cmd += ["-A", f"{k}={v}"]
        log_path = d / "kamailio.log"
        with log_path.open("wb") as log:
            kam = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

        def state() -> str:
            out = subprocess.run(
                ["kamcmd", "-s", ctl, "dispatcher.list"], capture_output=True, text=True
            )
            m = re.search(r"FLAGS: (\w+)", out.stdout)
            return m.group(1) if m else ""

        def downs() -> list[float]:
            text = log_path.read_text(errors="replace")
            return [float(t) for t in re.findall(r"node down: .* at (\d+\.\d+)", text)]

        results: list[float] = []
        try:
            for trial in range(1, args.trials + 1):
                sipp = ["sipp", "-sf", str(UAS), "-i", NODE[0], "-p", str(NODE[1])]
                sipp += ["-set", "keep_running", "1", "-nostdin", "-timeout", "600s"]
                node = subprocess.Popen(
                    sipp,
                    cwd=tmp,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                wait(lambda: state().startswith("A"), 6 * args.interval, "the node up")
                time.sleep(random.uniform(0, args.interval))  # anywhere in the probe cycle
                before = len(downs())
                killed = time.time()
                node.send_signal(signal.SIGKILL)
                node.wait()
                wait(lambda: len(downs()) > before, 6 * args.interval, "the node down")  # noqa: B023
                results.append(downs()[-1] - killed)
                print(f"trial {trial}: marked down {results[-1]:.2f} s after the kill")
        finally:
            kam.terminate()
            kam.wait(15)

    bound = args.interval + args.timeout_ms / 1000
    print(
        f"\nPING_INTERVAL {args.interval} s, NODE_TIMEOUT {args.timeout_ms} ms, "
        f"{len(results)} trials: min {min(results):.2f} s, median "
        f"{statistics.median(results):.2f} s, max {max(results):.2f} s "
        f"(bound: interval + timeout = {bound:.1f} s)"
    )
    return 0 if max(results) <= bound + 1 else 1


if __name__ == "__main__":
    sys.exit(main())
