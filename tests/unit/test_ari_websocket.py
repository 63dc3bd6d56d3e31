"""REST over the ARI events websocket: a real AriClient against an in-process aiohttp server
that answers ``RESTRequest`` frames the way Asterisk 22 does (or ignores them, like an older
Asterisk), with HTTP routes beside it for the fallback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from callflow.ari import (
    AriClient,
    AriConfig,
    AriNotFound,
    AriServerError,
    AriSocketDropped,
    AriTimeout,
    RestResponse,
    SocketTransport,
)
from callflow.ari.client import CLIENT_EVENTS, EVENT_CONNECTED, EVENT_DISCONNECTED
from callflow.ari.service import EVENT_TYPES, CallService
from callflow.ari.websocket import _frame
from callflow.errors import LinkFault, PbxLinkError
from callflow.metrics.parts import Probes, ScrapeTime
from tests.support.polling import wait_until
from tests.support.ws_asterisk import Asterisk, serve

#: What the daemon asks Asterisk for: its events, the REST answers, and the word that
#: another program took its application.
ASKED = EVENT_TYPES | CLIENT_EVENTS


@pytest.fixture
async def pbx() -> AsyncIterator[Asterisk]:
    async with serve() as fake:
        yield fake


def config(url: str, **overrides: Any) -> AriConfig:
    values: dict[str, Any] = {"app": "callflow", "username": "u", "password": "p"}
    values.update(overrides)
    return AriConfig(url=url, **values)


@pytest.fixture
async def connected(pbx: Asterisk) -> AsyncIterator[AriClient]:
    """A client whose events are pumped (as the daemon does) and that has connected."""
    client = AriClient(config(pbx.url))
    events: list[dict[str, Any]] = []

    async def pump() -> None:
        async for event in client.events():
            events.append(event)

    task = asyncio.ensure_future(pump())
    await wait_until(lambda: bool(events), timeout=10)
    yield client
    await client.close()
    await asyncio.wait_for(task, 10)


async def test_auto_uses_the_socket_where_asterisk_answers(
    pbx: Asterisk, connected: AriClient
) -> None:
    assert connected.rest_transport == "websocket"
    answer = await connected.request(
        "POST", "/channels", params={"endpoint": "PJSIP/a b", "timeout": 5}, json={"v": "1"}
    )
    assert answer == {
        "method": "POST",
        "path": "channels",
        "query": {"endpoint": "PJSIP/a b", "timeout": "5"},
        "body": {"v": "1"},
    }
    assert pbx.http == []  # nothing over HTTP, not even the probe
    probe, sent = pbx.frames
    assert (probe["method"], probe["uri"]) == ("GET", "asterisk/ping")
    assert sent["type"] == "RESTRequest" and sent["request_id"] != probe["request_id"]
    assert connected.rest_requests == {"websocket": 1, "http": 0}


async def test_a_request_aside_goes_over_http_while_the_socket_carries_the_others(
    pbx: Asterisk, connected: AriClient
) -> None:
    # Asterisk carries out one websocket's requests one after the other: under overload a
    # shed call's handoff would wait behind every running call's (in_flight reached 157
    # at 200 calls/s, benchmarks/results/load-2026-12-04.md).
    pbx.hold = {"channels/slow"}
    slow = asyncio.ensure_future(connected.request("GET", "/channels/slow"))
    await wait_until(lambda: len(pbx.frames) == 2)
    await connected.continue_in_dialplan("c1", "callflow-fallback", "s", label="shed", aside=True)
    assert pbx.http == ["POST /channels/c1/continue"]  # not behind the held request
    assert not slow.done()
    pbx.release.set()
    await asyncio.wait_for(slow, 10)
    assert connected.rest_requests == {"websocket": 1, "http": 1}


async def test_error_statuses_map_as_over_http(connected: AriClient) -> None:
    with pytest.raises(AriNotFound):
        await connected.request("GET", "/channels/gone")
    with pytest.raises(AriServerError) as info:
        await connected.request("GET", "/broken")
    assert isinstance(info.value, PbxLinkError) and info.value.fault is LinkFault.SERVER_ERROR


async def test_answers_are_correlated_by_request_id(pbx: Asterisk, connected: AriClient) -> None:
    pbx.hold = {"channels/slow"}
    slow = asyncio.ensure_future(connected.request("GET", "/channels/slow"))
    await wait_until(lambda: len(pbx.frames) == 2)
    fast = await connected.request("GET", "/channels/fast")  # answered before the slow one
    assert fast["path"] == "channels/fast"
    assert not slow.done()
    pbx.release.set()
    assert (await asyncio.wait_for(slow, 10))["path"] == "channels/slow"


async def test_a_request_without_answer_times_out(pbx: Asterisk, connected: AriClient) -> None:
    pbx.silent = {"channels/lost"}
    with pytest.raises(AriTimeout) as info:
        await connected.request("GET", "/channels/lost", timeout=0.2)
    assert info.value.fault is LinkFault.TIMEOUT
    assert connected._socket_rest is not None and connected._socket_rest.pending == 0
    assert (await connected.request("GET", "/channels/next"))["path"] == "channels/next"


async def test_a_dropped_socket_fails_pending_requests_then_http_carries_them(
    pbx: Asterisk, connected: AriClient
) -> None:
    pbx.hold = {"channels/held"}
    held = asyncio.ensure_future(connected.request("GET", "/channels/held", timeout=30))
    await wait_until(lambda: len(pbx.frames) == 2)
    pbx.speaks_rest = False  # so that a reconnection cannot carry the requests below
    await pbx.sockets[0].close()  # Asterisk restarts, say
    with pytest.raises(AriSocketDropped) as info:
        await asyncio.wait_for(held, 10)
    assert isinstance(info.value, PbxLinkError) and info.value.fault is LinkFault.DISCONNECTED
    await wait_until(lambda: connected.rest_transport == "http")
    # A hangup at recovery still gets through while the socket is down.
    await connected.request("DELETE", "/channels/c1")
    assert "DELETE /channels/c1" in pbx.http


async def test_auto_falls_back_to_http_when_asterisk_ignores_rest_frames(pbx: Asterisk) -> None:
    pbx.speaks_rest = False
    async with AriClient(config(pbx.url, probe_timeout=0.3)) as client:
        events = client.events()
        first = await asyncio.wait_for(anext(events), 10)
        assert first["type"] == "CallflowConnected"
        assert client.rest_transport == "http"
        assert (await client.request("GET", "/channels/c1"))["path"] == "channels/c1"
        assert pbx.http == ["GET /channels/c1"]
        assert client.rest_requests == {"websocket": 0, "http": 1}
        await client.close()
        await events.aclose()


async def test_websocket_mode_uses_the_socket_without_a_probe(pbx: Asterisk) -> None:
    async with AriClient(config(pbx.url, transport="websocket")) as client:
        events = client.events()
        await asyncio.wait_for(anext(events), 10)
        assert client.rest_transport == "websocket"
        pump = asyncio.ensure_future(anext(events))  # the reader hands answers over
        assert (await client.request("GET", "/channels/c1"))["path"] == "channels/c1"
        assert [f["uri"] for f in pbx.frames] == ["channels/c1"]
        pump.cancel()
        await client.close()


async def test_http_mode_never_uses_the_socket(pbx: Asterisk) -> None:
    async with AriClient(config(pbx.url, transport="http")) as client:
        events = client.events()
        await asyncio.wait_for(anext(events), 10)
        await client.request("GET", "/channels/c1")
        assert client.rest_transport == "http"
        assert pbx.frames == [] and pbx.http == ["GET /channels/c1"]
        await client.close()
        await events.aclose()


@pytest.mark.parametrize(
    ("path", "params", "body"),
    [
        ("/asterisk/ping", None, None),
        (
            "/channels/a b/play",
            {"media": "sound:vm-intro,sound:\u00e9 x", "playbackId": "c:pb:1"},
            None,
        ),
        ("/channels", {"endpoint": "PJSIP/x"}, {"variables": {"CALLFLOW_ROLE": '"leg"\\'}}),
        ("/channels/c1", {}, None),
    ],
)
def test_a_request_frame_is_the_json_of_its_fields(
    path: str, params: dict[str, str] | None, body: Any
) -> None:
    """The frame's text is written out by hand (cheaper than json.dumps): it must say what
    the dict of its fields does, quotes, non-ASCII and query string included."""
    uri = path.lstrip("/") + ("?" + urlencode(params) if params else "")
    want: dict[str, Any] = {"type": "RESTRequest", "request_id": "7", "method": "POST", "uri": uri}
    if body is not None:
        want |= {"content_type": "application/json", "message_body": json.dumps(body)}
    assert json.loads(_frame("7", "POST", path, params, body)) == want


def test_bad_transport_is_refused() -> None:
    with pytest.raises(ValueError, match="transport"):
        config("http://127.0.0.1:8088", transport="carrier-pigeon")


def test_transport_metrics() -> None:
    probes = Probes(
        ari_transport=lambda: "websocket", ari_requests=lambda: {"websocket": 7, "http": 2}
    )
    registry = CollectorRegistry()
    registry.register(ScrapeTime(probes))
    text = generate_latest(registry).decode()
    assert 'callflow_ari_transport{transport="websocket"} 1.0' in text
    assert 'callflow_ari_transport{transport="http"} 0.0' in text
    assert 'callflow_ari_requests_total{transport="websocket"} 7.0' in text
    assert 'callflow_ari_requests_total{transport="http"} 2.0' in text


class ClosingSocket:
    """A socket that is closing: every send fails (the reader has not noticed yet)."""

    async def send_str(self, data: str, compress: int | None = None) -> None:
        raise ConnectionResetError("Cannot write to closing transport")

    async def receive(self, timeout: float | None = None) -> Any:
        raise AssertionError("not read in websocket mode")


class RecordingHttp:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def request(
        self,
        method: str,
        path: str,
        params: Any,
        body: Any,
        *,
        timeout: float,
        key: str | None = None,
        first: bool = False,
    ) -> RestResponse:
        self.sent.append(f"{method} {path}")
        return RestResponse(204)


async def test_a_request_the_closing_socket_could_not_send_goes_over_http() -> None:
    http = RecordingHttp()
    rest = SocketTransport(http, "websocket", probe_timeout=1)
    await rest.attach(ClosingSocket())
    assert rest.in_use == "websocket"
    answer = await rest.request("DELETE", "/channels/c1", None, None, timeout=5)
    assert answer.status == 204
    assert http.sent == ["DELETE /channels/c1"] and rest.pending == 0


# -- the event filter, set by the call service at each connection ---------------------------

FILTER_URI = "applications/callflow/eventFilter"


def filters_sent(pbx: Asterisk) -> list[dict[str, Any]]:
    return [f for f in pbx.frames if f["uri"] == FILTER_URI]


@contextlib.asynccontextmanager
async def serving(pbx: Asterisk, **overrides: Any) -> AsyncIterator[tuple[AriClient, list[str]]]:
    """A client whose events go to a call service, as in the daemon; yields the client and
    the types of the events it read."""
    client = AriClient(config(pbx.url, backoff_initial=0.01, backoff_max=0.05, **overrides))
    service = CallService(client, engine=None, flows=None)  # type: ignore[arg-type]
    seen: list[str] = []

    async def pump() -> None:
        async for event in client.events():
            seen.append(event["type"])
            service.dispatch(event)

    task = asyncio.ensure_future(pump())
    try:
        yield client, seen
    finally:
        await client.close()
        await asyncio.wait_for(task, 10)
        await service.stop(0.1)


async def test_the_event_filter_is_set_at_each_connection(pbx: Asterisk) -> None:
    async with serving(pbx) as (client, seen):
        await wait_until(lambda: len(filters_sent(pbx)) == 1, 10)
        await pbx.sockets[0].close()  # Asterisk restarts, say: a new connection
        await wait_until(lambda: len(filters_sent(pbx)) == 2, 10)
        assert seen.count("CallflowConnected") == 2
        # Held back now: what nothing reads; sent: what the dispatch reads.
        await wait_until(lambda: pbx.allowed != set(), 10)
        ws = pbx.sockets[1]
        await pbx.send(ws, {"type": "ChannelVarset", "channel": {"id": "c1"}})
        await pbx.send(ws, {"type": "ChannelDtmfReceived", "channel": {"id": "c1"}})
        await wait_until(lambda: "ChannelDtmfReceived" in seen, 10)
        assert "ChannelVarset" not in seen
        # The REST answers still come back over the socket: the filter lets them through.
        assert client.rest_transport == "websocket"
        assert (await client.request("GET", "/channels/c1"))["path"] == "channels/c1"
    for frame in filters_sent(pbx):
        assert frame["method"] == "PUT"
        body = json.loads(frame["message_body"])
        assert {e["type"] for e in body["allowed"]} == ASKED
        assert body["disallowed"] == []  # whatever was set before is cleared
    assert pbx.allowed == ASKED
    assert pbx.http == []


async def test_an_asterisk_that_cannot_filter_sends_every_event(
    pbx: Asterisk, caplog: pytest.LogCaptureFixture
) -> None:
    pbx.filters = False
    caplog.set_level(logging.INFO, logger="callflow.ari")

    def refused() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "does not filter" in r.getMessage()]

    async with serving(pbx) as (client, seen):
        await wait_until(lambda: len(refused()) == 1, 10)  # the refusal came back
        await pbx.sockets[0].close()
        await wait_until(lambda: len(filters_sent(pbx)) == 2 and len(pbx.sockets) == 2, 10)
        await pbx.send(pbx.sockets[1], {"type": "ChannelVarset", "channel": {"id": "c1"}})
        await wait_until(lambda: "ChannelVarset" in seen, 10)
        assert (await client.request("GET", "/channels/c1"))["path"] == "channels/c1"
    # The second refusal came back too (the request below went after it, on the same socket).
    assert len(refused()) == 1 and refused()[0].levelno == logging.INFO  # once, not each time
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [r for r in errors if "filter" in r.getMessage()]  # a cost, not a fault


async def test_over_http_the_filter_goes_over_http(pbx: Asterisk) -> None:
    async with serving(pbx, transport="http"):
        await wait_until(lambda: f"PUT /{FILTER_URI}" in pbx.http, 10)
    assert pbx.frames == []
    assert pbx.allowed == ASKED  # one mode may follow another


async def test_a_handoff_aside_is_not_counted_in_flight(
    pbx: Asterisk, connected: AriClient
) -> None:
    # The in-flight count sheds new calls; the shed calls' own handoffs must not keep it
    # over its budget (at 200 calls/s shedding then fed itself for the whole run).
    pbx.hold = {"channels/slow", "channels/c1/continue"}
    slow = asyncio.ensure_future(connected.request("GET", "/channels/slow"))
    handoff = asyncio.ensure_future(
        connected.continue_in_dialplan("c1", "callflow-fallback", "s", label="shed", aside=True)
    )
    await wait_until(lambda: len(pbx.frames) == 2 and pbx.http == ["POST /channels/c1/continue"])
    assert connected.in_flight == 1  # the held websocket request, not the handoff
    pbx.release.set()
    await asyncio.wait_for(asyncio.gather(slow, handoff), 10)
    assert connected.in_flight == 0


async def test_an_asterisk_gone_silent_is_noticed_by_the_heartbeat(pbx: Asterisk) -> None:
    """No close, no reset (a power cut): the pings go unanswered, the socket is given up
    and its requests go over HTTP; with the pongs back, it connects again."""
    pbx.pongs = False
    client = AriClient(config(pbx.url, heartbeat=0.2, backoff_initial=0.05, backoff_max=0.1))
    seen: list[str] = []
    reasons: list[str] = []

    async def pump() -> None:
        async for event in client.events():
            seen.append(str(event["type"]))
            reasons.append(str(event.get("reason", "")))

    task = asyncio.ensure_future(pump())
    try:
        await wait_until(lambda: EVENT_DISCONNECTED in seen, timeout=10)
        assert seen[0] == EVENT_CONNECTED
        assert "No PONG" in reasons[seen.index(EVENT_DISCONNECTED)]  # not a close by Asterisk
        await client.request("GET", "/asterisk/ping")
        assert pbx.http[-1] == "GET /asterisk/ping"
        pbx.pongs = True
        await wait_until(lambda: seen[-1] == EVENT_CONNECTED, timeout=10)
    finally:
        await client.close()
        await asyncio.wait_for(task, 10)
