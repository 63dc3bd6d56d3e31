"""The continuity audit's drill half (``callflow check --horizon``): each forwarding
destination, over each trunk, whose last successful drill is older than ``max_age`` (90
days by default) or that was never drilled.  Pure: the last successes come from the caller
(the call log's ``drills`` table)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from .drills import DrillMode, drill_targets
from .flow.registry import LoadedFlow

Key = tuple[str, str, str]  # flow, destination, trunk


@dataclass(frozen=True)
class StaleDrill:
    flow: str
    destination: str
    trunk: str
    mode: DrillMode
    last_success: datetime | None  # None: never passed

    def describe(self) -> str:
        how = " (emergency route: trunk health)" if self.mode is DrillMode.HEALTH else ""
        when = (
            "never drilled successfully"
            if self.last_success is None
            else f"last successful drill {self.last_success:%Y-%m-%d %H:%M} UTC"
        )
        return f"  NO DRILL {self.flow}/{self.destination} via {self.trunk}{how}: {when}"


def stale_drills(
    flows: Iterable[LoadedFlow],
    successes: Mapping[Key, datetime],
    now: datetime,
    max_age: timedelta,
) -> list[StaleDrill]:
    out: list[StaleDrill] = []
    for flow in flows:
        for t in drill_targets(flow.spec):
            ok = successes.get((t.flow, t.destination, t.trunk))
            if ok is None or now - ok > max_age:
                out.append(StaleDrill(t.flow, t.destination, t.trunk, t.mode, ok))
    return out


def format_drill_audit(stale: list[StaleDrill], legs: int, max_age: timedelta) -> str:
    days = max_age.days
    if not stale:
        return f"drills: every forwarding destination ({legs} legs) passed a drill in {days} days\n"
    head = f"drills: {len(stale)} of {legs} legs without a successful drill in {days} days"
    return "\n".join([head, *(s.describe() for s in stale)]) + "\n"
