#!/usr/bin/env python3
"""Benchmark of ARI's REST transports: the HTTP keep-alive pool (the baseline) against REST
over the events websocket, on a real Asterisk (the sandbox: ``scripts/asterisk-sandbox up``),
in the same run.

For each transport and each request kind, ``--concurrency`` tasks send ``--requests``
requests in all through a real ``AriClient`` (``[ari] transport`` = http or websocket), and
it prints the throughput, the p50 / p99 latency of one request, the client's CPU time per
request, and the ratio to the HTTP pool.  Each measurement is preceded by a warm-up.

Request kinds: ``ping`` (``GET /asterisk/ping``: Asterisk's cheapest answer) and
``variable`` (``POST`` then ``GET /asterisk/variable``: a global variable set and read,
work in Asterisk's core like a channel operation, with no call needed).

    python benchmarks/ari_transport.py [--requests 4000] [--concurrency 50] [--pool 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from callflow.ari.client import AriClient, AriConfig  # noqa: E402
from callflow.ari.websocket import TransportMode  # noqa: E402

Op = Callable[[AriClient, int], Awaitable[object]]


async def ping(client: AriClient, n: int) -> object:
    return await client.request("GET", "/asterisk/ping")


async def variable(client: AriClient, n: int) -> object:
    name = "CALLFLOW_BENCH"
    if n % 2:
        return await client.request("GET", "/asterisk/variable", params={"variable": name})
    params = {"variable": name, "value": str(n)}
    return await client.request("POST", "/asterisk/variable", params=params)


OPS: dict[str, Op] = {"ping": ping, "variable": variable}


@dataclass
class Result:
    transport: str
    op: str
    requests: int
    errors: int
    seconds: float
    cpu: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run(client: AriClient, op: Op, total: int, concurrency: int) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))

    async def worker() -> None:
        nonlocal errors
        for n in counter:
            t0 = time.perf_counter()
            try:
                await op(client, n)
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


async def measure(mode: TransportMode, args: argparse.Namespace, password: str) -> list[Result]:
    config = AriConfig(
        url=args.url,
        app="callflow-bench",
        username=args.user,
        password=password,
        pool_size=args.pool,
        transport=mode,
        request_timeout=30.0,
    )
    results: list[Result] = []
    async with AriClient(config) as client:
        connected = asyncio.Event()

        async def pump() -> None:  # the events socket: answers come back on it
            async for event in client.events():
                if event["type"] == "CallflowConnected":
                    connected.set()

        reader = asyncio.ensure_future(pump())
        try:
            await asyncio.wait_for(connected.wait(), 30)
            if client.rest_transport != mode:
                raise SystemExit(f"asked for {mode}, the client uses {client.rest_transport}")
            for name in args.ops:
                op = OPS[name]
                await run(client, op, max(200, args.requests // 10), args.concurrency)
                cpu0, t0 = time.process_time(), time.perf_counter()
                latencies, errors = await run(client, op, args.requests, args.concurrency)
                seconds = time.perf_counter() - t0
                cpu = time.process_time() - cpu0
                results.append(Result(mode, name, len(latencies), errors, seconds, cpu, latencies))
        finally:
            await client.close()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    return results


def table(results: list[Result]) -> str:
    head = (
        f"{'request':<9} {'transport':<10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'CPU µs/req':>10} {'errors':>6}  vs HTTP pool"
    )
    lines = [head, "-" * len(head)]
    base = {r.op: r for r in results if r.transport == "http"}
    for r in sorted(results, key=lambda r: (r.op, r.transport != "http")):
        b = base.get(r.op)
        vs = "baseline"
        if b is not None and r is not b:
            cpu_ratio = (r.cpu / max(1, r.requests)) / (b.cpu / max(1, b.requests))
            vs = (
                f"throughput x{r.rate / b.rate:.2f}, p50 x{r.pct(0.5) / b.pct(0.5):.2f}, "
                f"p99 x{r.pct(0.99) / b.pct(0.99):.2f}, CPU x{cpu_ratio:.2f}"
            )
        lines.append(
            f"{r.op:<9} {r.transport:<10} {r.rate:>8.0f} {r.pct(0.5):>8.2f} {r.pct(0.99):>8.2f} "
            f"{r.cpu / max(1, r.requests) * 1e6:>10.0f} {r.errors:>6}  {vs}"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8088")
    parser.add_argument("--user", default="callflow")
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--pool", type=int, default=20, help="HTTP pool size ([ari] pool_size)")
    parser.add_argument("--ops", nargs="+", choices=sorted(OPS), default=["ping", "variable"])
    args = parser.parse_args()
    # The sandbox's test password unless the environment says otherwise.
    password = os.environ.get("CALLFLOW_ARI_PASSWORD", "callflow-test")
    results: list[Result] = []
    for mode in ("http", "websocket"):
        results += await measure(mode, args, password)
    print(
        f"ARI REST transports, {args.requests} requests per row, {args.concurrency} at once, "
        f"HTTP pool of {args.pool}; {os.cpu_count()} CPUs, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    print(table(results))


if __name__ == "__main__":
    asyncio.run(main())
