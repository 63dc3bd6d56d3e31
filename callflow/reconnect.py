"""What the ARI and AMI clients share to reconnect: jittered backoff and waits that a
``close()`` can cut short.  Never a tight loop, never a wait that outlives the client."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

T = TypeVar("T")

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
