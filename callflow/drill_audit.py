"""The continuity audit's drill half (``callflow check --horizon``): each forwarding
destination, over each trunk, whose last successful drill is older than ``max_age`` (90
days by default) or that was never drilled.  Pure: the last successes come from the caller
(the call log's ``drills`` table).

Node by node: each node goes out by its own trunks, so a leg drilled on node 1 but never on
node 2 is stale on node 2 (a caller reaching node 2 would go out there).  With one node the
report names no node."""

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
    node: str | None = None  # None: one node only, not worth naming

    def describe(self) -> str:
        how = " (emergency route: trunk health)" if self.mode is DrillMode.HEALTH else ""
        where = "" if self.node is None else f" on node {self.node}"
        when = (
            "never drilled successfully"
            if self.last_success is None
            else f"last successful drill {self.last_success:%Y-%m-%d %H:%M} UTC"
        )
        return f"  NO DRILL {self.flow}/{self.destination} via {self.trunk}{where}{how}: {when}"


def stale_drills(
    flows: Iterable[LoadedFlow],
    successes: Mapping[str, Mapping[Key, datetime]],
    now: datetime,
    max_age: timedelta,
) -> list[StaleDrill]:
    """``successes``: by node, when each leg last passed there.  No node at all (nothing
    ever drilled, no trunk change logged) counts as one node that passed nothing."""
    by_node = successes or {"": {}}
    named = len(by_node) > 1
    targets = [t for flow in flows for t in drill_targets(flow.spec)]
    out: list[StaleDrill] = []
    for node in sorted(by_node):
        passed = by_node[node]
        for t in targets:
            ok = passed.get((t.flow, t.destination, t.trunk))
            if ok is None or now - ok > max_age:
                where = node if named else None
                out.append(StaleDrill(t.flow, t.destination, t.trunk, t.mode, ok, where))
    return out


def format_drill_audit(
    stale: list[StaleDrill], legs: int, max_age: timedelta, nodes: Iterable[str] = ()
) -> str:
    """``legs``: per node; ``nodes``: their names, when more than one shares the call log."""
    names = sorted(nodes)
    days = max_age.days
    if len(names) > 1:
        total = legs * len(names)
        on = f" on {len(names)} nodes ({', '.join(names)})"
    else:
        total, on = legs, ""
    if not stale:
        return (
            f"drills: every forwarding destination ({total} legs{on}) passed a drill "
            f"in {days} days\n"
        )
    head = f"drills: {len(stale)} of {total} legs{on} without a successful drill in {days} days"
    return "\n".join([head, *(s.describe() for s in stale)]) + "\n"
