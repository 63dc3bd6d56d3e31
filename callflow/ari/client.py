"""A small client for the Asterisk REST Interface (ARI), on aiohttp.

Two halves share one ``aiohttp.ClientSession`` with a bounded keep-alive pool (Asterisk's
HTTP server accepts only ``sessionlimit`` = 100 connections by default):

* ``AriClient.request`` and its thin helpers call the REST API under ``{url}/ari`` and map
  every failure onto the ``AriError`` tree of ``callflow.ari.faults``;
* ``AriClient.events`` reads the events websocket of the Stasis application, reconnecting
  with jittered exponential backoff until ``close()``, and reports each (re)connection and
  each drop as a synthetic event so the runtime can run recovery.

Credentials travel only in the ``Authorization`` header; they are never logged and never
shown by ``repr``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json as jsonlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote

import aiohttp
import yarl

from callflow.ari.faults import (
    AriConnectionError,
    AriError,
    AriHTTPError,
    AriTimeout,
    error_for_status,
)
from callflow.ari.frames import DATA_FRAMES, drop_reason, parse_frame
from callflow.ari.lanes import CLOSE_TIMEOUT as LANE_CLOSE_TIMEOUT
from callflow.ari.lanes import STOP_TIMEOUT as LANES_STOP_TIMEOUT
from callflow.ari.lanes import RestLanes
from callflow.ari.overload import goes_first
from callflow.ari.transport import HttpTransport, RestTransport
from callflow.ari.websocket import HTTP, TRANSPORTS, WEBSOCKET, SocketTransport, TransportMode
from callflow.reconnect import Backoff, Supervisor

__all__ = [
    "APP_REPLACED",
    "CLIENT_EVENTS",
    "EVENT_CONNECTED",
    "EVENT_DISCONNECTED",
    "TRANSPORT_EVENTS",
    "AriClient",
    "AriConfig",
    "ParamValue",
]

log = logging.getLogger("callflow.ari")

# aiohttp rounds a timer over this many seconds up to the next whole second.
_AIOHTTP_CEIL: Final = 5.0

#: ``type`` of the synthetic event yielded by ``AriClient.events`` after each (re)connection.
EVENT_CONNECTED: Final = "CallflowConnected"
#: ``type`` of the synthetic event yielded after each drop; its ``reason`` says why.
EVENT_DISCONNECTED: Final = "CallflowDisconnected"

#: What the client itself reads among the events, whatever the caller of ``events()``
#: handles: the answers to REST requests sent over the websocket (Asterisk filters them
#: like any event, so an event filter without them would starve the websocket transport).
TRANSPORT_EVENTS: Final = frozenset({"RESTResponse"})
#: Sent when another websocket took the application: this one gets no more calls.
APP_REPLACED: Final = "ApplicationReplaced"
#: What the client asks Asterisk for besides the events the application reads.
CLIENT_EVENTS: Final = TRANSPORT_EVENTS | frozenset({APP_REPLACED})

# Statuses of an Asterisk that cannot filter an application's events (the route is unknown,
# or the method) or of an application gone meanwhile: carry on unfiltered.
_NO_FILTER: Final = frozenset({400, 404, 405, 501})

#: A query parameter value; booleans are sent as ``true``/``false`` as ARI expects.
ParamValue = str | int | float | bool

#: The most REST lanes a client opens (each is a socket and a thread in Asterisk).
MAX_LANES: Final = 16

# Longest error body quoted in an exception message when it is not ARI's JSON.
_MAX_ERROR_TEXT: Final = 200


@dataclass(frozen=True)
class AriConfig:
    """Where and how to reach ARI.

    ``url`` is the Asterisk HTTP server (``http://127.0.0.1:8088``); REST calls go to
    ``{url}/ari/...`` and events to ``ws://…/ari/events?app={app}``.  ``repr`` never shows
    the password.

    ``pool_size`` bounds the keep-alive pool of the client's own session (Asterisk's
    ``sessionlimit`` is 100 by default); the events websocket holds one of its connections.
    ``heartbeat`` (seconds, ``None`` to disable) pings the events websocket and the lanes
    so a dead peer is noticed (within ``loss_noticed_within``); a connection that stayed up
    ``stable_after`` seconds resets the backoff.

    ``transport`` says how REST requests travel: ``http`` (the pool), ``websocket`` (over
    the events websocket, see ``callflow.ari.websocket``) or ``auto`` (the websocket when
    Asterisk answers a probe over it within ``probe_timeout`` s at connect, else HTTP).
    Whatever the mode, requests go over HTTP while the events websocket is down.
    ``rest_lanes`` more websockets (each for an application ``{app}-rest<n>`` that no
    channel enters) carry REST beside the events socket while it carries REST: the calls'
    requests are spread over it and all lanes but the last, which carries only an
    emergency line's (``callflow.ari.lanes``).  Each holds one of the pool's connections.
    None here; the daemon's ``[ari] rest_lanes`` opens one, the emergency lines' own.
    """

    url: str
    app: str
    username: str
    password: str = field(repr=False)
    request_timeout: float = 10.0
    pool_size: int = 20
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    heartbeat: float | None = 5.0
    stable_after: float = 10.0
    transport: TransportMode = "auto"
    probe_timeout: float = 3.0
    rest_lanes: int = 0

    def __post_init__(self) -> None:
        url = yarl.URL(self.url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"ARI url must be http(s)://host[:port], got {url.with_user(None)}")
        if url.user is not None or url.password is not None:
            raise ValueError("ARI url must not embed credentials; set username and password")
        if not self.app:
            raise ValueError("ARI app name must not be empty")
        if ":" in self.username:
            raise ValueError("ARI username must not contain ':'")
        if self.request_timeout <= 0:
            raise ValueError("ARI request_timeout must be > 0")
        if self.pool_size < 1:
            raise ValueError("ARI pool_size must be >= 1")
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise ValueError("ARI backoff must satisfy 0 < backoff_initial <= backoff_max")
        if self.heartbeat is not None and self.heartbeat <= 0:
            raise ValueError("ARI heartbeat must be > 0 (or None)")
        if self.stable_after < 0:
            raise ValueError("ARI stable_after must be >= 0")
        if self.transport not in TRANSPORTS:
            raise ValueError(f"ARI transport must be one of {', '.join(TRANSPORTS)}")
        if self.probe_timeout <= 0:
            raise ValueError("ARI probe_timeout must be > 0")
        if not 0 <= self.rest_lanes <= MAX_LANES:
            raise ValueError(f"ARI rest_lanes must be between 0 and {MAX_LANES}")
        if self.lanes and self.pool_size < self.lanes + 3:
            # The events socket, the lanes, one connection for the ordinary requests over
            # HTTP and one kept for an emergency call's.
            raise ValueError(
                f"ARI pool_size ({self.pool_size}) must be at least rest_lanes + 3 "
                f"({self.rest_lanes + 3}): each lane holds one of its connections "
                "(or set rest_lanes = 0)"
            )

    @property
    def loss_noticed_within(self) -> float:
        """Seconds after Asterisk's last word within which a silent loss of it (no close,
        no reset: a power cut, a network lost) is reported (``CallflowDisconnected``):
        aiohttp pings ``heartbeat`` seconds after the last frame, then gives up
        ``heartbeat / 2`` later (each rounded up to the next second when over 5 s), and
        the lanes get up to their stop timeout to close before the drop is reported.  0
        without a heartbeat (only a closed or reset connection is noticed, at once)."""
        if self.heartbeat is None:
            return 0.0
        timers = (self.heartbeat, self.heartbeat / 2)
        noticed = sum(t + (1.0 if t > _AIOHTTP_CEIL else 0.0) for t in timers)
        return noticed + (LANES_STOP_TIMEOUT if self.lanes else 0.0)

    @property
    def lanes(self) -> int:
        """The lanes this client may open: none when REST goes over HTTP."""
        return 0 if self.transport == HTTP else self.rest_lanes

    @property
    def rest_url(self) -> str:
        """Base of the REST API, without a trailing slash (``http://host:8088/ari``)."""
        return self.url.rstrip("/") + "/ari"

    @property
    def events_url(self) -> str:
        """The events websocket, without its query (``ws://host:8088/ari/events``)."""
        base = self.rest_url
        if base.startswith("https:"):
            return "wss:" + base[len("https:") :] + "/events"
        return "ws:" + base[len("http:") :] + "/events"


class AriClient:
    """ARI REST calls and the events websocket of one Stasis application.

    Use as ``async with AriClient(config) as ari: ...`` or call ``close()``.  Pass
    ``session`` to use your own ``aiohttp.ClientSession`` (it is then neither configured
    nor closed by the client); ``transport`` to carry the REST requests some other way
    than HTTP over that session (see ``callflow.ari.transport``); ``rng``, ``sleep`` and
    ``clock`` drive the reconnection backoff and exist so it can be tested without waiting.
    """

    def __init__(
        self,
        config: AriConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        transport: RestTransport | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._session = session
        self._owns_session = session is None
        self._headers: Final = {
            "Authorization": aiohttp.encode_basic_auth(config.username, config.password)
        }
        self._rng = rng or random.Random()
        # The events websocket: connect, read, back off, again, until close().
        self._supervisor = Supervisor(
            "ARI events",
            self._connect_events,
            Backoff(config.backoff_initial, config.backoff_max, self._rng),
            retry_on=(AriError,),
            discard=self._discard,
            logger=log,
            stable_after=config.stable_after,
            sleep=sleep,
            clock=clock,
        )
        self._sleep = sleep
        self._clock = clock
        self._ws: aiohttp.ClientWebSocketResponse[bool] | None = None
        self.in_flight = 0  # REST requests asked for and not yet answered (not aside)
        # Ordinary requests share these slots, in order; an emergency call's skip them.  The
        # pool's other connections are kept out of them: one holds the events websocket,
        # one each lane, and one stays free for an emergency call's request.
        self._slots = asyncio.Semaphore(max(1, config.pool_size - 2 - config.lanes))
        self._events_active = False
        http = transport or HttpTransport(self._require_session, config.rest_url, self._headers)
        # REST over the events websocket where the mode allows it (HTTP while it is down).
        self._socket_rest: SocketTransport | None = None
        if config.transport != HTTP:
            probe = min(config.probe_timeout, config.request_timeout)
            self._socket_rest = SocketTransport(http, config.transport, probe)
        self._transport: RestTransport = self._socket_rest or http
        self._http = http  # for the requests sent aside of the websocket (``aside``)
        self._sent: dict[str, int] = {WEBSOCKET: 0, HTTP: 0}
        self._filter_refused = False  # logged once

    def __repr__(self) -> str:
        return (
            f"AriClient(url={self.config.url!r}, app={self.config.app!r}, "
            f"connected={self.connected})"
        )

    async def __aenter__(self) -> Self:
        # The session is made on first use: a client on another transport may never need it.
        if self.closed:
            raise AriConnectionError("the ARI client is closed")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop ``events()`` (it returns), close the websocket and the owned session.

        Safe to call more than once.  REST calls made afterwards raise ``AriConnectionError``.
        """
        self._supervisor.stop()
        ws = self._ws
        if ws is not None and not ws.closed:
            await ws.close()
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()

    @property
    def closed(self) -> bool:
        """True once ``close()`` has been called."""
        return self._supervisor.stopped

    @property
    def reconnects(self) -> int:
        """Number of times the events websocket was connected again after the first time."""
        return self._supervisor.reconnects

    @property
    def connected(self) -> bool:
        """True while the events websocket is open."""
        return self._ws is not None and not self._ws.closed

    @property
    def rest_transport(self) -> str:
        """How REST requests travel now: ``websocket`` or ``http``."""
        return HTTP if self._socket_rest is None else self._socket_rest.in_use

    @property
    def rest_lanes_open(self) -> int:
        """REST lanes open now beside the events socket (``AriConfig.rest_lanes``)."""
        return 0 if self._socket_rest is None else self._socket_rest.lanes_open

    @property
    def rest_requests(self) -> dict[str, int]:
        """REST requests sent since the start, by transport (``websocket``, ``http``)."""
        return dict(self._sent)

    # -- REST ------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, ParamValue] | None = None,
        json: Any = None,
        timeout: float | None = None,
        aside: bool = False,
        key: str | None = None,
    ) -> Any:
        """Call ``{url}/ari{path}`` and return the parsed JSON answer (``None`` when empty).

        ``path`` starts with ``/`` and has its variable segments already quoted (the
        helpers do it).  ``timeout`` (seconds) defaults to ``config.request_timeout``.
        ``aside``: over HTTP even when REST goes over the websocket, for a call's one
        request (a shed call's handoff to the dialplan): Asterisk carries out a websocket's
        requests one after the other, and an overloaded daemon's queue there is long.
        ``key``: the channel the request acts on, whose requests must be carried out in
        order (the helpers pass it; see ``RestTransport``).
        Raises ``AriTimeout``, ``AriConnectionError``, an ``AriHTTPError`` subclass for an
        error status, or ``AriError`` when a success answer is not JSON.
        """
        if not path.startswith("/"):
            raise ValueError(f"ARI path must start with '/': {path!r}")
        method = method.upper()
        if self.closed:
            raise AriConnectionError("the ARI client is closed")
        total = self.config.request_timeout if timeout is None else timeout
        query = _encode_params(params) if params else None
        first = goes_first()
        way = HTTP if aside else self.rest_transport
        transport = self._http if aside else self._transport
        # Read by the overload shedding and the metrics.  A shed call's handoff (aside) is
        # not counted: it would keep the count over its budget, so shedding would go on
        # because it sheds (seen at 200 calls/s: every new call shed for ten seconds).
        counted = not aside
        self.in_flight += counted
        self._sent[way] += 1
        try:
            # An emergency call is never held behind the others; over the websocket there
            # is no pool to queue for.  The transport bounds its request by ``total``.
            if way == WEBSOCKET or first:
                resp = await transport.request(
                    method, path, query, json, timeout=total, key=key, first=first
                )
            else:
                async with asyncio.timeout(total):  # the wait for a slot counts too
                    async with self._slots:
                        resp = await transport.request(
                            method, path, query, json, timeout=total, key=key
                        )
        except TimeoutError as exc:
            raise AriTimeout(
                f"{method} {path}: no answer from Asterisk within {total:g} s"
            ) from exc
        finally:
            self.in_flight -= counted
        status, body = resp.status, resp.body
        log.debug("ARI %s %s -> %d", method, path, status)
        if not 200 <= status < 300:
            message = _error_message(body, resp.reason, status)
            raise error_for_status(status, message, method, path)
        if status == 204 or not body.strip():
            return None
        try:
            return jsonlib.loads(body)
        except ValueError as exc:
            raise AriError(f"{method} {path}: Asterisk answered with invalid JSON") from exc

    async def filter_events(self, types: Iterable[str]) -> bool:
        """Ask Asterisk to send the application only the events of ``types`` (and the
        client's own, ``CLIENT_EVENTS``): the others are never encoded, sent nor decoded.
        The filter belongs to the application in Asterisk, so it is set again at each
        connection.  False when this Asterisk cannot filter (logged once, at INFO): the
        events then come unfiltered, which costs CPU and nothing else."""
        allowed = sorted(set(types) | CLIENT_EVENTS)
        body = {"allowed": [{"type": t} for t in allowed], "disallowed": []}
        path = f"/applications/{_seg(self.config.app)}/eventFilter"
        try:
            await self.request("PUT", path, json=body)
        except AriHTTPError as exc:
            if exc.status not in _NO_FILTER:
                raise
            if not self._filter_refused:
                self._filter_refused = True
                log.info("ARI events: Asterisk does not filter them (%s): all are sent", exc)
            return False
        log.debug("ARI events: only %s are sent", ", ".join(allowed))
        return True

    async def get_application(self) -> dict[str, Any]:
        """The Stasis application (``GET /applications/{app}``)."""
        return _object(await self.request("GET", f"/applications/{_seg(self.config.app)}"))

    async def channels_in_app(self) -> list[str]:
        """Ids of the channels currently in the Stasis application."""
        ids = (await self.get_application()).get("channel_ids", [])
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise AriError("Asterisk answered with an invalid channel_ids list")
        return ids

    async def list_modules(self) -> list[dict[str, Any]]:
        """Asterisk's loaded modules (``GET /asterisk/modules``): name, status..."""
        data = await self.request("GET", "/asterisk/modules")
        if not isinstance(data, list) or not all(isinstance(m, dict) for m in data):
            raise AriError("Asterisk answered with an invalid module list")
        return data

    async def list_channels(self) -> list[dict[str, Any]]:
        """Every active channel of Asterisk (``GET /channels``)."""
        data = await self.request("GET", "/channels")
        if not isinstance(data, list) or not all(isinstance(c, dict) for c in data):
            raise AriError("Asterisk answered with an invalid channel list")
        return data

    async def get_channel(self, channel_id: str) -> dict[str, Any]:
        path = f"/channels/{_seg(channel_id)}"
        return _object(await self.request("GET", path, key=channel_id))

    async def answer(self, channel_id: str) -> None:
        await self.request("POST", f"/channels/{_seg(channel_id)}/answer", key=channel_id)

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        path = f"/channels/{_seg(channel_id)}"
        await self.request("DELETE", path, params={"reason": reason}, key=channel_id)

    async def ring(self, channel_id: str) -> None:
        """Indicate ringing to the channel (before it is answered)."""
        await self.request("POST", f"/channels/{_seg(channel_id)}/ring", key=channel_id)

    async def play(
        self,
        channel_id: str,
        media: Sequence[str] | str,
        playback_id: str | None = None,
        lang: str | None = None,
    ) -> dict[str, Any]:
        """Start playing ``media`` (a URI such as ``sound:hello``, or several in turn);
        returns the Playback object."""
        uris = media if isinstance(media, str) else ",".join(media)
        if not uris:
            raise ValueError("play needs at least one media URI")
        params: dict[str, ParamValue] = {"media": uris}
        if playback_id is not None:
            params["playbackId"] = playback_id
        if lang is not None:
            params["lang"] = lang
        path = f"/channels/{_seg(channel_id)}/play"
        return _object(await self.request("POST", path, params=params, key=channel_id))

    async def get_playback(self, playback_id: str) -> dict[str, Any]:
        """The Playback object (``AriNotFound`` once it is over)."""
        return _object(await self.request("GET", f"/playbacks/{_seg(playback_id)}"))

    async def stop_playback(self, playback_id: str, channel_id: str | None = None) -> None:
        """Stop a playback; ``channel_id``: the channel it plays on, whose requests keep
        their order (a stop then a hangup must not be carried out the other way round)."""
        await self.request("DELETE", f"/playbacks/{_seg(playback_id)}", key=channel_id)

    async def originate(
        self,
        endpoint: str,
        *,
        app: str | None = None,
        app_args: str | None = None,
        channel_id: str | None = None,
        timeout: int | None = None,
        caller_id: str | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create a channel to ``endpoint`` (e.g. ``PJSIP/accueil``) that enters Stasis
        application ``app`` (default: ours) on answer; ``timeout`` is the ringing time in
        seconds.  Returns the Channel object."""
        params: dict[str, ParamValue] = {"endpoint": endpoint, "app": app or self.config.app}
        if app_args is not None:
            params["appArgs"] = app_args
        if channel_id is not None:
            params["channelId"] = channel_id
        if timeout is not None:
            params["timeout"] = timeout
        if caller_id is not None:
            params["callerId"] = caller_id
        body = {"variables": dict(variables)} if variables else None
        answer = await self.request("POST", "/channels", params=params, json=body, key=channel_id)
        return _object(answer)

    async def create_bridge(
        self, type: str = "mixing", bridge_id: str | None = None
    ) -> dict[str, Any]:
        params: dict[str, ParamValue] = {"type": type}
        if bridge_id is not None:
            params["bridgeId"] = bridge_id
        return _object(await self.request("POST", "/bridges", params=params))

    async def add_channel(self, bridge_id: str, channel_ids: Sequence[str] | str) -> None:
        ids = channel_ids if isinstance(channel_ids, str) else ",".join(channel_ids)
        path = f"/bridges/{_seg(bridge_id)}/addChannel"
        await self.request("POST", path, params={"channel": ids})

    async def destroy_bridge(self, bridge_id: str) -> None:
        await self.request("DELETE", f"/bridges/{_seg(bridge_id)}")

    async def set_variable(self, channel_id: str, name: str, value: str) -> None:
        path = f"/channels/{_seg(channel_id)}/variable"
        params = {"variable": name, "value": value}
        await self.request("POST", path, params=params, key=channel_id)

    async def get_variable(self, channel_id: str, name: str) -> str:
        path = f"/channels/{_seg(channel_id)}/variable"
        answer = await self.request("GET", path, params={"variable": name}, key=channel_id)
        value = _object(answer).get("value")
        if not isinstance(value, str):
            raise AriError(f"GET {path}: Asterisk answered without a string value")
        return value

    async def continue_in_dialplan(
        self,
        channel_id: str,
        context: str | None = None,
        extension: str | None = None,
        priority: int | None = None,
        label: str | None = None,
        *,
        aside: bool = False,
    ) -> None:
        """Leave Stasis and go on in the dialplan (at the given place, if any).  A ``label``
        that the extension lacks is refused with 404 (``AriNotFound``), where a missing
        priority would be accepted and the call hung up by the dialplan.  ``aside``: over
        HTTP (see ``request``)."""
        params: dict[str, ParamValue] = {}
        if context is not None:
            params["context"] = context
        if extension is not None:
            params["extension"] = extension
        if priority is not None:
            params["priority"] = priority
        if label is not None:
            params["label"] = label
        path = f"/channels/{_seg(channel_id)}/continue"
        await self.request("POST", path, params=params, aside=aside, key=channel_id)

    async def start_moh(self, channel_id: str, moh_class: str | None = None) -> None:
        params: dict[str, ParamValue] = {} if moh_class is None else {"mohClass": moh_class}
        path = f"/channels/{_seg(channel_id)}/moh"
        await self.request("POST", path, params=params, key=channel_id)

    async def stop_moh(self, channel_id: str) -> None:
        await self.request("DELETE", f"/channels/{_seg(channel_id)}/moh", key=channel_id)

    # -- events ----------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Yield the events of ``config.app`` until ``close()``, reconnecting forever.

        After each successful (re)connection it yields ``{"type": "CallflowConnected"}``;
        after each drop (including a clean close by Asterisk) it yields
        ``{"type": "CallflowDisconnected", "reason": str}`` and waits a backoff delay (full
        jitter under a cap that doubles from ``backoff_initial`` to ``backoff_max``, reset
        after a connection that stayed up ``stable_after`` seconds) before trying again.
        Failed connection attempts are logged and retried with the same backoff.  Frames
        that are not a JSON event object are logged and skipped.  Only one iteration may
        run at a time.
        """
        if self._events_active:
            raise RuntimeError("AriClient.events() is already being iterated")
        self._events_active = True
        try:
            async with contextlib.aclosing(self._supervisor.sessions()) as sessions:
                async for ws in sessions:
                    self._ws = ws
                    rest = self._socket_rest
                    reason = "closed"
                    wait = 0.0  # the least wait before connecting again
                    try:
                        # What the probe read besides its answer comes first, in order.
                        backlog = await rest.attach(ws) if rest is not None else []
                        log.info(
                            "ARI events: connected (app %s; REST over %s)",
                            self.config.app,
                            self.rest_transport,
                        )
                        # The lanes live as long as this connection (none: no task at all).
                        async with self._lanes(rest):
                            try:
                                yield {"type": EVENT_CONNECTED}
                                while True:
                                    msg = backlog.pop(0) if backlog else await ws.receive()
                                    if msg.type not in DATA_FRAMES:
                                        reason = drop_reason(ws, msg.type, msg.data)
                                        break
                                    event = parse_frame(msg.data)
                                    if event is None:
                                        continue
                                    if event.get("type") == APP_REPLACED:
                                        reason = self._replaced()
                                        wait = self.config.backoff_max
                                        break
                                    if not (rest and rest.feed(event)):
                                        yield event
                            finally:
                                # At once, not after the lanes' closing: from now on the
                                # requests go over HTTP, and those waiting here fail.
                                self._ws = None
                                if rest is not None:
                                    rest.detach(reason)
                    finally:
                        self._ws = None
                        if rest is not None:  # requests waiting on this socket fail now
                            rest.detach(reason)
                        await ws.close()
                    if self.closed:
                        return
                    self._supervisor.lost(reason, at_least=wait)  # it logs it, backs off
                    yield {"type": EVENT_DISCONNECTED, "reason": reason}
        finally:
            self._events_active = False

    # -- internals -------------------------------------------------------------------------

    def _lanes(self, rest: SocketTransport | None) -> contextlib.AbstractAsyncContextManager[Any]:
        """The REST lanes for the events connection just made, when REST travels over it."""
        count = self.config.lanes
        if rest is None or rest.in_use != WEBSOCKET or not count:
            return contextlib.nullcontext()
        return RestLanes(
            rest,
            count,
            self.config.app,
            self._connect_lane,
            backoff_initial=self.config.backoff_initial,
            backoff_max=self.config.backoff_max,
            rng=self._rng,
            stable_after=self.config.stable_after,
            sleep=self._sleep,
            clock=self._clock,
        )

    async def _connect_lane(self, app: str) -> aiohttp.ClientWebSocketResponse[bool]:
        return await self._connect_events(app, close_timeout=LANE_CLOSE_TIMEOUT)

    def _replaced(self) -> str:
        """Another program opened the events websocket of this application: Asterisk now
        sends it the calls, and this socket gets none.  The socket is dropped (health and
        metrics show ARI down) and taken back after ``backoff_max``: calls must reach the
        daemon, but two daemons sharing one application name fight only that slowly."""
        app = self.config.app
        log.error(
            "ARI events: another program took the Stasis application %r (a second daemon "
            "or a tool with the same [ari] app?): this daemon gets no calls; taking it back "
            "in %g s",
            app,
            self.config.backoff_max,
        )
        return f"another program took the application {app!r}"

    def _require_session(self) -> aiohttp.ClientSession:
        if self.closed:
            raise AriConnectionError("the ARI client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.config.pool_size),
                timeout=aiohttp.ClientTimeout(total=self.config.request_timeout),
            )
        return self._session

    async def _connect_events(
        self, app: str | None = None, close_timeout: float | None = None
    ) -> aiohttp.ClientWebSocketResponse[bool]:
        """Open the events websocket of ``app`` (default: ours; a lane's, else), whose
        closing handshake may take ``close_timeout`` (default: ``request_timeout``)."""
        session = self._require_session()
        limit = self.config.request_timeout
        try:
            async with asyncio.timeout(limit):
                return await session.ws_connect(
                    self.config.events_url,
                    params={"app": app or self.config.app, "subscribeAll": "false"},
                    headers=self._headers,
                    heartbeat=self.config.heartbeat,
                    timeout=aiohttp.ClientWSTimeout(
                        ws_receive=None, ws_close=min(limit, close_timeout or limit)
                    ),
                )
        except TimeoutError as exc:
            raise AriTimeout(f"events websocket: no answer within {limit:g} s") from exc
        except aiohttp.WSServerHandshakeError as exc:
            raise error_for_status(exc.status, exc.message, "GET", "/events") from exc
        except aiohttp.ClientError as exc:
            raise AriConnectionError(f"events websocket: cannot reach Asterisk: {exc}") from exc

    @staticmethod
    async def _discard(ws: aiohttp.ClientWebSocketResponse[bool]) -> None:
        await ws.close()


def _seg(value: str) -> str:
    """Quote one path segment (an id or a name) so it cannot change the path."""
    return quote(value, safe="")


def _encode_params(params: Mapping[str, ParamValue]) -> dict[str, str]:
    return {
        key: ("true" if value else "false") if isinstance(value, bool) else str(value)
        for key, value in params.items()
    }


def _error_message(body: bytes, reason: str, status: int) -> str:
    """ARI's ``{"message": ...}``, else the start of the body, else the reason phrase."""
    try:
        data = jsonlib.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])
    text = body.decode("utf-8", errors="replace").strip()
    if text:
        return text[:_MAX_ERROR_TEXT]
    return reason or f"HTTP {status}"


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise AriError(f"Asterisk answered with {type(data).__name__} where an object was due")
    return data
