"""Waiting for a state instead of sleeping and hoping."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Return once ``predicate()`` holds; ``TimeoutError`` after ``timeout`` s (loop time)."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls state the code under test owns
            await asyncio.sleep(0.005)
