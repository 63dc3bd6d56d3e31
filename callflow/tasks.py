"""The owner of background tasks: no task in callflow is fire-and-forget.

Every task is spawned into a ``Tasks`` that belongs to the part that needs it (a client, the
call service, the trunk monitor…); the part's shutdown calls ``aclose()``, which cancels
what is still running and waits for it, so that no task outlives the part that made it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

__all__ = ["BackgroundPart", "Tasks"]

log = logging.getLogger("callflow.tasks")

T = TypeVar("T")


class Tasks:
    """A set of named background tasks: a failure is logged (with the task's name), and
    ``aclose()`` cancels and awaits them all.  Use as ``async with Tasks(...) as tasks``.

    After ``aclose()`` nothing more is spawned: the part is shutting down, and a task
    started now would outlive it (``spawn`` then closes the coroutine and returns None).
    """

    def __init__(self, owner: str, logger: logging.Logger | None = None) -> None:
        self.owner = owner
        self._log = logger or log
        self._tasks: set[asyncio.Task[Any]] = set()
        self._quiet: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def closed(self) -> bool:
        return self._closed

    def spawn(
        self, coro: Coroutine[Any, Any, T], name: str, *, report: bool = True
    ) -> asyncio.Task[T] | None:
        """Run ``coro`` as a task named ``name``.  ``report=False``: its failure is the
        caller's to handle (it awaits the task), so it is not logged here as well."""
        if self._closed:
            coro.close()
            self._log.warning("%s: %s not started: shutting down", self.owner, name)
            return None
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        if not report:
            self._quiet.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        quiet = task in self._quiet
        self._quiet.discard(task)
        if task.cancelled() or quiet:
            return
        exc = task.exception()
        if exc is not None:
            self._log.error("%s: task %s failed", self.owner, task.get_name(), exc_info=exc)

    async def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the tasks running now to end by themselves (a
        graceful stop lets calls finish before ``aclose`` cancels the rest)."""
        pending = [t for t in self._tasks if t is not asyncio.current_task() and not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    async def aclose(self) -> None:
        """Spawn nothing more; cancel every task still running and wait until all ended
        (a task may need a moment to clean up).  Idempotent."""
        self._closed = True
        me = asyncio.current_task()  # a task of ours that closes its owner: not itself
        pending = [t for t in self._tasks if t is not me and not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class BackgroundPart:
    """A part of the daemon that is, for its lifetime, one loop in the background (a
    measure, a refresh, a schedule, a reconciliation): ``async with`` runs ``start()``
    then spawns ``run()`` into the part's own ``_tasks``; leaving cancels the loop and any
    other task the part spawned there, waits for them, then runs ``stop()``.

    A subclass makes ``self._tasks = Tasks(...)`` in its ``__init__`` (its name is the
    loop's in the log) and writes ``run``; ``start`` is for what the calls after this part
    need done first (a first read), ``stop`` releases what ``start`` or the loop held.
    """

    _tasks: Tasks

    async def start(self) -> None:
        """Before the loop runs (nothing by default)."""

    async def run(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        """After the loop and every task of the part ended (nothing by default)."""

    async def __aenter__(self) -> Self:
        await self.start()
        self._tasks.spawn(self.run(), self._tasks.owner)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._tasks.aclose()
        await self.stop()
