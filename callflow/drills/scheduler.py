"""The daemon's drills part: runs a drill when asked (the page, the CLI through the API)
and by itself in the last open hour before each closure, holiday and weekend.

It keeps the last result and the last success of every leg (read back from the call log at
start), which the page and the metrics read.  A drill runs as a task of its own ``Tasks``:
a client that goes away does not cut a test call in the middle, and the daemon's stop does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from ..flow.registry import LoadedFlow
from ..tasks import BackgroundPart, Tasks
from .results import DrillMode, DrillResult
from .runner import DrillRunner
from .targets import DrillTarget, drill_targets
from .timing import LEAD, drill_times

log = logging.getLogger("callflow.drills")

Key = tuple[str, str, str]  # flow, destination, trunk
RECHECK = timedelta(minutes=15)  # the schedule is computed again (reloads, feeds, overrides)
MAX_UNSTORED = 1000  # results kept for the database at most (the newest): a bounded memory
NOT_READY = timedelta(seconds=5)  # a due drill waits this long for the PBX link, again
LOOKAHEAD = timedelta(days=8)  # how far the next drill is looked for


class DrillLog(Protocol):
    """Where drill results are kept (``store/drill_log.py``)."""

    async def record(self, results: Sequence[DrillResult]) -> None: ...

    async def latest(self) -> tuple[list[DrillResult], list[DrillResult]]:
        """The last result of each leg, and the last successful one."""
        ...

    def exclusive(self, line: str) -> AbstractAsyncContextManager[None]:
        """Held while this node drills ``line``: no other node drills it meanwhile."""
        ...


@dataclass(frozen=True)
class LegReading:
    """A leg the current flows would drill, with what is known of it."""

    flow: str
    destination: str
    trunk: str
    mode: DrillMode
    last: DrillResult | None
    last_success: DrillResult | None


class Drills(BackgroundPart):
    def __init__(
        self,
        runner: DrillRunner,
        flows: Callable[[], Mapping[str, LoadedFlow]],
        drill_log: DrillLog | None,
        clock: Callable[[], datetime],
        *,
        scheduled: bool = True,
        lead: timedelta = LEAD,
        ready: Callable[[], bool] = lambda: True,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.runner = runner
        self.flows = flows
        self.log = drill_log
        self.clock = clock
        self.scheduled = scheduled
        self.lead = lead
        self.ready = ready  # the PBX link is up: a scheduled drill would not fail for its sake
        self._sleep = sleep
        self.last: dict[Key, DrillResult] = {}
        self.last_success: dict[Key, DrillResult] = {}
        self.next_drill: dict[str, datetime | None] = {}
        self._tasks = Tasks("drills", log)
        # Results the database could not take yet (it was away): stored again with the next
        # ones, at each pass of the schedule and when the part stops, so the audit
        # (`check --horizon`) and the other nodes see them once it is back.
        self._unstored: list[DrillResult] = []

    async def start(self) -> None:
        if self.log is not None:
            try:
                last, ok = await self.log.latest()
            except Exception as exc:  # the drills still run; the page shows them from now
                log.error("drills: earlier results not read: %s", exc)
            else:
                self._remember(last)
                self._remember(ok)

    async def run(self) -> None:
        if self.scheduled:
            await self._schedule()

    async def stop(self) -> None:
        if self._unstored:
            await self._store([])

    async def drill(self, flow_name: str, destination: str | None = None) -> list[DrillResult]:
        """Drill one flow now (every forwarding destination, or one).  ``KeyError``: no such
        flow; ``ValueError``: no such forwarding destination; ``RuntimeError``: stopping."""
        flow = self.flows().get(flow_name)
        if flow is None:
            raise KeyError(flow_name)
        targets = drill_targets(flow.spec, destination)
        task = self._tasks.spawn(self._run(targets), f"drill {flow_name}")
        if task is None:
            raise RuntimeError("the daemon is stopping")
        return await asyncio.shield(task)

    async def _run(self, targets: Sequence[DrillTarget]) -> list[DrillResult]:
        results: list[DrillResult] = []
        for line in dict.fromkeys(t.number for t in targets):  # in the targets' order
            results += await self._drill_line([t for t in targets if t.number == line])
        for r in results:
            log.log(logging.INFO if r.passed else logging.WARNING, "drill: %s", r.line())
        self._remember(results)
        await self._store(results)
        return results

    async def _store(self, results: Sequence[DrillResult]) -> None:
        if self.log is None:
            return
        pending = [*self._unstored, *results]
        if not pending:
            return
        try:
            await self.log.record(pending)
        except Exception as exc:  # kept in memory: the page and metrics still say it
            self._unstored = pending[-MAX_UNSTORED:]
            log.error("drills: %d result(s) not stored yet (%s); retried", len(pending), exc)
        else:
            if self._unstored:
                log.info("drills: %d result(s) stored after a failure", len(self._unstored))
            self._unstored = []

    async def _drill_line(self, targets: Sequence[DrillTarget]) -> list[DrillResult]:
        """The legs to one line, while no other node drills it (the drill log's lock)."""
        async with contextlib.AsyncExitStack() as stack:
            if self.log is not None:
                try:
                    await stack.enter_async_context(self.log.exclusive(targets[0].number))
                except Exception as exc:  # a drill not run is worse than two at once
                    name = f"{targets[0].flow}/{targets[0].destination}"
                    log.warning("drill of %s: other nodes not held off (%s)", name, exc)
            results = await self.runner.run(targets)
        return results

    def _remember(self, results: Sequence[DrillResult]) -> None:
        for r in results:
            key = (r.flow, r.destination, r.trunk)
            if key not in self.last or self.last[key].at <= r.at:
                self.last[key] = r
            if r.passed and (key not in self.last_success or self.last_success[key].at <= r.at):
                self.last_success[key] = r

    def readings(self) -> list[LegReading]:
        """Every leg of the current flows' drills, with its last result and last success."""
        out: list[LegReading] = []
        for name in sorted(self.flows()):
            for t in drill_targets(self.flows()[name].spec):
                key = (t.flow, t.destination, t.trunk)
                out.append(
                    LegReading(
                        t.flow,
                        t.destination,
                        t.trunk,
                        t.mode,
                        self.last.get(key),
                        self.last_success.get(key),
                    )
                )
        return out

    async def _schedule(self) -> None:
        """Drill each flow once per drill time, while that time's hour lasts."""
        done: set[tuple[str, datetime]] = set()
        while True:
            if self._unstored:
                await self._store([])
            now = self.clock()
            wake = now + RECHECK
            upcoming: dict[str, datetime | None] = {}  # flows removed by a reload drop out
            for name, flow in sorted(self.flows().items()):
                try:
                    times = drill_times(flow.calendars, now - self.lead, self.lead + LOOKAHEAD)
                except Exception:  # one flow's calendars must not stop the others' drills
                    log.exception("drill schedule of flow %s not computed", name)
                    continue
                upcoming[name] = next((t for t in times if t > now), None)
                for t in times:
                    if t <= now < t + self.lead and (name, t) not in done:
                        if not self.ready():
                            wake = min(wake, now + NOT_READY)
                            continue
                        done.add((name, t))
                        log.info("drill of flow %s: scheduled at %s", name, t.isoformat())
                        try:
                            await self.drill(name)
                        except (KeyError, ValueError, RuntimeError) as exc:
                            log.error("scheduled drill of %s not run: %s", name, exc)
                    elif t > now:
                        wake = min(wake, t)
            self.next_drill = upcoming
            done = {(n, t) for n, t in done if t + self.lead > now}
            await self._sleep(max(1.0, (wake - self.clock()).total_seconds()))
