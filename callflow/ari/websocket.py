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
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii as _quoted
from typing import Any, Final, Literal, Protocol
from urllib.parse import quote_plus

import aiohttp
from aiohttp.http_websocket import WSMessageNoDecodeText

from callflow.ari.faults import AriSocketDropped
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
        self._ws: Socket | None = None  # the socket carrying REST now, if any
        self._pending: dict[str, asyncio.Future[RestResponse]] = {}
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"SocketTransport(mode={self._mode!r}, in_use={self.in_use!r})"

    @property
    def in_use(self) -> str:
        """``websocket`` while a socket carries the requests, ``http`` otherwise."""
        return WEBSOCKET if self._ws is not None else HTTP

    @property
    def pending(self) -> int:
        """Requests sent over the socket and not answered yet."""
        return len(self._pending)

    # -- the events socket's life (called by the AriClient's reader) -----------------------

    async def attach(self, ws: Socket) -> list[WSMessageNoDecodeText]:
        """Carry REST over ``ws`` from now on if Asterisk answers there (always, in
        ``websocket`` mode).  In ``auto`` mode the probe reads ``ws`` itself until its answer
        comes or ``probe_timeout`` passes; what else it read (events, or the socket's close)
        is returned, in order, for the reader to handle first."""
        if self._mode == WEBSOCKET:
            self._ws = ws
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
                    if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        break  # the socket is closing: the reader reports it
        except TimeoutError:
            pass
        except (ConnectionError, aiohttp.ClientError) as exc:
            log.info("ARI REST: probe over the websocket failed: %s", exc)
        if answered:
            self._ws = ws
            log.info("ARI REST: Asterisk answers over the events websocket: using it")
        else:
            log.info("ARI REST: Asterisk does not answer over the events websocket: HTTP")
        return read

    def feed(self, event: Mapping[str, Any]) -> bool:
        """Take a frame read from the socket: True when it was a ``RESTResponse`` (handed to
        its request, or dropped when that request already gave up), False for an event."""
        if event.get("type") != "RESTResponse":
            return False
        fut = self._pending.pop(str(event.get("request_id")), None)
        if fut is not None and not fut.done():
            fut.set_result(_response(event))
        return True

    def detach(self, reason: str) -> None:
        """The socket dropped: stop using it, and fail every request waiting on it."""
        self._ws = None
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(AriSocketDropped(f"events websocket dropped ({reason})"))
        if pending:
            log.warning("ARI REST: %d request(s) failed: the websocket dropped", len(pending))

    # -- RestTransport ---------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: Any,
        *,
        timeout: float,
    ) -> RestResponse:
        ws = self._ws
        if ws is None:
            return await self._http.request(method, path, params, body, timeout=timeout)
        rid = str(next(self._ids))
        fut: asyncio.Future[RestResponse] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            async with asyncio.timeout(timeout):  # TimeoutError: the client's AriTimeout
                try:
                    await ws.send_str(_frame(rid, method, path, params, body))
                except (ConnectionError, aiohttp.ClientError) as exc:
                    # Not sent: the socket is closing and the reader has not noticed yet.
                    # Nothing reached Asterisk, so HTTP may carry it without doing it twice.
                    log.info(
                        "ARI REST: %s %s over HTTP: websocket send failed: %s", method, path, exc
                    )
                    self._pending.pop(rid, None)
                    return await self._http.request(method, path, params, body, timeout=timeout)
                return await fut
        finally:
            self._pending.pop(rid, None)


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
    if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
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
