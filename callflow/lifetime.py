"""The daemon's lifetime, declared once: an ordered list of parts, each an async context
manager that owns its resources and its tasks.

``Lifetime`` enters the parts in order and leaves them in reverse order.  A part whose exit
raises is logged and the teardown goes on: the parts entered before it (the call log first
of all) are still closed, so nothing they would still write is lost.  A part whose entry
raises leaves the parts already entered closed again, and the error goes to the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

__all__ = ["Lifetime", "Part"]

log = logging.getLogger("callflow")


@dataclass(frozen=True)
class Part:
    """One part of the daemon: a name for the log, and what enters and leaves it."""

    name: str
    context: AbstractAsyncContextManager[Any]


class _Guarded:
    """A part whose exit failure is logged and noted instead of stopping the teardown."""

    def __init__(self, part: Part, failed: list[str]) -> None:
        self.part = part
        self.failed = failed

    async def __aenter__(self) -> None:
        await self.part.context.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            return bool(await self.part.context.__aexit__(exc_type, exc, tb))
        except Exception as err:
            if err is exc:  # the pending error passed through, not a failure of its own
                return False
            self.failed.append(self.part.name)
            log.exception("%s: shutdown failed; stopping the other parts anyway", self.part.name)
            return False


class Lifetime:
    """``async with Lifetime(parts) as life:`` runs the body with every part entered.

    ``failed`` names the parts whose exit raised (each logged).  Cancellation and other
    ``BaseException``s are not swallowed, but the remaining parts are still left first.
    """

    def __init__(self, parts: Iterable[Part]) -> None:
        self.parts = list(parts)
        self.failed: list[str] = []
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Self:
        async with AsyncExitStack() as stack:
            for part in self.parts:
                await stack.enter_async_context(_Guarded(part, self.failed))
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return bool(await self._stack.__aexit__(exc_type, exc, tb))
