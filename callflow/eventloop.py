"""The event loop the daemon runs on.

uvloop (libuv) by default: the daemon's work per call is mostly the loop's own (sockets,
futures, timers, callbacks), and uvloop does that for less CPU than the standard
library's selector loop (issue #11: CPU per call, measured by ``benchmarks/load.py``).
``[daemon] event_loop = "asyncio"`` runs on the standard library's loop instead: the same
daemon, for a site that suspects the loop itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from enum import StrEnum
from typing import Any, TypeVar

T = TypeVar("T")


class LoopKind(StrEnum):
    UVLOOP = "uvloop"
    ASYNCIO = "asyncio"


def loop_factory(kind: LoopKind) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What ``asyncio.Runner`` builds its loop with (None: the standard library's)."""
    if kind is LoopKind.ASYNCIO:
        return None  # uvloop not even imported: the escape hatch runs without it
    import uvloop

    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], kind: LoopKind) -> T:
    """``asyncio.run(main)`` on a loop of ``kind``."""
    with asyncio.Runner(loop_factory=loop_factory(kind)) as runner:
        return runner.run(main)
