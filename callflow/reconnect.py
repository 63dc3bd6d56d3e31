"""Reconnecting, written once: the ``Backoff`` policy (also the call log's database retry)
and the ``Supervisor`` that keeps the ARI and AMI connections up, with waits that a
``close()`` cuts short.  Never a tight loop, never a wait that outlives the client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Final, Generic, TypeVar

T = TypeVar("T")
C = TypeVar("C")

MIN_DELAY: Final = 0.1  # even a jitter draw near zero waits this long


class Closed(Exception):
    """The client was closed while waiting."""


def backoff_delay(attempt: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Full jitter under ``min(maximum, initial * 2**attempt)``, floored at ``MIN_DELAY``."""
    cap = min(maximum, initial * 2.0 ** min(attempt, 64))
    return max(min(MIN_DELAY, cap), rng.uniform(0.0, cap))


async def unless_closed(closed: asyncio.Event, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` unless ``closed`` is set first (then cancel it, raise ``Closed``)."""
    work = asyncio.ensure_future(awaitable)
    if closed.is_set():
        work.cancel()
        await asyncio.wait((work,))
        raise Closed
    stop = asyncio.ensure_future(closed.wait())
    try:
        await asyncio.wait((work, stop), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not work.done():
            work.cancel()
            await asyncio.wait((work,))
    if work.cancelled():
        raise Closed
    return work.result()


async def pause(
    closed: asyncio.Event, sleep: Callable[[float], Awaitable[None]], delay: float
) -> bool:
    """Sleep ``delay`` seconds; False when ``closed`` cut it short."""
    try:
        await unless_closed(closed, sleep(delay))
    except Closed:
        return False
    return not closed.is_set()


class Backoff:
    """Delays that double from ``initial`` up to ``maximum`` with each ``next_delay()``, back
    to ``initial`` after ``reset()``.  With ``rng``: full jitter under that cap (see
    ``backoff_delay``), so that clients dropped together do not come back together."""

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        self.attempt = 0
        self._rng = rng

    def next_delay(self) -> float:
        attempt, self.attempt = self.attempt, self.attempt + 1
        if self._rng is None:
            return min(self.maximum, self.initial * 2.0 ** min(attempt, 64))
        return backoff_delay(attempt, self.initial, self.maximum, self._rng)

    def reset(self) -> None:
        self.attempt = 0


class Supervisor(Generic[C]):
    """Keeps one connection up until ``stop()``: connect, serve, and when the connection is
    lost (or cannot be made) wait a ``backoff`` delay, then again.  The backoff is reset
    after a connection that stayed up ``stable_after`` seconds (one that drops at once is
    a failure too, and must not reconnect in a tight loop).

    ``connect()`` makes one attempt.  An exception of ``retry_on`` is a failed attempt:
    ``on_connect_error(exc, delay)`` logs it and returns the delay to wait (it may lengthen
    it); anything else propagates.  A connection made while stopping goes to ``discard``.

    ``run(serve)`` serves each connection with ``serve(conn)``, which returns why it was
    lost.  ``sessions()`` is the same loop for a caller that serves each connection itself
    (the ARI client, whose events are an async generator): it yields the connection, and
    the caller may say why it was lost with ``lost(reason)`` before asking for the next.

    ``stop()`` ends the loop at once, also while connecting or waiting.  Waits go through
    ``sleep`` and uptimes through ``clock``, so that tests need not wait.
    """

    def __init__(
        self,
        name: str,
        connect: Callable[[], Awaitable[C]],
        backoff: Backoff,
        *,
        retry_on: tuple[type[Exception], ...],
        discard: Callable[[C], Awaitable[None]],
        logger: logging.Logger,
        stable_after: float = 10.0,
        on_connect_error: Callable[[Exception, float], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.backoff = backoff
        self.stable_after = stable_after
        #: Connections made (the first one included).
        self.connections = 0
        self._connect = connect
        self._retry_on = retry_on
        self._discard = discard
        self._log = logger
        self._on_connect_error = on_connect_error or self._log_connect_error
        self._sleep = sleep
        self._clock = clock
        self._stopped = asyncio.Event()
        self._serving = False
        self._running = False
        self._reason = "connection lost"
        self._at_least = 0.0  # the least wait before the next connection (see ``lost``)

    @property
    def reconnects(self) -> int:
        """Connections made after the first one."""
        return max(0, self.connections - 1)

    @property
    def connected(self) -> bool:
        """True while a connection is being served."""
        return self._serving

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def stop(self) -> None:
        """End ``run``/``sessions`` (now if they wait; after the connection being served)."""
        self._stopped.set()

    def lost(self, reason: str, *, at_least: float = 0.0) -> None:
        """Why the connection being served was lost (for the log line of ``sessions``), and
        the least time to wait before the next one (a peer that must not be fought over)."""
        self._reason = reason
        self._at_least = at_least

    async def wait(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` unless stopped first (then cancel it, raise ``Closed``)."""
        return await unless_closed(self._stopped, awaitable)

    async def run(self, serve: Callable[[C], Awaitable[str]]) -> None:
        """Connect and serve until ``stop()``; returns then."""
        async with contextlib.aclosing(self.sessions()) as sessions:
            async for conn in sessions:
                try:
                    self.lost(await self.wait(serve(conn)))
                except Closed:
                    return

    async def sessions(self) -> AsyncGenerator[C, None]:
        """Yield each new connection until ``stop()``; back off between them."""
        if self._running:
            raise RuntimeError(f"{self.name}: already supervised")
        self._running = True
        try:
            while not self.stopped:
                try:
                    conn = await self.wait(self._connect())
                except Closed:
                    return
                except self._retry_on as exc:
                    delay = self._on_connect_error(exc, self.backoff.next_delay())
                    if not await pause(self._stopped, self._sleep, delay):
                        return
                    continue
                if self.stopped:
                    await self._discard(conn)
                    return
                self.connections += 1
                self._reason = "connection lost"
                self._at_least = 0.0
                up_since = self._clock()
                self._serving = True
                try:
                    yield conn
                finally:
                    self._serving = False
                if self.stopped:
                    return
                if self._clock() - up_since >= self.stable_after:
                    self.backoff.reset()
                delay = max(self.backoff.next_delay(), self._at_least)
                self._log.warning(
                    "%s: disconnected (%s); reconnecting in %.2f s", self.name, self._reason, delay
                )
                if not await pause(self._stopped, self._sleep, delay):
                    return
        finally:
            self._running = False

    def _log_connect_error(self, exc: Exception, delay: float) -> float:
        self._log.warning("%s: cannot connect (%s); retrying in %.2f s", self.name, exc, delay)
        return delay
