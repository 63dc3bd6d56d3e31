"""Play a drill: each target in turn, one test call at a time, never to an emergency number.

The runner speaks a ``TestCaller`` (the ARI adapter places the call) and a ``TrunkCheck``
(the trunk health the daemon already keeps); it returns typed ``DrillResult``s.  Legs run
one after the other: a drill must not ring the secretariat on two lines at once, and the
same trunk is then judged alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Protocol

from ..telephony import DialStatus
from .results import DrillMode, DrillResult, TestCall
from .targets import DrillTarget, is_emergency_number

_WHY = {
    DialStatus.BUSY: "busy",
    DialStatus.NOANSWER: "no answer",
    DialStatus.DECLINED: "declined",
    DialStatus.CHANUNAVAIL: "trunk or destination unreachable",
    DialStatus.CONGESTION: "trunk refused the call (congestion)",
    DialStatus.FAILED: "call failed",
}


class TestCaller(Protocol):
    """Places one real test call and hangs it up at once on answer (``ari/testcall.py``)."""

    async def call(self, endpoint: str, ring: float, caller_id: str | None) -> TestCall: ...


class TrunkCheck(Protocol):
    """The trunk's health as the daemon knows it: (healthy, why)."""

    def __call__(self, trunk: str) -> tuple[bool, str]: ...


class DrillRunner:
    """Runs drills; one at a time (the page's button and the schedule may meet)."""

    def __init__(
        self,
        caller: TestCaller,
        trunk_check: TrunkCheck,
        clock: Callable[[], datetime],
        *,
        caller_id: str | None = None,
    ) -> None:
        self.caller = caller
        self.trunk_check = trunk_check
        self.clock = clock
        self.caller_id = caller_id
        self._lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        return self._lock.locked()

    async def run(self, targets: Iterable[DrillTarget]) -> list[DrillResult]:
        async with self._lock:
            return [await self._leg(t) for t in targets]

    async def _leg(self, target: DrillTarget) -> DrillResult:
        if target.mode is DrillMode.HEALTH or is_emergency_number(target.number):
            healthy, why = self.trunk_check(target.trunk)
            reason = f"emergency route, no test call: trunk {why}"
            return self._result(target, DrillMode.HEALTH, healthy, reason)
        # The limit is the destination's ring time; the adapter keeps to it.
        outcome = await self.caller.call(target.endpoint, target.ring, self.caller_id)
        if outcome.status is DialStatus.ANSWER:
            delay = outcome.answer_delay
            if delay is not None and delay > target.ring:
                reason = f"answered in {delay:.1f} s, after the ring time ({target.ring:g} s)"
                return self._result(target, DrillMode.CALL, False, reason, delay)
            said = "answered" if delay is None else f"answered in {delay:.1f} s"
            return self._result(target, DrillMode.CALL, True, said, delay)
        reason = _WHY[outcome.status]
        if outcome.status is DialStatus.NOANSWER:
            reason = f"no answer within {target.ring:g} s"
        if outcome.detail:
            reason = f"{reason}: {outcome.detail}"
        return self._result(target, DrillMode.CALL, False, reason)

    def _result(
        self,
        target: DrillTarget,
        mode: DrillMode,
        passed: bool,
        reason: str,
        delay: float | None = None,
    ) -> DrillResult:
        return DrillResult(
            target.flow, target.destination, target.trunk, mode, passed, reason, self.clock(), delay
        )
