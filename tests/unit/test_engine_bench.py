"""The engine benchmark's fake ARI server speaks what the daemon's real client sends.

``benchmarks/engine.py`` measures the daemon against this fake; if the fake misread a
request (a RESTRequest frame, a query, Basic auth) the daemon's calls would fail and the
figures would be of failures.  A real ``AriClient`` drives it here over a real socket.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from callflow.ari import AriClient, AriConfig
from callflow.ari.faults import AriHTTPError
from callflow.ari.websocket import TransportMode
from tests.support.bench_module import bench_module
from tests.support.polling import wait_until

bench = bench_module("engine")


def _has(events: list[dict[str, Any]], kind: str, channel_id: str) -> bool:
    return any(
        e["type"] == kind and (e.get("channel") or {}).get("id") == channel_id for e in events
    )


def _played(events: list[dict[str, Any]], channel_id: str) -> bool:
    return any(
        e["type"] == "PlaybackFinished" and e["playback"]["target_uri"] == f"channel:{channel_id}"
        for e in events
    )


@pytest.mark.parametrize(
    ("mode", "way", "lanes"),
    [
        ("auto", "websocket", 0),
        # The daemon's default: a REST lane beside the events socket (a socket of its own,
        # which must get neither the events nor the other socket's answers).
        ("auto", "websocket", 1),
        ("http", "http", 0),
    ],
)
async def test_the_fake_serves_a_call_of_a_real_client(
    mode: TransportMode, way: str, lanes: int
) -> None:
    fake = bench.AriServer("secret-pw")
    port = bench.free_port()
    config = AriConfig(
        url=f"http://127.0.0.1:{port}",
        app="callflow",
        username="bench",
        password="secret-pw",
        transport=mode,
        rest_lanes=lanes,
    )
    events: list[dict[str, Any]] = []
    async with fake.serving(port), AriClient(config) as client:

        async def pump() -> None:
            async for event in client.events():
                events.append(event)

        task = asyncio.create_task(pump())
        try:
            await wait_until(lambda: any(e["type"] == "CallflowConnected" for e in events), 10)
            assert client.rest_transport == way  # auto: the fake answered the ping probe
            await wait_until(lambda: client.rest_lanes_open == lanes, 10)
            cid = fake.offer()
            await wait_until(lambda: _has(events, "StasisStart", cid), 10)
            await client.answer(cid)
            assert cid in fake.answered
            await client.play(cid, "sound:vm-intro")
            await wait_until(lambda: _played(events, cid), 10)
            await client.set_variable(cid, "BENCH", "1")
            assert await client.get_variable(cid, "BENCH") == "1"
            with pytest.raises(AriHTTPError):  # an error status comes back as one
                await client.get_variable(cid, "MISSING")
            await client.hangup(cid)
            await wait_until(lambda: _has(events, "ChannelDestroyed", cid), 10)
            assert fake.live == 0
            assert fake.kinds["POST channels/*/answer"] == 1
            assert fake.kinds["DELETE channels/*"] == 1
            other = "http" if way == "websocket" else "websocket"
            assert fake.by_transport[way] >= 6 and fake.by_transport[other] == 0
        finally:
            await client.close()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)


async def test_the_fake_refuses_a_wrong_password() -> None:
    fake = bench.AriServer("secret-pw")
    port = bench.free_port()
    config = AriConfig(
        url=f"http://127.0.0.1:{port}",
        app="callflow",
        username="bench",
        password="wrong",
        transport="http",
    )
    async with fake.serving(port), AriClient(config) as client:
        with pytest.raises(AriHTTPError):
            await client.answer("nobody")
    assert fake.by_transport["http"] == 0
