"""The FastAGI listener: one TCP connection per call, each run through the same engine.

A connection from an address not in ``allow`` is closed at once, before a byte is read.
Each allowed connection is a session task owned by the server's ``Tasks``: its request is
read (bounded in size and time), its flow chosen (``agi://host/FLOW`` names it, else the
dialed number), and the engine runs the call.  A peer that sends garbage or vanishes costs
its own session only.

Used as an async context manager (a part of ``Daemon.parts``): leaving it stops listening
(Asterisk's ``AGI()`` then fails at once, ``AGISTATUS=FAILURE``, and the dialplan puts the
caller through to a human), lets calls finish for ``stop_grace`` s, then ends the rest:
closing a session returns the caller to the dialplan, which does the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from ..flow.engine import Engine
from ..flow.live import LiveFlows
from ..flow.registry import LoadedFlow
from ..tasks import Tasks
from .agicall import AgiCall
from .protocol import MAX_LINE, AgiError, AgiRequest, AgiSession, read_request

log = logging.getLogger("callflow.agi")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def allowed(host: str, allow: Sequence[Network]) -> bool:
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr.version == net.version and addr in net for net in allow)


@dataclass(frozen=True)
class AgiConfig:
    host: str = "127.0.0.1"
    port: int = 4573
    allow: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.1/32"),)
    request_timeout: float = 5.0  # the request headers must arrive within this
    command_timeout: float = 10.0  # a command that is not a prompt, a wait or a dial
    stop_grace: float = 30.0


# Overload admission, the daemon's one for both drivers: given whether the flow may never
# be shed, None to run a new call, else why it is shed.
Admission = Callable[[bool], str | None]


class AgiServer:
    def __init__(
        self,
        engine: Engine,
        flows: LiveFlows,
        config: AgiConfig,
        *,
        admit: Admission | None = None,
    ) -> None:
        self.engine = engine
        self.flows = flows
        self.config = config
        self.admit = admit  # None: never shed
        self.calls: dict[str, AgiCall] = {}
        self.accepting = False
        self.refused = 0  # connections from an address not allowed
        self.rejected = 0  # sessions that were not AGI (garbage, timeout, too long)
        self.port: int | None = None  # the port bound (the configured one may be 0)
        self._sessions = Tasks("FastAGI", log)
        self._server: asyncio.Server | None = None
        self._numbers = itertools.count(1)

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(
            self._accept, self.config.host, self.config.port, limit=MAX_LINE
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        self.accepting = True
        log.info("FastAGI listening on %s:%d", self.config.host, self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop(self.config.stop_grace)

    async def stop(self, grace: float) -> None:
        self.accepting = False
        try:
            if self._server is not None:
                self._server.close()  # new AGI() calls fail over to the dialplan at once
            if len(self._sessions):
                n = len(self.calls)
                log.info("FastAGI stopping: waiting up to %.0f s for %d call(s)", grace, n)
                await self._sessions.wait(grace)
        finally:
            await self._sessions.aclose()  # the rest: each session returns to the dialplan
            if self._server is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._server.wait_closed(), 5)

    # -- connections ---------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A new connection (never blocks): refused, or a session task of ours."""
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if not allowed(host, self.config.allow):
            self.refused += 1
            log.warning("FastAGI: connection from %s refused (not in [agi] allow)", host)
            writer.transport.abort()
            return
        n = next(self._numbers)
        task = self._sessions.spawn(self._session(reader, writer, host), f"agi-{n}")
        if task is None:  # stopping
            writer.transport.abort()

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str
    ) -> None:
        session = AgiSession(reader, writer, command_timeout=self.config.command_timeout)
        try:
            try:
                request = await read_request(reader, self.config.request_timeout)
            except AgiError as exc:
                self.rejected += 1
                log.warning("FastAGI: a request from %s refused: %s", host, exc)
                return
            await self._run(session, request)
        finally:
            await session.close()

    async def _run(self, session: AgiSession, request: AgiRequest) -> None:
        dialed = request.get("arg_1") or request.extension
        call_id = request.uniqueid or f"agi-{next(self._numbers)}"
        call = AgiCall(session, request, dialed=dialed, call_id=call_id)
        if not self.accepting:
            log.warning("call=%s arrived while stopping: sent to the dialplan fallback", call.id)
            await call.last_resort()
            return
        flow = self._flow(request, dialed)
        if flow is None:
            log.error("call=%s: no flow and no default: dialplan fallback", call.id)
            await call.last_resort()
            return
        why = self.admit(flow.spec.never_shed) if self.admit is not None else None
        if why is not None:
            log.warning("call=%s shed (%s): sent to the dialplan fallback", call.id, why)
            await self.engine.shed(flow, call, why)  # logged once, as shed (or failed)
            return
        self.calls[call.id] = call
        try:
            await self.engine.run(flow, call)
        finally:
            self.calls.pop(call.id, None)

    def _flow(self, request: AgiRequest, dialed: str) -> LoadedFlow | None:
        """The flow ``agi://host/FLOW`` names; without one, the dialed number's."""
        name = request.script.split("?", 1)[0]
        if name:
            flow = self.flows.current.flows.get(name)
            if flow is not None:
                return flow
            log.warning("FastAGI: no flow named %r: the dialed number chooses", name[:40])
        return self.flows.for_number(dialed)
