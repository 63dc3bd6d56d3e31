"""REST lanes: more websockets beside the events socket carry the REST requests, each
channel's in order on one of them, an emergency line's on a lane of its own; a lane that
drops fails its own requests, typed, and comes back.  A real AriClient against the
in-process Asterisk of ``tests.support.ws_asterisk``."""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from callflow.ari import AriClient, AriConfig, AriSocketDropped, AriTimeout
from callflow.ari.overload import go_first
from callflow.metrics.parts import Probes, ScrapeTime
from callflow.settings import AriSettings, SettingsError
from tests.support.polling import wait_until
from tests.support.ws_asterisk import APP, Asterisk, serve


@pytest.fixture
async def pbx() -> AsyncIterator[Asterisk]:
    async with serve() as fake:
        yield fake


def config(url: str, **overrides: Any) -> AriConfig:
    values: dict[str, Any] = {
        "app": APP,
        "username": "u",
        "password": "p",
        "transport": "websocket",
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
    }
    values.update(overrides)
    return AriConfig(url=url, **values)


class Pumped:
    """A client whose events are read, as the daemon's pump does."""

    def __init__(self, client: AriClient) -> None:
        self.client = client
        self.events: list[dict[str, Any]] = []
        self.task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        async for event in self.client.events():
            self.events.append(event)

    async def close(self) -> None:
        await self.client.close()
        await asyncio.wait_for(self.task, 10)


@pytest.fixture
async def lanes(pbx: Asterisk) -> AsyncIterator[AriClient]:
    """A connected client with three lanes open: two for the calls, one for emergencies."""
    pumped = Pumped(AriClient(config(pbx.url, rest_lanes=3)))
    await wait_until(lambda: pumped.client.rest_lanes_open == 3, 10)
    yield pumped.client
    await pumped.close()


@pytest.fixture
async def gated(pbx: Asterisk) -> AsyncIterator[AriClient]:
    """A connected client with three lanes that cannot open until ``pbx.lane_gate`` is set
    (their handshakes hang): meanwhile every request goes over the events socket."""
    pbx.lane_gate = asyncio.Event()
    pumped = Pumped(AriClient(config(pbx.url, rest_lanes=3)))
    await wait_until(lambda: bool(pumped.events), 10)
    yield pumped.client
    await pumped.close()


def open_lanes(pbx: Asterisk) -> None:
    """Let the lanes of ``gated`` open."""
    assert pbx.lane_gate is not None
    pbx.lane_gate.set()


def app_of(pbx: Asterisk, uri: str) -> list[str]:
    """The applications whose sockets carried the requests for ``uri``, in order."""
    return [str(f["app"]) for f in pbx.frames if f["uri"] == uri]


def channel_on(count: int, number: int) -> str:
    """A channel id that ``count`` lanes send to lane ``number`` (0: the events socket)."""
    for n in range(10_000):
        key = f"chan-{n}"
        if zlib.crc32(key.encode()) % count == number:
            return key
    raise AssertionError("no such channel id")


async def test_lanes_open_beside_the_events_socket_each_for_an_application_of_its_own(
    pbx: Asterisk, lanes: AriClient
) -> None:
    assert len(pbx.sockets) == 1  # the events socket, of the application itself
    assert sorted(pbx.lanes) == ["callflow-rest1", "callflow-rest2", "callflow-rest3"]
    assert all(len(sockets) == 1 for sockets in pbx.lanes.values())


async def test_no_lane_opens_no_socket(pbx: Asterisk) -> None:
    pumped = Pumped(AriClient(config(pbx.url)))
    try:
        await wait_until(lambda: bool(pumped.events), 10)
        await pumped.client.answer("c1")
        assert pbx.lanes == {} and pumped.client.rest_lanes_open == 0
        assert app_of(pbx, "channels/c1/answer") == [APP]
    finally:
        await pumped.close()


async def test_each_channels_requests_take_one_socket_and_the_channels_spread(
    pbx: Asterisk, lanes: AriClient
) -> None:
    channels = [f"c{n}" for n in range(40)]
    for chan in channels:
        await lanes.answer(chan)
        await lanes.play(chan, "sound:hello")
        await lanes.hangup(chan)
    used = set()
    for chan in channels:
        apps = (
            app_of(pbx, f"channels/{chan}/answer")
            + app_of(pbx, f"channels/{chan}/play?media=sound%3Ahello")
            + app_of(pbx, f"channels/{chan}?reason=normal")
        )
        assert len(apps) == 3 and len(set(apps)) == 1, (chan, apps)
        used.add(apps[0])
    # The events socket and the first two lanes share the calls; the last lane is kept
    # for the emergency lines.
    assert used == {APP, "callflow-rest1", "callflow-rest2"}


async def test_an_emergency_lines_requests_take_the_last_lane(
    pbx: Asterisk, lanes: AriClient
) -> None:
    async def emergency_call() -> None:
        go_first()  # as the call service does in an emergency call's task
        await lanes.answer("c-urgent")
        await lanes.hangup("c-urgent")

    await asyncio.ensure_future(emergency_call())
    assert app_of(pbx, "channels/c-urgent/answer") == ["callflow-rest3"]
    assert app_of(pbx, "channels/c-urgent?reason=normal") == ["callflow-rest3"]
    # Ordinary requests never wait behind on that lane: a held one on each other socket
    # does not delay the emergency's.
    pbx.hold = {f"channels/{channel_on(3, n)}/answer" for n in range(3)}
    held = [asyncio.ensure_future(lanes.answer(channel_on(3, n))) for n in range(3)]
    await wait_until(lambda: sum(f["uri"] in pbx.hold for f in pbx.frames) == 3)
    await asyncio.wait_for(asyncio.ensure_future(emergency_call()), 10)
    assert not any(h.done() for h in held)
    pbx.release.set()
    await asyncio.wait_for(asyncio.gather(*held), 10)


async def test_requests_of_no_channel_take_the_events_socket(
    pbx: Asterisk, lanes: AriClient
) -> None:
    await lanes.create_bridge(bridge_id="b1")
    assert app_of(pbx, "bridges?type=mixing&bridgeId=b1") == [APP]


async def test_a_lane_that_drops_fails_its_requests_and_comes_back(
    pbx: Asterisk, lanes: AriClient
) -> None:
    chan = channel_on(3, 1)  # lane 1's
    pbx.hold = {f"channels/{chan}/answer"}
    held = asyncio.ensure_future(lanes.answer(chan))
    await wait_until(lambda: app_of(pbx, f"channels/{chan}/answer") == ["callflow-rest1"])
    await pbx.lanes["callflow-rest1"][0].close()  # the lane drops
    with pytest.raises(AriSocketDropped) as info:
        await asyncio.wait_for(held, 10)
    assert "lane 1" in str(info.value)
    # The events socket and the other lanes are untouched, and the lane comes back.
    await wait_until(lambda: len(pbx.lanes["callflow-rest1"]) == 2, 10)
    await wait_until(lambda: lanes.rest_lanes_open == 3, 10)
    assert len(pbx.sockets) == 1 and lanes.connected
    pbx.hold = set()
    await lanes.hangup(chan)
    assert app_of(pbx, f"channels/{chan}?reason=normal") == ["callflow-rest1"]


async def test_while_its_lane_is_down_a_channel_goes_over_the_events_socket(
    pbx: Asterisk, gated: AriClient
) -> None:
    chan = channel_on(3, 2)
    await gated.answer(chan)
    assert app_of(pbx, f"channels/{chan}/answer") == [APP]
    open_lanes(pbx)
    await wait_until(lambda: gated.rest_lanes_open == 3, 10)
    await gated.hangup(chan)
    assert app_of(pbx, f"channels/{chan}?reason=normal") == ["callflow-rest2"]


async def test_a_channel_keeps_its_socket_while_one_of_its_requests_waits(
    pbx: Asterisk, gated: AriClient
) -> None:
    # Its lane opens while its first request waits on the events socket: the next request
    # goes after it on the same socket, not ahead of it on the lane.
    chan = channel_on(3, 1)
    pbx.hold = {f"channels/{chan}/answer"}
    held = asyncio.ensure_future(gated.answer(chan))
    await wait_until(lambda: app_of(pbx, f"channels/{chan}/answer") == [APP])
    open_lanes(pbx)
    await wait_until(lambda: gated.rest_lanes_open == 3, 10)
    play = asyncio.ensure_future(gated.play(chan, "sound:hello"))
    uri = f"channels/{chan}/play?media=sound%3Ahello"
    await wait_until(lambda: len(app_of(pbx, uri)) == 1)
    assert app_of(pbx, uri) == [APP]
    pbx.release.set()
    await asyncio.wait_for(asyncio.gather(held, play), 10)
    # Nothing of it waits any more: its own lane from now on.
    await gated.hangup(chan)
    assert app_of(pbx, f"channels/{chan}?reason=normal") == ["callflow-rest1"]


async def test_the_lanes_close_with_the_events_socket_and_open_again_with_it(
    pbx: Asterisk, lanes: AriClient
) -> None:
    chan = channel_on(3, 2)
    pbx.hold = {f"channels/{chan}/answer"}
    held = asyncio.ensure_future(lanes.answer(chan))
    await wait_until(lambda: app_of(pbx, f"channels/{chan}/answer") == ["callflow-rest2"])
    await pbx.sockets[0].close()  # Asterisk restarts, say
    with pytest.raises(AriSocketDropped):
        await asyncio.wait_for(held, 10)
    first = [sockets[0] for sockets in pbx.lanes.values()]
    await wait_until(lambda: all(ws.closed for ws in first), 10)
    await wait_until(lambda: len(pbx.sockets) == 2 and lanes.rest_lanes_open == 3, 10)
    assert all(len(sockets) == 2 for sockets in pbx.lanes.values())


async def test_closing_while_the_lanes_connect_leaves_no_socket_open(pbx: Asterisk) -> None:
    pbx.lane_gate = asyncio.Event()  # the lanes' handshakes hang
    pumped = Pumped(AriClient(config(pbx.url, rest_lanes=2)))
    await wait_until(lambda: bool(pumped.events), 10)
    await pumped.close()
    pbx.lane_gate.set()  # handshakes that come through now find no client
    await wait_until(lambda: all(ws.closed for ws in pbx.sockets), 10)
    await wait_until(lambda: all(ws.closed for sockets in pbx.lanes.values() for ws in sockets), 10)
    assert pumped.client.rest_lanes_open == 0


@pytest.mark.parametrize(
    ("lanes", "pool", "message"),
    [
        (17, 40, "rest_lanes must be between 0 and 16"),
        (-1, 20, "rest_lanes must be between 0 and 16"),
        (4, 6, "pool_size (6) must be at least rest_lanes + 3 (7)"),
    ],
)
def test_lanes_are_checked_against_the_pool(lanes: int, pool: int, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        config("http://127.0.0.1:8088", rest_lanes=lanes, pool_size=pool)
    with pytest.raises(SettingsError, match=re.escape(message)):
        AriSettings(rest_lanes=lanes, pool_size=pool)


def test_without_lanes_a_small_pool_is_still_accepted() -> None:
    assert config("http://127.0.0.1:8088", pool_size=1).rest_lanes == 0
    assert AriSettings(pool_size=1, rest_lanes=0).pool_size == 1
    # The daemon's default: one lane, the emergency lines' own.
    assert AriSettings().rest_lanes == 1


async def test_the_open_lanes_are_a_metric(pbx: Asterisk, lanes: AriClient) -> None:
    registry = CollectorRegistry()
    registry.register(ScrapeTime(Probes(ari_lanes_open=lambda: lanes.rest_lanes_open)))
    assert "callflow_ari_rest_lanes_open 3.0" in generate_latest(registry).decode()
    pbx.lane_gate = asyncio.Event()  # it cannot come back until the end
    await pbx.lanes["callflow-rest2"][0].close()
    await wait_until(
        lambda: "callflow_ari_rest_lanes_open 2.0" in generate_latest(registry).decode(), 10
    )


async def test_a_request_that_timed_out_keeps_its_channel_on_its_socket(
    pbx: Asterisk, gated: AriClient
) -> None:
    # Asterisk still carries out a request the daemon gave up on, after what was queued
    # before it: the channel's next requests must not overtake it on another socket.
    chan = channel_on(3, 1)
    pbx.hold = {f"channels/{chan}/answer"}
    with pytest.raises(AriTimeout):
        await gated.request("POST", f"/channels/{chan}/answer", key=chan, timeout=0.2)
    open_lanes(pbx)
    await wait_until(lambda: gated.rest_lanes_open == 3, 10)
    hangup = asyncio.ensure_future(gated.hangup(chan))
    uri = f"channels/{chan}?reason=normal"
    await wait_until(lambda: len(app_of(pbx, uri)) == 1)
    assert app_of(pbx, uri) == [APP]  # behind the answer, on the events socket
    pbx.release.set()  # Asterisk answers the old request at last
    await asyncio.wait_for(hangup, 10)
    rest = gated._socket_rest
    await wait_until(lambda: rest is not None and rest.pending == 0)
    await gated.ring(chan)  # nothing waits any more: its own lane
    assert app_of(pbx, f"channels/{chan}/ring") == ["callflow-rest1"]


class SlowClose:
    """A lane's socket whose closing takes ``delay`` s (a close handshake Asterisk reads
    only after the requests queued before it)."""

    def __init__(self, ws: Any, delay: float) -> None:
        self._ws = ws
        self._delay = delay

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)

    async def close(self) -> bool:
        await asyncio.sleep(self._delay)
        return bool(await self._ws.close())


async def test_requests_go_over_http_as_soon_as_the_events_socket_is_lost(
    pbx: Asterisk, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another program takes the application: the events socket and the lanes close; while
    # the lanes close, nothing may be sent to the events socket, which nobody reads.
    client = AriClient(config(pbx.url, rest_lanes=2, backoff_max=30.0))
    connect = client._connect_lane

    async def slow_lane(app: str) -> Any:
        return SlowClose(await connect(app), delay=2.0)

    monkeypatch.setattr(client, "_connect_lane", slow_lane)
    pumped = Pumped(client)
    try:
        await wait_until(lambda: client.rest_lanes_open == 2, 10)
        pbx.hold = {"channels/c9/answer"}
        waiting = asyncio.ensure_future(client.answer("c9"))
        await wait_until(lambda: len(app_of(pbx, "channels/c9/answer")) == 1)
        replaced = '{"type": "ApplicationReplaced", "application": "callflow"}'
        await pbx.sockets[0].send_str(replaced)
        with pytest.raises(AriSocketDropped):  # at once, not after the lanes' closing
            await asyncio.wait_for(waiting, 1.5)
        await asyncio.wait_for(client.request("POST", "/channels/c9/continue", key="c9"), 1.5)
        assert pbx.http == ["POST /channels/c9/continue"]
    finally:
        await pumped.close()
