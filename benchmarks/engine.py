#!/usr/bin/env python3
"""The daemon's own ceiling, with no Asterisk: a fake ARI server feeds the real daemon.

    .venv/bin/python benchmarks/engine.py [--rates 100,200,...] [--holds 1000,5000]
                                          [--no-shedding] [--transport auto|websocket|http]
                                          [--checkout DIR]

The fake Asterisk runs in this process: an aiohttp server on 127.0.0.1 with ARI's events
websocket and its REST routes, over HTTP and as ``RESTRequest`` frames on the websocket
(what Asterisk 22 does).  Its channel state and answers are those of the unit tests' fake
(``tests/support/fake_asterisk.py``).  The daemon is the real one, ``callflow run``, in its
own process with a temporary configuration and its defaults: SQLite call log, /metrics on,
overload shedding on, ``[ari] transport = auto`` (AMI off: there is no AMI here).  Running it
apart is what lets its CPU and memory be read alone, from /proc.

The flow is a small IVR: answer, a prompt, a menu; key 1 hangs up.  It prints:

1. call setups per second: calls offered (``StasisStart``) at rising ``--rates`` for
   ``--seconds`` each; the caller presses 1 one second after the answer.  Setup latency is
   ``StasisStart`` sent → ``answer`` request received.  A rate is kept up when every call
   is answered (none shed, none failed) with p99 setup ≤ 1 s (the daemon's own
   ``max_answer_latency``); the first rate that is not ends the climb;
2. concurrent calls: on a fresh daemon, ``--holds`` calls answered and left waiting in the
   menu, and the daemon's CPU (percent of one core) while it holds them, idle;
3. memory per idle call: the daemon's RSS while holding N calls, minus its RSS after a
   warm-up with no call, divided by N.

The fake's own CPU is printed too: on a small machine it shares the cores with the daemon,
and when it nears 100 % the ceiling found is the fake's, not the daemon's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import aiohttp
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.fake_asterisk import FakeAsterisk  # noqa: E402

APP = "callflow"
USER = "bench"
# The IVR: a prompt, a menu, key 1 hangs up; {timeout} is how long the menu waits for a key.
FLOW = """\
version: 1
flow: bench
numbers: ["100"]
timezone: Europe/Paris
fallback: secretariat
destinations:
  secretariat: {{endpoint: PJSIP/accueil, ring: 6s}}
start: menu
steps:
  menu:
    menu:
      prompt: vm-intro
      options: {{"1": bye}}
      timeout: {timeout}s
      attempts: 1
    failed: bye
  bye:
    hangup: {{}}
"""
PLAY_TIME = 0.5  # seconds the fake takes to play the prompt
PRESS_AFTER = 1.0  # seconds after the answer the caller presses 1 (setup test)
HOLD_TIMEOUT = 3600  # the menu's wait in the hold test: nobody presses


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (every thread) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def shed_counts(metrics: str) -> Counter[str]:
    """``callflow_calls_shed_total`` by reason, from the daemon's /metrics text."""
    out: Counter[str] = Counter()
    for line in metrics.splitlines():
        if line.startswith("callflow_calls_shed_total{"):
            labels, value = line.rsplit(" ", 1)
            reason = labels.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] = int(float(value))
    return out


def worst_lag(metrics: str) -> float:
    """``callflow_event_loop_lag_seconds``: the worst loop lag since the previous scrape."""
    for line in metrics.splitlines():
        if line.startswith("callflow_event_loop_lag_seconds "):
            return float(line.split()[1])
    return float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class AriServer:
    """ARI on 127.0.0.1: the events websocket and REST, over HTTP and over the socket.

    The state machine is the unit tests' ``FakeAsterisk``; this adds the wire (JSON frames,
    Basic auth, ``GET asterisk/ping`` for the daemon's transport probe) and what the
    benchmark reads: when each call was offered and answered, and how each request came.
    """

    def __init__(self, password: str) -> None:
        self.core = FakeAsterisk(sink=self._send, play_time=PLAY_TIME)
        self._auth = "Basic " + base64.b64encode(f"{USER}:{password}".encode()).decode()
        self._out: asyncio.Queue[str] = asyncio.Queue()
        self._ws: web.WebSocketResponse | None = None
        self.connected = asyncio.Event()
        self.offered: dict[str, float] = {}
        self.answered: dict[str, float] = {}
        self.continued: set[str] = set()
        self.press_on_answer = True
        self.by_transport: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()  # "POST channels/*/answer", ...
        self._ids = 0
        self._runner: web.AppRunner | None = None

    @contextlib.asynccontextmanager
    async def serving(self, port: int) -> AsyncIterator[None]:
        app = web.Application()
        app.router.add_get("/ari/events", self._events)
        app.router.add_route("*", "/ari/{tail:.*}", self._http)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield
        finally:
            await runner.cleanup()

    # -- driving calls ---------------------------------------------------------------------

    def offer(self) -> str:
        """A caller enters the application: ``StasisStart`` goes to the daemon now."""
        self._ids += 1
        cid = f"bench-{self._ids}"
        channel = self.core.add_caller(cid)
        self.offered[cid] = time.perf_counter()
        self._send({"type": "StasisStart", "application": APP, "args": [], "channel": channel})
        return cid

    def press_all(self) -> None:
        for cid in list(self.core.channels):
            self.core.press(cid, "1")

    @property
    def live(self) -> int:
        return len(self.core.channels)

    # -- the wire --------------------------------------------------------------------------

    def _send(self, event: dict[str, Any]) -> None:
        self._out.put_nowait(json.dumps(event))

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != self._auth:
            return web.Response(status=401, text='{"message": "Authentication required"}')
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        # The application's socket carries the events; a REST lane's (an application of
        # its own, e.g. callflow-rest1) only the answers to the requests sent on it, as
        # in Asterisk.  Each socket has its own queue: a shared one split the frames.
        main = request.query.get("app") == APP
        out: asyncio.Queue[str] = self._out if main else asyncio.Queue()
        if main:
            self._ws = ws
            self.connected.set()
        writer = asyncio.create_task(self._write(ws, out))
        try:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    frame = json.loads(msg.data)
                    if frame.get("type") == "RESTRequest":
                        await self._socket_request(frame, out)
        finally:
            writer.cancel()
            if main:
                self.connected.clear()
        return ws

    async def _write(self, ws: web.WebSocketResponse, out: asyncio.Queue[str]) -> None:
        while True:
            data = await out.get()
            await ws.send_str(data)

    async def _socket_request(self, frame: dict[str, Any], out: asyncio.Queue[str]) -> None:
        uri = urlsplit("/" + str(frame["uri"]))
        body = frame.get("message_body")
        status, raw = await self._serve(
            "websocket",
            str(frame["method"]),
            uri.path,
            dict(parse_qsl(uri.query)),
            json.loads(body) if body else None,
        )
        reply: dict[str, Any] = {
            "type": "RESTResponse",
            "request_id": frame["request_id"],
            "status_code": status,
            "reason_phrase": "OK" if status < 300 else "Error",
            "uri": frame["uri"],
        }
        if raw:
            reply["content_type"] = "application/json"
            reply["message_body"] = raw.decode()
        out.put_nowait(json.dumps(reply))

    async def _http(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != self._auth:
            return web.Response(status=401, text='{"message": "Authentication required"}')
        body = await request.json() if request.can_read_body else None
        path = "/" + request.match_info["tail"]
        status, raw = await self._serve("http", request.method, path, dict(request.query), body)
        if not raw:
            return web.Response(status=status)
        return web.Response(status=status, body=raw, content_type="application/json")

    async def _serve(
        self, way: str, method: str, path: str, params: dict[str, str], body: Any
    ) -> tuple[int, bytes]:
        self.by_transport[way] += 1
        seg = [unquote(s) for s in path.strip("/").split("/")]
        kind = "/".join(
            "*" if i == 1 and seg[0] in ("channels", "playbacks") else s for i, s in enumerate(seg)
        )
        self.kinds[f"{method} {kind}"] += 1
        if (method, seg) == ("GET", ["asterisk", "ping"]):
            pong = {
                "asterisk_id": "bench",
                "ping": "pong",
                "timestamp": datetime.now(UTC).isoformat(),
            }
            return 200, json.dumps(pong).encode()
        resp = await self.core.request(method, path, params, body, timeout=10)
        if resp.status < 300 and len(seg) == 3 and seg[0] == "channels":
            cid = seg[1]
            if seg[2] == "answer" and method == "POST":
                self.answered.setdefault(cid, time.perf_counter())
                if self.press_on_answer:
                    self.core.press(cid, "1", after=PRESS_AFTER)
            elif seg[2] == "continue":  # shed or fallback: the dialplan takes the call away
                self.continued.add(cid)
                asyncio.get_running_loop().call_later(0.1, self.core.vanish, cid)
        return resp.status, resp.body


# -- the daemon -----------------------------------------------------------------------------


@dataclass
class DaemonProcess:
    workdir: Path
    ari_port: int
    transport: str
    password: str
    menu_timeout: int
    shedding: bool = True
    checkout: Path = REPO  # whose callflow the daemon runs (``-m`` imports it from its cwd)
    proc: subprocess.Popen[bytes] | None = None
    logged: Counter[str] | None = None  # outcomes in the call log, read after the stop

    def start(self) -> None:
        flows = self.workdir / "flows"
        flows.mkdir(parents=True, exist_ok=True)
        (flows / "bench.yaml").write_text(FLOW.format(timeout=self.menu_timeout))
        self.http_port = free_port()
        config = self.workdir / "callflow.toml"
        config.write_text(
            f'[ari]\nurl = "http://127.0.0.1:{self.ari_port}"\napp = "{APP}"\n'
            f'username = "{USER}"\npassword_env = "CALLFLOW_ARI_PASSWORD"\n'
            f'transport = "{self.transport}"\n'
            "[ami]\nenabled = false\n"
            f'[flows]\ndir = "{flows}"\ndefault = "bench"\n'
            '[daemon]\nlog_level = "WARNING"\nstop_grace = 5.0\nstate_dir = "var"\n'
            f'[http]\nenabled = true\nlisten = "127.0.0.1:{self.http_port}"\n'
            f"[overload]\nenabled = {str(self.shedding).lower()}\n"
        )
        env = dict(os.environ, CALLFLOW_ARI_PASSWORD=self.password, PYTHONUNBUFFERED="1")
        self.log = self.workdir / "daemon.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "callflow.cli", "run", "--config", str(config)],
                cwd=self.checkout,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def outcomes(self) -> Counter[str]:
        db = self.workdir / "var" / "callflow.db"
        with contextlib.closing(sqlite3.connect(db)) as conn:
            return Counter(dict(conn.execute("SELECT outcome, count(*) FROM calls GROUP BY 1")))

    async def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        async with aiohttp.ClientSession() as s, s.get(url) as r:
            return await r.text()


async def until(check: Any, limit: float, what: str, step: float = 0.05) -> bool:
    end = time.monotonic() + limit
    while not check():
        if time.monotonic() > end:
            print(f"  (gave up waiting for {what} after {limit:g} s)")
            return False
        await asyncio.sleep(step)
    return True


@contextlib.asynccontextmanager
async def daemon_with_fake(
    transport: str, menu_timeout: int, shedding: bool, checkout: Path = REPO
) -> AsyncIterator[tuple[AriServer, DaemonProcess]]:
    password = secrets.token_urlsafe(16)
    fake = AriServer(password)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="callflow-engine-bench-") as tmp:
        async with fake.serving(port):
            daemon = DaemonProcess(
                Path(tmp), port, transport, password, menu_timeout, shedding, checkout
            )
            daemon.start()
            try:
                if not await until(fake.connected.is_set, 60, "the daemon to connect"):
                    raise RuntimeError(daemon.log.read_text()[-3000:])
                # Connected: the probe and the recovery's GET applications come first.
                await until(lambda: fake.kinds["GET applications/callflow"] > 0, 30, "recovery")
                yield fake, daemon
            finally:
                code = daemon.stop()
                daemon.logged = daemon.outcomes()  # the call log, once every record is in
                if code != 0:
                    print(f"  daemon exit code {code}; log tail:\n{daemon.log.read_text()[-2000:]}")


async def offer_at(fake: AriServer, rate: float, count: int) -> list[str]:
    """Offer ``count`` calls at ``rate`` per second (in 10 ms batches); their ids."""
    ids: list[str] = []
    t0 = time.perf_counter()
    while len(ids) < count:
        due = min(count, int((time.perf_counter() - t0) * rate) + 1)
        while len(ids) < due:
            ids.append(fake.offer())
        await asyncio.sleep(0.01)
    return ids


# -- 1. setups per second -------------------------------------------------------------------


@dataclass
class RateRow:
    rate: int
    offered: int
    answered: int
    shed: int
    p50: float
    p99: float
    daemon_cpu: float  # percent of one core
    fake_cpu: float
    why_shed: str = ""
    cpu_ms: float = 0.0  # daemon CPU (every thread) per call offered, milliseconds

    @property
    def kept_up(self) -> bool:
        return self.answered == self.offered and self.shed == 0 and self.p99 <= 1.0


async def setups(
    fake: AriServer, daemon: DaemonProcess, rates: list[int], seconds: float
) -> list[RateRow]:
    rows: list[RateRow] = []
    shed_before = shed_counts(await daemon.metrics())
    for rate in rates:
        count = int(rate * seconds)
        d0, f0, t0 = cpu_seconds(daemon.pid), time.process_time(), time.perf_counter()
        ids = await offer_at(fake, rate, count)
        await until(lambda: fake.live == 0, 60 + seconds, "every call to end")
        wall = time.perf_counter() - t0
        dcpu, fcpu = cpu_seconds(daemon.pid) - d0, time.process_time() - f0
        lat = [fake.answered[c] - fake.offered[c] for c in ids if c in fake.answered]
        shed = sum(1 for c in ids if c in fake.continued)
        row = RateRow(
            rate,
            count,
            len(lat),
            shed,
            pct(lat, 0.5),
            pct(lat, 0.99),
            100 * dcpu / wall,
            100 * fcpu / wall,
            cpu_ms=1e3 * dcpu / count,
        )
        shed_now = shed_counts(await daemon.metrics())
        row.why_shed = ", ".join(f"{k} {n}" for k, n in (shed_now - shed_before).items())
        shed_before = shed_now
        rows.append(row)
        print(
            f"  {rate:>5}/s: offered {count}, answered {len(lat)}, shed {shed}, "
            f"p50 {row.p50 * 1e3:.1f} ms, p99 {row.p99 * 1e3:.1f} ms, "
            f"daemon {row.daemon_cpu:.0f} % ({row.cpu_ms:.2f} ms per call), "
            f"fake {row.fake_cpu:.0f} %" + (f" (shed by {row.why_shed})" if row.why_shed else ""),
            flush=True,
        )
        if not row.kept_up:
            break
        await asyncio.sleep(1.0)  # the loop-lag and latency signals settle
    return rows


# -- 2 and 3. held calls --------------------------------------------------------------------


@dataclass
class HoldRow:
    calls: int  # answered and waiting in the menu
    offered: int
    shed: int
    cpu: float  # percent of one core while holding them
    rss: int
    base_rss: int
    lag: float  # worst event-loop lag while holding them, seconds
    why_shed: str = ""

    @property
    def per_call(self) -> float:
        return (self.rss - self.base_rss) / self.calls


async def holds(
    fake: AriServer, daemon: DaemonProcess, levels: list[int], rate: int, window: float
) -> tuple[float, int, list[HoldRow]]:
    # Warm up (code paths, the call log's first writes), then the empty daemon's figures.
    await offer_at(fake, 50, 100)
    await until(lambda: fake.live == 0, 60, "the warm-up calls to end")
    await asyncio.sleep(3.0)
    d0 = cpu_seconds(daemon.pid)
    await asyncio.sleep(window)
    idle_cpu = 100 * (cpu_seconds(daemon.pid) - d0) / window
    base = rss_bytes(daemon.pid)
    print(f"  no call: CPU {idle_cpu:.1f} %, RSS {base / 2**20:.1f} MiB", flush=True)
    fake.press_on_answer = False
    shed_before = shed_counts(await daemon.metrics())
    offered: list[str] = []
    rows: list[HoldRow] = []
    for level in levels:
        # Offer until ``level`` calls are answered and live: a call the daemon sheds while
        # they pour in (its overload budgets) is replaced, and counted.
        for _ in range(20):
            missing = level - sum(1 for c in offered if c in fake.answered)
            if missing <= 0:
                break
            offered += await offer_at(fake, rate, missing)
            batch = set(offered)

            def settled(batch: set[str] = batch) -> bool:
                done = len(batch & fake.answered.keys()) + len(batch & fake.continued)
                return done == len(batch)

            await until(settled, 120, "every offered call to be answered or shed", step=0.5)
        # Every prompt over: all of them waiting for a key.
        await until(lambda: not fake.core.playbacks, 60, "every prompt to end")
        await asyncio.sleep(2.0)
        worst_lag(await daemon.metrics())  # the scrape starts the window of the worst lag
        d0 = cpu_seconds(daemon.pid)
        await asyncio.sleep(window)
        cpu = 100 * (cpu_seconds(daemon.pid) - d0) / window
        lag = worst_lag(await daemon.metrics())
        held = [c for c in offered if c in fake.answered and c in fake.core.channels]
        shed = sum(1 for c in offered if c in fake.continued)
        row = HoldRow(len(held), len(offered), shed, cpu, rss_bytes(daemon.pid), base, lag)
        shed_now = shed_counts(await daemon.metrics())
        row.why_shed = ", ".join(f"{k} {n}" for k, n in (shed_now - shed_before).items())
        shed_before = shed_now
        rows.append(row)
        print(
            f"  holding {row.calls} (offered {len(offered)}): shed {shed}, CPU {cpu:.1f} %, "
            f"RSS {row.rss / 2**20:.1f} MiB ({row.per_call / 1024:.1f} KiB per call), "
            f"worst loop lag {lag * 1e3:.0f} ms"
            + (f" (shed by {row.why_shed})" if row.why_shed else ""),
            flush=True,
        )
    fake.press_all()  # everyone presses 1: the IVR hangs up
    await until(lambda: fake.live == 0, 120, "the held calls to end")
    return idle_cpu, base, rows


# -- the run --------------------------------------------------------------------------------


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", default="100,200,300,400,500,600,800,1000,1300,1600")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds offered per rate")
    p.add_argument("--holds", default="1000,5000", help="calls held at once, rising")
    p.add_argument("--hold-rate", type=int, default=200, help="calls/s while filling holds")
    p.add_argument("--window", type=float, default=10.0, help="seconds CPU is read over")
    p.add_argument("--transport", default="auto", choices=["auto", "websocket", "http"])
    p.add_argument(
        "--no-shedding",
        action="store_true",
        help="[overload] enabled = false: the raw ceiling, past the shedding budgets",
    )
    p.add_argument(
        "--checkout",
        type=Path,
        default=REPO,
        help="run the daemon of this checkout (e.g. a git worktree of main: the baseline)",
    )
    args = p.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    levels = [int(n) for n in args.holds.split(",")]
    started = datetime.now(UTC)
    load0 = load_average()

    print("1. call setups per second (StasisStart -> answer request)", flush=True)
    checkout = args.checkout.resolve()
    print(f"daemon from {checkout}", flush=True)
    async with daemon_with_fake(args.transport, 5, not args.no_shedding, checkout) as (
        fake,
        daemon,
    ):
        rate_rows = await setups(fake, daemon, rates, args.seconds)
        ways = dict(fake.by_transport)
        served = max(1, len(fake.answered))  # per call the daemon ran (not shed)
        per_call = {k: n / served for k, n in fake.kinds.items() if n >= served // 2}
        metrics = await daemon.metrics()
    setup_log = daemon.logged or Counter[str]()

    print("2, 3. calls held idle in the menu (a fresh daemon)", flush=True)
    async with daemon_with_fake(args.transport, HOLD_TIMEOUT, not args.no_shedding, checkout) as (
        fake,
        daemon,
    ):
        idle_cpu, base, hold_rows = await holds(fake, daemon, levels, args.hold_rate, args.window)
    hold_log = daemon.logged or Counter[str]()

    # -- the table -------------------------------------------------------------------------
    kept = [r.rate for r in rate_rows if r.kept_up]
    ceiling = max(kept) if kept else 0
    broke = next((r for r in rate_rows if not r.kept_up), None)
    top_hold = hold_rows[-1] if hold_rows else None
    print()
    print(
        f"callflow engine benchmark, {started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"python {sys.version.split()[0]}, load average {load0} at start, "
        f"{load_average()} at end"
    )
    way = max(ways, key=lambda k: ways[k]) if ways else "?"
    print(
        f"REST from the daemon: {ways} (transport setting {args.transport!r}: the daemon "
        f"used the {way})"
    )
    print(
        "REST requests per answered call: "
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(per_call.items()))
    )
    shedding = "off ([overload] enabled = false)" if args.no_shedding else "on (defaults)"
    print(f"overload shedding: {shedding}")
    print(f"call log (SQLite), setup run: {dict(setup_log)}; hold run: {dict(hold_log)}")
    print(
        "metrics on: "
        + ("yes" if "callflow_calls_total" in metrics else "NO (callflow_calls_total missing)")
    )
    print()
    print(
        "| rate offered | calls | answered | shed | setup p50 ms | setup p99 ms "
        "| daemon CPU % | daemon CPU ms/call | fake CPU % | shed by |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rate_rows:
        print(
            f"| {r.rate}/s | {r.offered:,} | {r.answered:,} | {r.shed} | {r.p50 * 1e3:.1f} | "
            f"{r.p99 * 1e3:.1f} | {r.daemon_cpu:.0f} | {r.cpu_ms:.2f} | {r.fake_cpu:.0f} "
            f"| {r.why_shed or '–'} |"
        )
    print()
    print(
        "| calls held idle | offered to fill | shed while filling | daemon CPU % of a core "
        "| worst loop lag ms | RSS MiB | KiB per call |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| 0 | – | – | {idle_cpu:.1f} | – | {base / 2**20:.1f} | – |")
    for h in hold_rows:
        print(
            f"| {h.calls:,} | {h.offered:,} | {h.shed} | {h.cpu:.1f} | {h.lag * 1e3:.0f} "
            f"| {h.rss / 2**20:.1f} | "
            f"{h.per_call / 1024:.1f} |"
        )
    print()
    print("| target | measured | met |")
    print("| --- | --- | --- |")
    why = f" (broke at {broke.rate}/s)" if broke else " (highest rate tried)"
    print(
        f"| ≥ 500 call setups/s | {ceiling}/s kept up{why} | {'yes' if ceiling >= 500 else 'no'} |"
    )
    if top_hold is not None:
        # The daemon's calls all run on one event loop: what it holds, it holds on one core.
        fits = top_hold.calls >= 5000 and top_hold.cpu < 100
        print(
            f"| ≥ 5,000 concurrent calls per core | {top_hold.calls:,} held on one event "
            f"loop at {top_hold.cpu:.1f} % of a core | {'yes' if fits else 'no'} |"
        )
        kib = top_hold.per_call / 1024
        print(
            f"| ≤ 50 KB per idle call | {kib:.1f} KiB "
            f"| {'yes' if top_hold.per_call <= 50_000 else 'no'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
