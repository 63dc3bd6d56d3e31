"""REST over the ARI events websocket (Asterisk 22.4+, 21.9+, 20.14+), behind ``RestTransport``.

Asterisk accepts ``{"type": "RESTRequest", "request_id": ..., "method": ..., "uri": ...}``
on the events websocket and answers, among the events, with a ``RESTResponse`` carrying the
same ``request_id``, ``status_code`` and ``message_body``.  One socket then carries what a
pool of HTTP connections did, without the pool's queue (the cause of the ``AriTimeout`` of
issue #11 under load) and with less CPU on both sides.

``SocketTransport`` is the ``RestTransport`` the ``AriClient`` uses unless its
``transport`` is ``"http"``.  The client hands it each events socket as it connects
(``attach``: in ``auto`` mode a ``GET asterisk/ping`` over the socket decides whether
Asterisk speaks REST there), each ``RESTResponse`` frame it reads (``feed``) and each drop
(``detach``: every request still waiting on that socket fails with ``AriSocketDropped``).
While no socket carries REST (not connected yet, dropped, or an Asterisk that does not
answer over it) requests go over HTTP, so that a hangup or a fallback still gets through.

**Lanes.**  Asterisk carries out one websocket's requests one after the other
(``res/ari/ari_websockets.c`` reads a frame, runs the request to its end, then reads the
next), so one request that waits (for a busy channel's thread, a busy CPU) holds up every
call's requests behind it: at 200 calls/s the queue reached 150 requests.  So REST can also
travel over a few more websockets, "lanes" (``callflow.ari.lanes`` opens them, each for a
Stasis application of its own that no channel enters: Asterisk finds a channel whatever the
socket's application).  Each request names the channel whose order it must keep (``key``):
a channel's requests take the lane its id picks, and while one of them waits, the next
take the same socket whatever happened meanwhile, so they are carried out in order.  The
last lane carries only the requests of emergency lines (``first``), never queued behind
the others'.  A lane that drops fails its own waiting requests (``AriSocketDropped``); its
channels go over the events socket until it is back.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import zlib
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring_ascii as _quoted
from typing import Any, Final, Literal, Protocol
from urllib.parse import quote_plus

import aiohttp
from aiohttp.http_websocket import WSMessageNoDecodeText

from callflow.ari.faults import AriSocketDropped
from callflow.ari.frames import DATA_FRAMES
from callflow.ari.transport import RestResponse, RestTransport

__all__ = ["TRANSPORTS", "SocketTransport", "TransportMode"]

log = logging.getLogger("callflow.ari")

#: ``[ari] transport``: ``auto`` probes at each connection, the others force one way.
TransportMode = Literal["auto", "websocket", "http"]
TRANSPORTS: Final[tuple[TransportMode, ...]] = ("auto", "websocket", "http")

WEBSOCKET: Final = "websocket"
HTTP: Final = "http"

# The probe: cheap, side-effect free, answered by every Asterisk that has ARI.
_PROBE_METHOD, _PROBE_PATH = "GET", "/asterisk/ping"


class Socket(Protocol):
    """What the transport needs of the events websocket (aiohttp's client socket)."""

    async def send_str(self, data: str, compress: int | None = None) -> None: ...

    async def receive(self, timeout: float | None = None) -> WSMessageNoDecodeText: ...


class _Lane:
    """One websocket carrying ``RESTRequest``s, and its requests waiting for their answer."""

    def __init__(self, name: str, ws: Socket) -> None:
        self.name = name
        self.ws = ws
        self.open = True
        self.pending: dict[str, asyncio.Future[RestResponse]] = {}

    def answer(self, event: Mapping[str, Any]) -> None:
        fut = self.pending.pop(str(event.get("request_id")), None)
        if fut is not None and not fut.done():
            fut.set_result(_response(event))

    def fail(self, reason: str) -> int:
        """The socket dropped: fail every request waiting on it; how many there were."""
        self.open = False
        pending, self.pending = self.pending, {}
        failed = 0
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(AriSocketDropped(f"{self.name} dropped ({reason})"))
                failed += 1
        return failed


class _Pin:
    """The lane a channel's requests take while one of them waits (``count``)."""

    __slots__ = ("count", "lane")

    def __init__(self, lane: _Lane) -> None:
        self.lane = lane
        self.count = 0


class SocketTransport:
    """REST requests as websocket frames correlated by ``request_id``; HTTP while no socket
    carries them.  ``mode`` is ``auto`` (probe each socket) or ``websocket`` (use each socket
    without asking: for an Asterisk known to speak it)."""

    def __init__(self, http: RestTransport, mode: TransportMode, probe_timeout: float) -> None:
        if mode not in ("auto", "websocket"):
            raise ValueError(f"SocketTransport mode must be auto or websocket, got {mode!r}")
        self._http = http
        self._mode = mode
        self._probe_timeout = probe_timeout
        self._main: _Lane | None = None  # the events socket, while it carries REST
        self._lanes: dict[int, _Lane] = {}  # the lanes open now, by number (1..count)
        self._count = 0  # lanes asked for beside the events socket (some may be down)
        self._pins: dict[str, _Pin] = {}  # the channels with a request waiting
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"SocketTransport(mode={self._mode!r}, in_use={self.in_use!r})"

    @property
    def in_use(self) -> str:
        """``websocket`` while a socket carries the requests, ``http`` otherwise."""
        return WEBSOCKET if self._main is not None else HTTP

    @property
    def pending(self) -> int:
        """Requests sent over a socket and not answered yet."""
        main = len(self._main.pending) if self._main is not None else 0
        return main + sum(len(lane.pending) for lane in self._lanes.values())

    @property
    def lanes_open(self) -> int:
        """Lanes carrying requests now, beside the events socket."""
        return len(self._lanes)

    # -- the events socket's life (called by the AriClient's reader) -----------------------

    async def attach(self, ws: Socket) -> list[WSMessageNoDecodeText]:
        """Carry REST over ``ws`` from now on if Asterisk answers there (always, in
        ``websocket`` mode).  In ``auto`` mode the probe reads ``ws`` itself until its answer
        comes or ``probe_timeout`` passes; what else it read (events, or the socket's close)
        is returned, in order, for the reader to handle first."""
        if self._mode == WEBSOCKET:
            self._main = _Lane("events websocket", ws)
            log.info("ARI REST: over the events websocket")
            return []
        rid = f"probe-{next(self._ids)}"
        read: list[WSMessageNoDecodeText] = []
        answered = False
        try:
            async with asyncio.timeout(self._probe_timeout):
                await ws.send_str(_frame(rid, _PROBE_METHOD, _PROBE_PATH, None, None))
                while not answered:
                    msg = await ws.receive()
                    frame = _rest_response(msg)
                    if frame is not None and str(frame.get("request_id")) == rid:
                        answered = int(frame.get("status_code", 0)) == 200
                        break
                    read.append(msg)
                    if msg.type not in DATA_FRAMES:
                        break  # the socket is closing: the reader reports it
        except TimeoutError:
            pass
        except (ConnectionError, aiohttp.ClientError) as exc:
            log.info("ARI REST: probe over the websocket failed: %s", exc)
        if answered:
            self._main = _Lane("events websocket", ws)
            log.info("ARI REST: Asterisk answers over the events websocket: using it")
        else:
            log.info("ARI REST: Asterisk does not answer over the events websocket: HTTP")
        return read

    def feed(self, event: Mapping[str, Any]) -> bool:
        """Take a frame read from the events socket: True when it was a ``RESTResponse``
        (handed to its request, or dropped when that request already gave up), False for an
        event."""
        if event.get("type") != "RESTResponse":
            return False
        if self._main is not None:
            self._main.answer(event)
        return True

    def detach(self, reason: str) -> None:
        """The events socket dropped: stop using it, and fail every request waiting on it
        (the lanes are closed with it, each failing its own: ``close_lane``)."""
        main, self._main = self._main, None
        failed = main.fail(reason) if main is not None else 0
        if failed:
            log.warning("ARI REST: %d request(s) failed: the websocket dropped", failed)

    # -- the lanes' lives (called by ``callflow.ari.lanes``) -------------------------------

    def plan_lanes(self, count: int) -> None:
        """``count`` lanes are being opened beside the events socket (0: none).  The lane
        a channel takes depends on ``count``, not on which lanes are open: a lane that is
        down sends its channels over the events socket until it is back."""
        self._count = count

    def open_lane(self, number: int, ws: Socket) -> None:
        """Lane ``number`` (1..``count``) is open: its channels' requests go over ``ws``."""
        self._lanes[number] = _Lane(f"ARI REST lane {number}", ws)

    def feed_lane(self, number: int, event: Mapping[str, Any]) -> None:
        """A frame read from lane ``number``: its requests' answers (anything else is
        ignored: no channel enters a lane's application)."""
        lane = self._lanes.get(number)
        if lane is not None and event.get("type") == "RESTResponse":
            lane.answer(event)

    def close_lane(self, number: int, reason: str) -> None:
        """Lane ``number`` dropped or is closed: its waiting requests fail."""
        lane = self._lanes.pop(number, None)
        if lane is None:
            return
        failed = lane.fail(reason)
        if failed:
            log.warning("ARI REST: lane %d down (%s): %d request(s) failed", number, reason, failed)

    # -- RestTransport ---------------------------------------------------------------------

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
        lane = self._lane(key, first)
        if lane is None:
            return await self._http.request(method, path, params, body, timeout=timeout)
        rid = str(next(self._ids))
        fut: asyncio.Future[RestResponse] = asyncio.get_running_loop().create_future()
        lane.pending[rid] = fut
        if key is not None:
            # The channel's next requests take this socket until Asterisk has answered this
            # one or the socket dropped: also after a timeout, since Asterisk still carries
            # it out then, after what was queued before it.
            fut.add_done_callback(self._settled(key, self._pin(key, lane)))
        try:
            async with asyncio.timeout(timeout):  # TimeoutError: the client's AriTimeout
                try:
                    await lane.ws.send_str(_frame(rid, method, path, params, body))
                except (ConnectionError, aiohttp.ClientError) as exc:
                    # Not sent: the socket is closing and its reader has not noticed yet.
                    # Nothing reached Asterisk, so HTTP may carry it without doing it twice.
                    log.info(
                        "ARI REST: %s %s over HTTP: %s send failed: %s",
                        method,
                        path,
                        lane.name,
                        exc,
                    )
                    lane.pending.pop(rid, None)
                    fut.cancel()  # nothing to wait for on the socket
                    return await self._http.request(method, path, params, body, timeout=timeout)
                # Shielded: giving up (a timeout, a cancelled call) ends the wait, not the
                # request, which stays pending until its answer comes or its socket drops.
                return await asyncio.shield(fut)
        finally:
            if key is None:  # no order to keep: forget it
                lane.pending.pop(rid, None)
                fut.cancel()

    def _settled(self, key: str, pin: _Pin) -> Callable[[asyncio.Future[RestResponse]], None]:
        def settled(fut: asyncio.Future[RestResponse]) -> None:
            if not fut.cancelled():
                fut.exception()  # seen by its request, or by nobody once it gave up
            self._unpin(key, pin)

        return settled

    def _pin(self, key: str, lane: _Lane) -> _Pin:
        """Channel ``key`` has a request waiting on ``lane``: its next requests take it."""
        pin = self._pins.get(key)
        if pin is None or pin.lane is not lane:  # none, or on a lane that dropped since
            pin = self._pins[key] = _Pin(lane)
        pin.count += 1
        return pin

    def _unpin(self, key: str, pin: _Pin) -> None:
        pin.count -= 1
        if not pin.count and self._pins.get(key) is pin:
            del self._pins[key]

    def _lane(self, key: str | None, first: bool) -> _Lane | None:
        """The socket for a request of channel ``key`` (None: of no channel), of an
        emergency line when ``first``; None: HTTP (no socket carries REST now)."""
        main = self._main
        if main is None:
            return None
        if key is not None:
            pin = self._pins.get(key)
            if pin is not None and pin.lane.open:
                return pin.lane  # one of its requests waits there: the next goes after it
        count = self._count
        if not count:
            return main
        if first:
            return self._lanes.get(count, main)
        if key is None:
            return main
        # The events socket and the first count - 1 lanes share the channels (the last
        # lane is the emergency lines').
        number = zlib.crc32(key.encode()) % count
        return self._lanes.get(number, main) if number else main


def _frame(rid: str, method: str, path: str, params: Mapping[str, str] | None, body: Any) -> str:
    """The ``RESTRequest`` frame's text: what ``json.dumps`` of the frame's dict gives, written
    out (dumps and ``urlencode`` were a tenth of a request's CPU, on the event loop)."""
    # ``uri`` is the path under /ari without its leading slash, with its query string.
    uri = path.lstrip("/")
    if params:
        uri += "?" + "&".join(quote_plus(k) + "=" + quote_plus(v) for k, v in params.items())
    text = (
        f'{{"type": "RESTRequest", "request_id": {_quoted(rid)}, '
        f'"method": {_quoted(method)}, "uri": {_quoted(uri)}'
    )
    if body is not None:
        text += f', "content_type": "application/json", "message_body": {_quoted(json.dumps(body))}'
    return text + "}"


def _rest_response(msg: WSMessageNoDecodeText) -> dict[str, Any] | None:
    if msg.type not in DATA_FRAMES:
        return None
    try:
        data = json.loads(msg.data)
    except ValueError:
        return None
    if isinstance(data, dict) and data.get("type") == "RESTResponse":
        return data
    return None


def _response(event: Mapping[str, Any]) -> RestResponse:
    body = event.get("message_body")
    if body is None:
        raw = b""
    elif isinstance(body, str):
        raw = body.encode()
    else:  # an object, in case Asterisk sends the JSON itself rather than its text
        raw = json.dumps(body).encode()
    status = event.get("status_code")
    return RestResponse(
        status if isinstance(status, int) else 502, raw, str(event.get("reason_phrase") or "")
    )
