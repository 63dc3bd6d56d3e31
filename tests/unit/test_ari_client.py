"""AriClient's HTTP transport and events websocket against an in-process aiohttp server.

The REST logic above the transport (helpers, answers, error mapping) is tested over the
fake Asterisk in test_ari_rest.py; here only what HTTP itself does."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from callflow.ari import (
    EVENT_CONNECTED,
    EVENT_DISCONNECTED,
    AriClient,
    AriConfig,
    AriConnectionError,
    AriNotFound,
    AriTimeout,
)
from callflow.ari.frames import decode as _decode
from callflow.ari.overload import go_first, goes_first

USER = "callflow"
PASSWORD = "s3cret-Pa55"
TOKEN = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

Responder = Callable[[web.Request], Awaitable[web.StreamResponse]]
# A websocket script: str/bytes frames are sent, a float sleeps that long; then the server
# closes cleanly (close=True) or holds the connection until the client goes away.
Frames = list[str | bytes | float]


@dataclass
class Recorded:
    method: str
    raw_path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: str


@dataclass
class Script:
    frames: Frames = field(default_factory=list)
    close: bool = True


async def _ok(request: web.Request) -> web.StreamResponse:
    return web.json_response({"ok": True})


class AriHttpServer:
    """Asterisk's HTTP server, for the transport: records raw REST requests (answered by
    ``responder``) and plays websocket scripts, one per connection."""

    def __init__(self) -> None:
        self.url = ""
        self.requests: list[Recorded] = []
        self.responder: Responder = _ok
        self.scripts: list[Script] = []
        self.default_script = Script(close=False)
        self.ws_reject: int | None = None
        self.ws_attempts = 0
        self.ws_requests: list[Recorded] = []
        self.sockets: list[web.WebSocketResponse] = []
        self.release = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_get("/ari/events", self._events)
        self.app.router.add_route("*", "/ari/{tail:.*}", self._rest)

    @staticmethod
    async def _record(request: web.Request) -> Recorded:
        return Recorded(
            request.method,
            request.raw_path.split("?")[0],
            dict(request.query),
            dict(request.headers),
            await request.text(),
        )

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(await self._record(request))
        return await self.responder(request)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        self.ws_attempts += 1
        self.ws_requests.append(await self._record(request))
        if self.ws_reject is not None:
            return web.json_response({"message": "nope"}, status=self.ws_reject)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        index = len(self.sockets) - 1
        script = self.scripts[index] if index < len(self.scripts) else self.default_script
        for frame in script.frames:
            if isinstance(frame, float):
                await asyncio.sleep(frame)
            elif isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)
        if script.close:
            await ws.close()
        else:
            async for _ in ws:
                pass
        return ws


@pytest.fixture
async def ari() -> AsyncIterator[AriHttpServer]:
    fake = AriHttpServer()
    runner = web.AppRunner(fake.app, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    fake.release.set()
    for ws in fake.sockets:
        await ws.close()
    await runner.cleanup()


def config(url: str, **overrides: Any) -> AriConfig:
    # HTTP and the events socket alone; REST over the socket: test_ari_websocket.py.
    values: dict[str, Any] = {
        "app": "callflow",
        "username": USER,
        "password": PASSWORD,
        "transport": "http",
    }
    values.update(overrides)
    return AriConfig(url=url, **values)


class FakeSleep:
    """Records each backoff delay; returns at once, or never when ``block``."""

    def __init__(self, *, block: bool = False) -> None:
        self.delays: list[float] = []
        self.block = block
        self.called = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.called.set()
        if self.block:
            await asyncio.Event().wait()
        await asyncio.sleep(0)


class MaxRng(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


class MinRng(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


class Clock:
    """A monotonic clock that moves ``step`` seconds at each reading."""

    def __init__(self, step: float = 0.0) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def take(events: AsyncIterator[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(5):
        while len(out) < n:
            out.append(await anext(events))
    return out


async def wait_until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not predicate():  # noqa: ASYNC110 - polls state the code under test owns
            await asyncio.sleep(0.005)


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


# -- config ----------------------------------------------------------------------------------


def test_repr_hides_the_password() -> None:
    cfg = config("http://127.0.0.1:8088")
    assert PASSWORD not in repr(cfg)
    assert PASSWORD not in str(cfg)
    assert "callflow" in repr(cfg)
    assert PASSWORD not in repr(AriClient(cfg))
    assert TOKEN not in repr(AriClient(cfg))


def test_config_urls() -> None:
    cfg = config("http://pbx:8088/")
    assert cfg.rest_url == "http://pbx:8088/ari"
    assert cfg.events_url == "ws://pbx:8088/ari/events"
    assert config("https://pbx:8089").events_url == "wss://pbx:8089/ari/events"


@pytest.mark.parametrize(
    "overrides",
    [
        {"url": "pbx:8088"},
        {"url": f"http://{USER}:{PASSWORD}@pbx:8088"},
        {"app": ""},
        {"username": "a:b"},
        {"pool_size": 0},
        {"request_timeout": 0},
        {"backoff_initial": 0},
        {"backoff_initial": 5.0, "backoff_max": 1.0},
    ],
)
def test_config_rejects_bad_values(overrides: dict[str, Any]) -> None:
    url = overrides.pop("url", "http://127.0.0.1:8088")
    with pytest.raises(ValueError) as info:
        config(url, **overrides)
    assert PASSWORD not in str(info.value)


# -- REST ------------------------------------------------------------------------------------


async def test_sends_basic_authorization_header(ari: AriHttpServer) -> None:
    async with AriClient(config(ari.url)) as client:
        assert await client.request("GET", "/asterisk/info") == {"ok": True}
    (req,) = ari.requests
    assert req.method == "GET"
    assert req.raw_path == "/ari/asterisk/info"
    assert req.headers["Authorization"] == f"Basic {TOKEN}"
    assert req.headers["Authorization"] == aiohttp.encode_basic_auth(USER, PASSWORD)


async def test_params_are_encoded_for_ari(ari: AriHttpServer) -> None:
    async with AriClient(config(ari.url)) as client:
        await client.request(
            "post",
            "/channels",
            params={"yes": True, "no": False, "n": 3, "f": 1.5, "s": "a b,c&d=é"},
            json={"variables": {"X": "1"}},
        )
    (req,) = ari.requests
    assert req.method == "POST"
    assert req.query == {"yes": "true", "no": "false", "n": "3", "f": "1.5", "s": "a b,c&d=é"}
    assert json.loads(req.body) == {"variables": {"X": "1"}}
    assert req.headers["Content-Type"].startswith("application/json")


async def test_quoted_path_segments_reach_asterisk_unchanged(ari: AriHttpServer) -> None:
    async with AriClient(config(ari.url)) as client:
        await client.get_channel("a b/c")
    (req,) = ari.requests
    assert req.raw_path == "/ari/channels/a%20b%2Fc"


async def test_204_returns_none(ari: AriHttpServer) -> None:
    async def no_content(request: web.Request) -> web.StreamResponse:
        return web.Response(status=204)

    ari.responder = no_content
    async with AriClient(config(ari.url)) as client:
        assert await client.request("POST", "/channels/c1/answer") is None


async def test_timeout_raises_ari_timeout(ari: AriHttpServer) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await ari.release.wait()
        return web.json_response({})

    ari.responder = slow
    async with AriClient(config(ari.url, request_timeout=5.0)) as client:
        async with asyncio.timeout(2):
            with pytest.raises(AriTimeout) as info:
                await client.request("GET", "/channels", timeout=0.1)
    assert isinstance(info.value, AriConnectionError)


async def test_default_timeout_comes_from_config(ari: AriHttpServer) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await ari.release.wait()
        return web.json_response({})

    ari.responder = slow
    async with AriClient(config(ari.url, request_timeout=0.1)) as client:
        async with asyncio.timeout(2):
            with pytest.raises(AriTimeout):
                await client.answer("c1")


async def test_connection_refused_raises_connection_error() -> None:
    async with AriClient(config(f"http://127.0.0.1:{free_port()}")) as client:
        with pytest.raises(AriConnectionError) as info:
            await client.list_channels()
    assert not isinstance(info.value, AriTimeout)
    assert PASSWORD not in str(info.value)


async def test_request_after_close_raises_connection_error(ari: AriHttpServer) -> None:
    client = AriClient(config(ari.url))
    await client.close()
    await client.close()  # idempotent
    assert client.closed
    with pytest.raises(AriConnectionError):
        await client.request("GET", "/channels")


async def test_pool_limit_is_applied(ari: AriHttpServer) -> None:
    in_flight = 0
    peak = 0
    gate = asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await gate.wait()
        finally:
            in_flight -= 1
        return web.json_response({})

    ari.responder = held
    # Ordinary requests use pool_size - 2 connections: one is the events websocket's, one
    # is kept for an emergency call's requests.
    async with AriClient(config(ari.url, pool_size=4)) as client:
        calls = [asyncio.create_task(client.request("GET", f"/channels/c{i}")) for i in range(6)]
        await wait_until(lambda: in_flight == 2)
        await asyncio.sleep(0.1)
        assert peak == 2
        assert client.in_flight == 6  # asked for and not answered, queued ones included
        gate.set()
        async with asyncio.timeout(5):
            assert await asyncio.gather(*calls) == [{}] * 6
    assert peak == 2
    assert len(ari.requests) == 6
    assert client.in_flight == 0


async def test_an_emergency_call_s_requests_skip_the_queue(ari: AriHttpServer) -> None:
    seen: list[str] = []
    gate = asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        if "urgent" not in request.path:
            await gate.wait()
        return web.json_response({})

    async def urgent(client: AriClient) -> Any:
        go_first()  # in this task only, as an emergency call's task does
        return await client.request("GET", "/channels/urgent")

    ari.responder = held
    async with AriClient(config(ari.url, pool_size=4)) as client:
        calls = [asyncio.create_task(client.request("GET", f"/channels/c{i}")) for i in range(6)]
        await wait_until(lambda: len(seen) == 2)  # two held, four queued behind them
        async with asyncio.timeout(5):
            assert await asyncio.create_task(urgent(client)) == {}
        assert len(seen) == 3 and seen[-1] == "/ari/channels/urgent"
        assert not goes_first()  # the flag stayed in the urgent task
        gate.set()
        async with asyncio.timeout(5):
            await asyncio.gather(*calls)


async def test_injected_session_is_used_and_not_closed(ari: AriHttpServer) -> None:
    async def missing(request: web.Request) -> web.StreamResponse:
        return web.json_response({"message": "Channel not found"}, status=404)

    ari.responder = missing
    async with aiohttp.ClientSession(raise_for_status=True) as session:
        client = AriClient(config(ari.url), session=session)
        with pytest.raises(AriNotFound):
            await client.get_channel("gone")
        await client.close()
        assert not session.closed
    assert ari.requests[0].headers["Authorization"] == f"Basic {TOKEN}"


# -- events ----------------------------------------------------------------------------------


async def test_events_are_yielded_in_order(ari: AriHttpServer) -> None:
    frames: Frames = [
        json.dumps({"type": "StasisStart", "channel": {"id": "c1"}}),
        json.dumps({"type": "ChannelDtmfReceived", "digit": "1"}),
        json.dumps({"type": "StasisEnd", "channel": {"id": "c1"}}).encode(),
    ]
    ari.scripts = [Script(frames, close=False)]
    async with AriClient(config(ari.url)) as client:
        assert not client.connected
        events = client.events()
        got = await take(events, 4)
        assert client.connected
        await client.close()
        assert not client.connected
        async with asyncio.timeout(2):
            assert [e async for e in events] == []
    assert types(got) == [EVENT_CONNECTED, "StasisStart", "ChannelDtmfReceived", "StasisEnd"]
    assert got[2]["digit"] == "1"
    (req,) = ari.ws_requests
    assert req.raw_path == "/ari/events"
    assert req.query == {"app": "callflow", "subscribeAll": "false"}
    assert req.headers["Authorization"] == f"Basic {TOKEN}"
    assert "api_key" not in req.query


async def test_clean_server_close_reconnects_with_synthetic_events(ari: AriHttpServer) -> None:
    ari.scripts = [
        Script([json.dumps({"type": "A"})], close=True),
        Script([json.dumps({"type": "B"})], close=False),
    ]
    sleep = FakeSleep()
    client = AriClient(config(ari.url), sleep=sleep, rng=random.Random(7))
    events = client.events()
    got = await take(events, 5)
    assert types(got) == [EVENT_CONNECTED, "A", EVENT_DISCONNECTED, EVENT_CONNECTED, "B"]
    assert "1000" in got[2]["reason"]
    assert client.reconnects == 1
    assert len(sleep.delays) == 1
    assert 0.1 <= sleep.delays[0] <= 0.5
    assert ari.ws_attempts == 2
    await client.close()
    async with asyncio.timeout(2):
        assert [e async for e in events] == []


async def test_an_application_taken_by_another_program_is_taken_back_slowly(
    ari: AriHttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Asterisk gives an application to the newest websocket that asks for it and tells the
    # old one (ApplicationReplaced), which then gets no calls though it stays open.
    ari.scripts = [
        Script([json.dumps({"type": "ApplicationReplaced", "application": "callflow"})], False),
        Script([json.dumps({"type": "B"})], close=False),
    ]
    sleep = FakeSleep()
    client = AriClient(config(ari.url, backoff_max=25.0), sleep=sleep, rng=MinRng())
    events = client.events()
    with caplog.at_level(logging.ERROR, logger="callflow.ari"):
        got = await take(events, 4)
    assert types(got) == [EVENT_CONNECTED, EVENT_DISCONNECTED, EVENT_CONNECTED, "B"]
    assert "another program took the application 'callflow'" in got[1]["reason"]
    assert sleep.delays == [25.0]  # not the backoff's first delay: two daemons fight slowly
    assert "another program took the Stasis application 'callflow'" in caplog.text
    await client.close()
    async with asyncio.timeout(2):
        assert [e async for e in events] == []


async def test_backoff_grows_to_the_cap_with_no_tight_loop(ari: AriHttpServer) -> None:
    ari.default_script = Script(close=True)  # every connection is closed at once
    sleep = FakeSleep()
    client = AriClient(config(ari.url), sleep=sleep, rng=MaxRng(), clock=Clock())
    events = client.events()
    got = await take(events, 21)
    await client.close()
    assert types(got) == [EVENT_CONNECTED, EVENT_DISCONNECTED] * 10 + [EVENT_CONNECTED]
    assert sleep.delays[:10] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    # one connection attempt per backoff sleep, no more
    assert ari.ws_attempts <= len(sleep.delays) + 1
    assert client.reconnects == ari.ws_attempts - 1


async def test_backoff_has_full_jitter_within_bounds(ari: AriHttpServer) -> None:
    ari.default_script = Script(close=True)
    sleep = FakeSleep()
    client = AriClient(config(ari.url), sleep=sleep, rng=random.Random(1), clock=Clock())
    await take(client.events(), 25)
    await client.close()
    caps = [min(30.0, 0.5 * 2**i) for i in range(12)]
    delays = sleep.delays[:12]
    assert all(0.1 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert len(set(delays)) > 1  # jittered, not a fixed schedule


async def test_backoff_never_reaches_zero(ari: AriHttpServer) -> None:
    ari.default_script = Script(close=True)
    sleep = FakeSleep()
    client = AriClient(config(ari.url), sleep=sleep, rng=MinRng(), clock=Clock())
    await take(client.events(), 10)
    await client.close()
    assert sleep.delays and all(d >= 0.1 for d in sleep.delays)


async def test_backoff_resets_after_a_stable_connection(ari: AriHttpServer) -> None:
    ari.default_script = Script(close=True)
    sleep = FakeSleep()
    # each reading of the clock is 60 s later: every connection "stayed up" a minute
    client = AriClient(config(ari.url), sleep=sleep, rng=MaxRng(), clock=Clock(step=60.0))
    await take(client.events(), 11)
    await client.close()
    assert sleep.delays[:5] == [0.5] * 5


async def test_failed_connects_back_off_without_synthetic_events(ari: AriHttpServer) -> None:
    ari.ws_reject = 401
    sleep = FakeSleep()
    client = AriClient(config(ari.url), sleep=sleep, rng=MaxRng())
    seen: list[dict[str, Any]] = []

    async def consume() -> None:
        async for event in client.events():
            seen.append(event)

    task = asyncio.create_task(consume())
    await wait_until(lambda: len(sleep.delays) >= 8)
    await client.close()
    async with asyncio.timeout(2):
        await task
    assert seen == []
    assert sleep.delays[:8] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert ari.ws_attempts <= len(sleep.delays) + 1
    assert client.reconnects == 0


async def test_malformed_frames_are_logged_and_skipped(
    ari: AriHttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    ari.scripts = [
        Script(
            ["{not json", "[1, 2]", json.dumps({"no": "type"}), b"\xff\xfe", '{"type": "Ok"}'],
            close=False,
        )
    ]
    caplog.set_level(logging.WARNING, logger="callflow.ari")
    async with AriClient(config(ari.url)) as client:
        got = await take(client.events(), 2)
    assert types(got) == [EVENT_CONNECTED, "Ok"]
    skipped = [r for r in caplog.records if "skipping" in r.getMessage()]
    assert len(skipped) == 4


@pytest.mark.parametrize(
    "frame",
    [
        '{"type": "X", "a": [1, 2]}',
        '{"type": "X"} \n',
        '{"a": 1}\x0c',  # not JSON whitespace (str.isspace() would take them): refused
        '{"a": 1}\xa0',
        '{"a": 1}\u2028',
        ' {"type": "X"}',
        '{"type": "X"} x',
        '{"a": 1}{"b": 2}',
        '{"type":',
        "[1]",
        b'{"type": "B"}',
        b"\xff",
        "",
    ],
)
def test_frames_decode_as_json_loads_does(frame: str | bytes) -> None:
    """Frames skip json.loads's wrapper when they can: the same value or the same refusal."""
    try:
        want: Any = json.loads(frame)
    except ValueError as exc:
        with pytest.raises(ValueError, match=re.escape(str(exc))):
            _decode(frame)
    else:
        assert _decode(frame) == want


async def test_close_ends_iterator_while_waiting_to_reconnect(ari: AriHttpServer) -> None:
    ari.default_script = Script(close=True)
    sleep = FakeSleep(block=True)  # the backoff sleep would never end by itself
    client = AriClient(config(ari.url), sleep=sleep)
    seen: list[dict[str, Any]] = []

    async def consume() -> None:
        async for event in client.events():
            seen.append(event)

    task = asyncio.create_task(consume())
    async with asyncio.timeout(5):
        await sleep.called.wait()
    async with asyncio.timeout(1):
        await client.close()
        await task
    assert types(seen) == [EVENT_CONNECTED, EVENT_DISCONNECTED]
    assert ari.ws_attempts == 1


async def test_close_ends_iterator_while_connecting() -> None:
    # a listening socket that never answers the websocket handshake
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = AriClient(config(f"http://127.0.0.1:{port}", request_timeout=30.0))
        task = asyncio.create_task(anext(client.events(), None))
        await asyncio.sleep(0.1)
        async with asyncio.timeout(1):
            await client.close()
            assert await task is None


async def test_close_ends_iterator_while_receiving(ari: AriHttpServer) -> None:
    sleep = FakeSleep()
    client = AriClient(config(ari.url), sleep=sleep)
    seen: list[dict[str, Any]] = []

    async def consume() -> None:
        async for event in client.events():
            seen.append(event)

    task = asyncio.create_task(consume())
    await wait_until(lambda: client.connected)
    async with asyncio.timeout(1):
        await client.close()
        await task
    assert types(seen) == [EVENT_CONNECTED]
    assert sleep.delays == []
    assert not client.connected


async def test_close_while_consumer_holds_an_event(ari: AriHttpServer) -> None:
    ari.scripts = [Script([json.dumps({"type": "A"}), json.dumps({"type": "B"})], close=False)]
    client = AriClient(config(ari.url))
    events = client.events()
    assert types(await take(events, 2)) == [EVENT_CONNECTED, "A"]
    async with asyncio.timeout(1):
        await client.close()
    assert not client.connected
    await wait_until(lambda: ari.sockets[0].closed)  # Asterisk's side saw the close
    async with asyncio.timeout(1):
        rest = [e async for e in events]
    assert EVENT_DISCONNECTED not in types(rest)


async def test_websocket_outlives_the_request_timeout(ari: AriHttpServer) -> None:
    ari.scripts = [Script([0.6, json.dumps({"type": "Late"})], close=False)]
    async with AriClient(config(ari.url, request_timeout=0.2, heartbeat=None)) as client:
        got = await take(client.events(), 2)
        assert client.connected
    assert types(got) == [EVENT_CONNECTED, "Late"]


async def test_only_one_events_iteration_at_a_time(ari: AriHttpServer) -> None:
    async with AriClient(config(ari.url)) as client:
        first = client.events()
        await take(first, 1)
        with pytest.raises(RuntimeError):
            await anext(client.events())


async def test_secrets_never_logged(ari: AriHttpServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ari.scripts = [Script(["{bad"], close=True), Script(close=False)]
    async with AriClient(config(ari.url), sleep=FakeSleep()) as client:
        await client.request("GET", "/channels")
        await take(client.events(), 3)
    async with AriClient(config(f"http://127.0.0.1:{free_port()}")) as client:
        with pytest.raises(AriConnectionError):
            await client.answer("c1")
    assert caplog.records
    assert PASSWORD not in caplog.text
    assert TOKEN not in caplog.text
