"""REST lanes: a few more websockets beside the events socket, to carry REST requests.

Why they exist is told in ``callflow.ari.websocket`` ("Lanes").  ``RestLanes`` owns them
for the life of one connection of the events socket: the ARI client enters it once that
socket carries REST, and leaves it when the socket drops or the client closes.  Inside,
each lane is kept connected on its own (a ``Supervisor``: connect, read the answers, back
off, again); at the exit every lane is closed and its waiting requests fail.  A client with
no lane (``rest_lanes = 0``) never makes one: no task, no socket.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Protocol, Self

from aiohttp.http_websocket import WSMessageNoDecodeText

from callflow.ari.faults import AriError
from callflow.ari.frames import DATA_FRAMES, drop_reason, parse_frame
from callflow.ari.websocket import SocketTransport
from callflow.reconnect import Backoff, Supervisor
from callflow.tasks import Tasks

__all__ = ["CLOSE_TIMEOUT", "STOP_TIMEOUT", "RestLanes", "lane_app"]

log = logging.getLogger("callflow.ari")

#: The bound of a lane's closing handshake (the client connects lanes with it): Asterisk
#: reads a lane's close only after the requests queued before it.
CLOSE_TIMEOUT = 2.0
#: How long the lanes get to close by themselves at the exit before they are cancelled.
STOP_TIMEOUT = CLOSE_TIMEOUT + 1.0


class LaneSocket(Protocol):
    """What a lane needs of its websocket (aiohttp's client socket)."""

    async def send_str(self, data: str, compress: int | None = None) -> None: ...

    async def receive(self, timeout: float | None = None) -> WSMessageNoDecodeText: ...

    async def close(self) -> bool: ...

    def exception(self) -> BaseException | None: ...

    @property
    def close_code(self) -> int | None: ...


def lane_app(app: str, number: int) -> str:
    """The Stasis application of lane ``number``: one of its own, that no channel enters
    (two sockets of one application would take its calls from each other)."""
    return f"{app}-rest{number}"


class RestLanes:
    """``count`` lanes for ``transport``, each connected with ``connect(application)``
    (bounded in time by the caller, its closing by ``CLOSE_TIMEOUT``) and reconnected as
    the events socket is: a backoff from ``backoff_initial`` to ``backoff_max`` seconds,
    reset after ``stable_after`` seconds up; ``sleep`` and ``clock`` drive it."""

    def __init__(
        self,
        transport: SocketTransport,
        count: int,
        app: str,
        connect: Callable[[str], Awaitable[LaneSocket]],
        *,
        backoff_initial: float,
        backoff_max: float,
        rng: random.Random,
        stable_after: float = 10.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if count < 1:
            raise ValueError("RestLanes needs at least one lane")
        self._transport = transport
        self._count = count
        self._app = app
        self._supervisors = [
            Supervisor(
                f"ARI REST lane {number}",
                functools.partial(connect, lane_app(app, number)),
                Backoff(backoff_initial, backoff_max, rng),
                retry_on=(AriError,),
                discard=_close,
                logger=log,
                stable_after=stable_after,
                sleep=sleep,
                clock=clock,
            )
            for number in range(1, count + 1)
        ]
        self._tasks = Tasks("ARI REST lanes", log)

    def __repr__(self) -> str:
        return f"RestLanes(app={self._app!r}, count={self._count}, open={self.open})"

    @property
    def open(self) -> int:
        return self._transport.lanes_open

    async def __aenter__(self) -> Self:
        # Planned before any is open: a channel's lane depends on the count alone, and its
        # requests go over the events socket until that lane is open.
        self._transport.plan_lanes(self._count)
        for number, supervisor in enumerate(self._supervisors, start=1):
            serve = functools.partial(self._serve, number)
            self._tasks.spawn(supervisor.run(serve), f"ARI REST lane {number}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # At once: no request goes to a lane from now on, and those waiting on one fail,
        # before the sockets' closing handshakes (which Asterisk reads only once it has
        # carried out what was queued before them).
        rest = self._transport
        rest.plan_lanes(0)
        for number in range(1, self._count + 1):
            rest.close_lane(number, "closed with the events socket")
        # Stopped, not cancelled first: a lane connected at this very moment is then
        # closed by its supervisor (``discard``) instead of being left open.
        for supervisor in self._supervisors:
            supervisor.stop()
        try:
            await self._tasks.wait(STOP_TIMEOUT)
        finally:
            await self._tasks.aclose()

    async def _serve(self, number: int, ws: LaneSocket) -> str:
        """Carry lane ``number``'s requests over ``ws`` until it drops (or the lanes close:
        this is then cancelled); why it dropped."""
        rest = self._transport
        rest.open_lane(number, ws)
        log.info("ARI REST: lane %d open (application %s)", number, lane_app(self._app, number))
        reason = "closed with the events socket"
        try:
            while True:
                msg = await ws.receive()
                if msg.type not in DATA_FRAMES:
                    reason = drop_reason(ws, msg.type, msg.data)
                    return reason
                event = parse_frame(msg.data)
                if event is not None:
                    rest.feed_lane(number, event)
        finally:
            rest.close_lane(number, reason)  # its waiting requests fail, typed
            await ws.close()


async def _close(ws: LaneSocket) -> None:
    await ws.close()
