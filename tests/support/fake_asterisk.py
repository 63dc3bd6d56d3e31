"""A fake Asterisk behind ARI's REST surface, as a ``RestTransport`` for a real ``AriClient``.

It keeps the state Asterisk would (channels in the Stasis application, bridges, playbacks,
channel variables), records every request, answers the routes callflow uses with the
statuses and bodies Asterisk gives, and sends the events Asterisk would into ``sink``
(``route_to(registry)`` hands them to the owner of the channel, as ``CallService`` does).
Events are sent from loop timers, after the REST answer, the way they arrive over the
websocket; run the tests on a virtual clock (``pytest.mark.looptime``) so ring and play
times cost nothing.  Each originated endpoint follows a ``Leg`` script.
"""

from __future__ import annotations

import asyncio
import functools
import http
import itertools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

from callflow.ari import (
    EVENT_CONNECTED,
    EVENT_DISCONNECTED,
    AriClient,
    AriConfig,
    AriSocketDropped,
    RestResponse,
)
from callflow.ari.channels import ChannelRegistry, Event, event_channel_id

__all__ = [
    "ANSWER",
    "BUSY",
    "CONGESTION",
    "RINGOUT",
    "SILENT",
    "FakeAsterisk",
    "Leg",
    "Request",
    "client_for",
    "presses",
    "route_to",
]

APP = "callflow"
CONFIG = AriConfig(url="http://asterisk.invalid:8088", app=APP, username="u", password="p")

# Q.850 causes Asterisk puts on ChannelDestroyed.
NORMAL, BUSY_CAUSE, NO_ANSWER_CAUSE, CONGESTION_CAUSE = 16, 17, 19, 34


@dataclass(frozen=True)
class Leg:
    """How the far end of an originated channel behaves.

    ``answer``: rings, answers (enters Stasis), then presses ``keys`` one by one;
    ``busy`` / ``congestion``: rejected (SIP 486 / 503) after ringing starts to be set up;
    ``ringout``: rings until Asterisk's own ring limit (the originate ``timeout``);
    ``silent``: no sign of life at all (a dead trunk) until that limit.
    """

    how: Literal["answer", "busy", "congestion", "ringout", "silent"]
    keys: str = ""


ANSWER = Leg("answer")
BUSY = Leg("busy")
CONGESTION = Leg("congestion")
RINGOUT = Leg("ringout")
SILENT = Leg("silent")


def presses(keys: str) -> Leg:
    """A callee who answers and then presses ``keys``."""
    return Leg("answer", keys)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: dict[str, str]
    body: Any


@dataclass
class _Chan:
    id: str
    number: str = ""
    state: str = "Ring"
    in_app: bool = False
    context: str = "callflow-from-trunk"  # where it is in the dialplan (``continue`` moves it)
    variables: dict[str, str] = field(default_factory=dict)
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": f"PJSIP/{self.id}",
            "state": self.state,
            "caller": {"name": "", "number": self.number},
            "dialplan": {"context": self.context, "exten": "100", "priority": 1},
        }


class _Reply(Exception):
    """Answer the request being served with this error status."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


def route_to(registry: ChannelRegistry) -> Callable[[Event], None]:
    """A sink that hands each event to the owner of its channel, like the event router."""

    def sink(event: Event) -> None:
        chan_id = event_channel_id(event)
        owner = registry.owner(chan_id) if chan_id else None
        if owner is not None:
            owner.on_event(event)

    return sink


def client_for(fake: FakeAsterisk) -> AriClient:
    """A real ``AriClient`` whose REST requests go to ``fake`` (no session is ever made)."""
    return AriClient(CONFIG, transport=fake)


class FakeAsterisk:
    def __init__(
        self,
        endpoints: Mapping[str, Leg] | None = None,
        *,
        sink: Callable[[Event], None] | None = None,
        play_time: float = 1.0,
        ring_time: float = 1.0,
    ) -> None:
        self.endpoints = dict(endpoints or {})
        self.sink = sink or (lambda event: None)
        self.play_time = play_time  # seconds per sound
        self.ring_time = ring_time  # from originate to ringing, and from ringing to answer
        self.requests: list[Request] = []
        self.events: list[Event] = []
        self.channels: dict[str, _Chan] = {}
        self.bridges: dict[str, list[str]] = {}
        self.playbacks: dict[str, tuple[str, asyncio.TimerHandle]] = {}
        self.replies: dict[tuple[str, str], RestResponse] = {}
        self.stalled: set[tuple[str, str]] = set()
        self.dropped: set[tuple[str, str]] = set()
        self.answers_lost: set[tuple[str, str]] = set()
        self.events_allowed: set[str] = set()  # the application's event filter; empty: all
        # The dialplan's labels a ``continue`` may name, (context, extension, label): those
        # of the shipped dialplan.  Asterisk refuses a label it lacks with 404.
        self.labels: set[tuple[str, str, str]] = {("callflow-fallback", "s", "shed")}
        self.connected = True  # the events websocket: while down, events never reach ``sink``
        # Voicemail: the mailboxes voicemail.conf lacks, and whether a voicemail module runs
        # (without one, VM_INFO() is not registered: reading it fails with 500).
        self.missing_mailboxes: set[str] = set()
        self.voicemail_module = True
        # GET /asterisk/modules: the voicemail modules (name, status), as Asterisk lists them.
        self.modules: list[tuple[str, str]] = [("app_voicemail.so", "Running")]
        self.missed: list[Event] = []  # the events that happened while it was down
        self._ids = itertools.count(1)

    # -- scripting ------------------------------------------------------------------------

    def add_caller(self, channel_id: str, number: str = "0612345678") -> dict[str, Any]:
        """A caller's channel that has just entered the application (before ``StasisStart``
        is routed); returns its Channel object."""
        chan = _Chan(channel_id, number, "Ring", in_app=True)
        self.channels[channel_id] = chan
        return chan.json()

    def reply(self, method: str, path: str, status: int, body: Any = None) -> None:
        """Answer ``method path`` (unquoted) with ``status`` from now on; ``body`` is sent
        as is when ``str`` or ``bytes``, as JSON otherwise, and left empty when ``None``."""
        if body is None:
            raw = b""
        elif isinstance(body, bytes):
            raw = body
        elif isinstance(body, str):
            raw = body.encode()
        else:
            raw = json.dumps(body).encode()
        self.replies[(method, path)] = RestResponse(status, raw, http.HTTPStatus(status).phrase)

    def stall(self, method: str, path: str) -> None:
        """Never answer ``method path`` (unquoted): the client's timeout must end the wait."""
        self.stalled.add((method, path))

    def drop(self, method: str, path: str) -> None:
        """The events websocket carrying ``method path`` (unquoted) drops before its answer."""
        self.dropped.add((method, path))

    def lose_answer(self, method: str, path: str) -> None:
        """Carry ``method path`` (unquoted) out, then drop the events websocket before its
        answer: the client cannot tell whether it was done."""
        self.answers_lost.add((method, path))

    def press(self, channel_id: str, keys: str, after: float = 0.0, gap: float = 0.5) -> None:
        """The person on ``channel_id`` presses ``keys``, ``gap`` s apart, from ``after`` s."""
        for i, key in enumerate(keys):
            dtmf = {"type": "ChannelDtmfReceived", "digit": key, "duration_ms": 100}
            self._at(after + gap * i, channel_id, functools.partial(self._emit, dtmf, channel_id))

    def hang_up(self, channel_id: str, after: float = 0.0, cause: int = NORMAL) -> None:
        """The person on ``channel_id`` hangs up after ``after`` s."""
        self._at(after, channel_id, lambda: self._destroy(channel_id, cause))

    def vanish(self, channel_id: str) -> None:
        """Asterisk forgets the channel without a word (it restarted; events were lost)."""
        self._forget(channel_id)

    def disconnect(self) -> None:
        """The events websocket drops (a missed heartbeat, then the backoff): Asterisk goes
        on (REST still answers, as over HTTP) but its events are lost until ``reconnect``."""
        self.sink({"type": EVENT_DISCONNECTED, "reason": "heartbeat missed"})
        self.connected = False

    def reconnect(self) -> None:
        """The events websocket is back; the client says so with ``EVENT_CONNECTED``."""
        self.connected = True
        self.sink({"type": EVENT_CONNECTED})

    # -- what was asked -------------------------------------------------------------------

    def sent(self, method: str, path: str) -> list[Request]:
        """The requests to ``method path`` (``path`` unquoted: ``/playbacks/c1:pb:1``)."""
        return [r for r in self.requests if (r.method, unquote(r.path)) == (method, path)]

    def lines(self) -> list[str]:
        """``METHOD /path`` of every request, unquoted, in order."""
        return [f"{r.method} {unquote(r.path)}" for r in self.requests]

    def hung_up(self) -> list[str]:
        """Ids of the channels callflow hung up, in order."""
        return [
            unquote(r.path.split("/")[2])
            for r in self.requests
            if r.method == "DELETE" and r.path.count("/") == 2 and r.path.startswith("/channels/")
        ]

    # -- the transport --------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: Any,
        *,
        timeout: float,
        key: str | None = None,
        first: bool = False,
    ) -> RestResponse:
        self.requests.append(Request(method, path, dict(params or {}), body))
        key = (method, unquote(path))
        async with asyncio.timeout(timeout):
            if key in self.stalled:
                await asyncio.Event().wait()
            if key in self.dropped:
                raise AriSocketDropped("events websocket dropped (connection lost)")
            if key in self.replies:
                return self.replies[key]
            try:
                if key == ("PUT", f"/applications/{APP}/eventFilter"):
                    self.events_allowed = {str(e["type"]) for e in body.get("allowed", [])}
                data = self._serve(method, [unquote(s) for s in path.split("/")[1:]], params)
            except _Reply as err:
                raw = json.dumps({"message": err.message}).encode()
                return RestResponse(err.status, raw, http.HTTPStatus(err.status).phrase)
            if key in self.answers_lost:
                raise AriSocketDropped("events websocket dropped (connection lost)")
            if data is None:
                return RestResponse(204, b"", "No Content")
            return RestResponse(200, json.dumps(data).encode(), "OK")

    def _serve(self, method: str, seg: list[str], params: Mapping[str, str] | None) -> Any:
        q = dict(params or {})
        match method, seg:
            case "GET", ["applications"]:
                return [self._application()]
            case "GET", ["asterisk", "modules"]:
                return [
                    {"name": n, "description": "", "use_count": 0, "status": s}
                    for n, s in self.modules
                ]
            case "GET", ["applications", name] if name == APP:
                return self._application()
            case "PUT", ["applications", name, "eventFilter"] if name == APP:
                return self._application()  # the filter itself: request() took it
            case "GET", ["channels"]:
                return [c.json() for c in self.channels.values()]
            case "POST", ["channels"]:
                return self._originate(q)
            case "GET", ["channels", cid]:
                return self._chan(cid).json()
            case "DELETE", ["channels", cid]:
                self._chan(cid)
                self._destroy(cid, NORMAL, soon=True)
                return None
            case "POST", ["channels", cid, "answer"]:
                self._set_state(self._chan(cid, in_app=True), "Up")
                return None
            case "POST", ["channels", cid, "ring"] | ["channels", cid, "moh"]:
                self._chan(cid, in_app=True)
                return None
            case "DELETE", ["channels", cid, "moh"]:
                self._chan(cid, in_app=True)
                return None
            case "POST", ["channels", cid, "play"]:
                return self._play(self._chan(cid, in_app=True), q)
            case "GET", ["playbacks", pb_id]:
                if pb_id not in self.playbacks:
                    raise _Reply(404, "Playback not found")
                target = f"channel:{self.playbacks[pb_id][0]}"
                return {"id": pb_id, "target_uri": target, "state": "playing"}
            case "DELETE", ["playbacks", pb_id]:
                self._stop_playback(pb_id)
                return None
            case "POST", ["channels", cid, "variable"]:
                self._chan(cid).variables[q["variable"]] = q.get("value", "")
                return None
            case "GET", ["channels", cid, "variable"] if q["variable"].startswith("VM_INFO("):
                self._chan(cid)
                if not self.voicemail_module:
                    raise _Reply(500, "Unable to read provided function")
                box = q["variable"].removeprefix("VM_INFO(").removesuffix(",exists)")
                return {"value": "0" if box in self.missing_mailboxes else "1"}
            case "GET", ["channels", cid, "variable"]:
                value = self._chan(cid).variables.get(q["variable"])
                if value is None:
                    raise _Reply(404, "Provided variable was not found")
                return {"value": value}
            case "POST", ["channels", cid, "continue"]:
                chan = self._chan(cid, in_app=True)
                place = (q.get("context", chan.context), q.get("extension", "s"), q.get("label"))
                if place[2] is not None and place not in self.labels:
                    raise _Reply(404, "Requested label can not be found")
                chan.in_app = False
                chan.context = q.get("context", chan.context)
                self._soon(lambda: self._emit({"type": "StasisEnd"}, cid))
                return None
            case "GET", ["bridges"]:
                return [self._bridge(b) for b in self.bridges]
            case "POST", ["bridges"]:
                bridge_id = q.get("bridgeId") or f"bridge-{next(self._ids)}"
                self.bridges[bridge_id] = []
                return self._bridge(bridge_id)
            case "POST", ["bridges", bridge_id, "addChannel"]:
                if bridge_id not in self.bridges:
                    raise _Reply(404, "Bridge not found")
                ids = q["channel"].split(",")
                for cid in ids:
                    self._chan(cid, in_app=True, missing=400)
                self.bridges[bridge_id] += ids
                return None
            case "DELETE", ["bridges", bridge_id]:
                if self.bridges.pop(bridge_id, None) is None:
                    raise _Reply(404, "Bridge not found")
                return None
        raise _Reply(404, f"Resource not found: {method} /{'/'.join(seg)}")

    # -- Asterisk's behaviour -------------------------------------------------------------

    def _application(self) -> dict[str, Any]:
        ids = [c.id for c in self.channels.values() if c.in_app]
        return {"name": APP, "channel_ids": ids, "bridge_ids": list(self.bridges)}

    def _bridge(self, bridge_id: str) -> dict[str, Any]:
        return {"id": bridge_id, "bridge_type": "mixing", "channels": self.bridges[bridge_id]}

    def _chan(self, cid: str, *, in_app: bool = False, missing: int = 404) -> _Chan:
        chan = self.channels.get(cid)
        if chan is None:
            raise _Reply(missing, "Channel not found")
        if in_app and not chan.in_app:
            raise _Reply(409, "Channel not in Stasis application")
        return chan

    def _originate(self, q: Mapping[str, str]) -> dict[str, Any]:
        endpoint = q["endpoint"]
        leg = self.endpoints.get(endpoint)
        if leg is None:
            raise _Reply(400, f"Allocation failed: unknown endpoint {endpoint}")
        cid = q.get("channelId") or f"chan-{next(self._ids)}"
        chan = _Chan(cid, number=endpoint, state="Down")
        self.channels[cid] = chan
        limit = float(q.get("timeout", 30))
        args = q.get("appArgs", "").split(",") if q.get("appArgs") else []
        ring = self.ring_time
        if leg.how in ("answer", "ringout"):
            self._at(ring, cid, lambda: self._set_state(chan, "Ringing"))
        if leg.how == "answer":
            self._at(2 * ring, cid, lambda: self._enter_app(chan, args))
            self.press(cid, leg.keys, after=3 * ring)
        elif leg.how == "busy":
            self._at(ring, cid, lambda: self._destroy(cid, BUSY_CAUSE))
        elif leg.how == "congestion":
            self._at(ring, cid, lambda: self._destroy(cid, CONGESTION_CAUSE))
        else:  # ringout, silent: Asterisk's own ring limit ends them
            self._at(limit, cid, lambda: self._destroy(cid, NO_ANSWER_CAUSE))
        return chan.json()

    def _enter_app(self, chan: _Chan, args: list[str]) -> None:
        self._set_state(chan, "Up")
        chan.in_app = True
        self._emit({"type": "StasisStart", "args": args}, chan.id)

    def _set_state(self, chan: _Chan, state: str) -> None:
        chan.state = state
        self._emit({"type": "ChannelStateChange"}, chan.id)

    def _play(self, chan: _Chan, q: Mapping[str, str]) -> dict[str, Any]:
        pb_id = q.get("playbackId") or f"pb-{next(self._ids)}"
        media = q["media"]
        playback = {
            "id": pb_id,
            "media_uri": media,
            "target_uri": f"channel:{chan.id}",
            "language": q.get("lang", "en"),
            "state": "queued",
        }
        duration = self.play_time * len(media.split(","))
        self._soon(lambda: self._send({"type": "PlaybackStarted", "playback": playback}))
        handle = self._at(duration, chan.id, lambda: self._finish_playback(pb_id))
        self.playbacks[pb_id] = (chan.id, handle)
        return playback

    def _stop_playback(self, pb_id: str) -> None:
        if pb_id not in self.playbacks:
            raise _Reply(404, "Playback not found")
        self.playbacks[pb_id][1].cancel()
        self._soon(lambda: self._finish_playback(pb_id))

    def _finish_playback(self, pb_id: str) -> None:
        entry = self.playbacks.pop(pb_id, None)
        if entry is not None:
            pb = {"id": pb_id, "target_uri": f"channel:{entry[0]}", "state": "done"}
            self._send({"type": "PlaybackFinished", "playback": pb})

    def _destroy(self, cid: str, cause: int, *, soon: bool = False) -> None:
        """The channel hangs up: StasisEnd if it was in the application, then destroyed."""
        chan = self.channels.get(cid)
        if chan is None:
            return
        if soon:  # an ARI hangup: its events follow the REST answer
            self._soon(lambda: self._destroy(cid, cause))
            return
        snapshot = chan.json()
        was_in_app = chan.in_app
        self._forget(cid)
        if was_in_app:
            self._send({"type": "StasisEnd", "channel": snapshot})
        self._send(
            {"type": "ChannelDestroyed", "cause": cause, "cause_txt": "", "channel": snapshot}
        )

    def _forget(self, cid: str) -> None:
        chan = self.channels.pop(cid, None)
        if chan is None:
            return
        for handle in chan.timers:
            handle.cancel()
        for pb_id, (target, handle) in list(self.playbacks.items()):
            if target == cid:
                handle.cancel()
                del self.playbacks[pb_id]
        for members in self.bridges.values():
            if cid in members:
                members.remove(cid)

    # -- plumbing -------------------------------------------------------------------------

    def _emit(self, event: Event, cid: str) -> None:
        chan = self.channels.get(cid)
        if chan is not None:
            self._send({**event, "channel": chan.json()})

    def _send(self, event: Event) -> None:
        if self.events_allowed and event["type"] not in self.events_allowed:
            return  # filtered out by Asterisk: never sent, never missed
        if self.connected:
            self.sink(self._log(event))
        else:
            self.missed.append(self._log(event))

    def _log(self, event: Event) -> Event:
        self.events.append(event)
        return event

    def _at(self, delay: float, cid: str, fn: Callable[[], None]) -> asyncio.TimerHandle:
        """Run ``fn`` in ``delay`` s unless channel ``cid`` is gone by then."""
        handle = asyncio.get_running_loop().call_later(delay, fn)
        chan = self.channels.get(cid)
        if chan is not None:
            chan.timers.append(handle)
        return handle

    def _soon(self, fn: Callable[[], None]) -> None:
        asyncio.get_running_loop().call_soon(fn)
