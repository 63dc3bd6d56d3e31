"""Event-loop lag: how late the loop wakes a task that asked to sleep ``interval`` seconds.

Everything in callflow shares one event loop, so a loop busy with other work (or starved of
CPU, or held by the GIL of another thread) delays every call.  A task of our own sleeps
``interval`` and measures how much later than asked it woke up: no thread, no signal,
just the loop timing itself.  ``lag`` is the latest figure,
``take_worst()`` the worst since it was last called (the metrics read it), and
``steady`` the median of the last ``STEADY`` figures: how late the loop has been at most
wake-ups lately, which a lone stall (a garbage collection, a slow disk write) does not raise
and stalls coming back every other wake-up do.

Use as an async context manager (a part of ``Daemon.parts()``); its task belongs to a
``Tasks`` that leaving the context cancels and awaits.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from .tasks import BackgroundPart, Tasks

__all__ = ["LoopLag"]

log = logging.getLogger("callflow.looplag")

#: How many figures in a row ``steady`` takes the median of (0.3 s at the default interval).
STEADY = 3


class LoopLag(BackgroundPart):
    def __init__(
        self,
        interval: float = 0.1,
        *,
        on_sample: Callable[[float], None] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("loop lag interval must be positive")
        self.interval = interval
        self.lag = 0.0  # seconds, the latest measurement
        self.samples = 0
        self._recent: deque[float] = deque(maxlen=STEADY)
        self._worst = 0.0
        self._on_sample = on_sample
        self._tasks = Tasks("loop lag", log)

    def take_worst(self) -> float:
        """The worst lag measured since the previous call (then forgotten)."""
        worst, self._worst = max(self._worst, self.lag), 0.0
        return worst

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            self.record(max(0.0, loop.time() - asked))

    @property
    def steady(self) -> float:
        """The median of the last ``STEADY`` figures (0 before there are that many)."""
        recent = self._recent
        return sorted(recent)[STEADY // 2] if len(recent) == STEADY else 0.0

    def record(self, lag: float) -> None:
        self.lag = lag
        self.samples += 1
        self._recent.append(lag)
        self._worst = max(self._worst, lag)
        if self._on_sample is not None:
            self._on_sample(lag)
