"""Drill results in the call log's database (table ``drills``).

Written directly, not through the journal: a drill is not a call and holds no patient data.
A result the database could not take is kept in memory (page, metrics), logged, and stored
again with the next ones (``drills.scheduler.Drills``).

Each row carries its node ([node] name): several nodes share one database, and each drills
over its own trunks (trunk-a of one node is not trunk-a of another).  A daemon reads back its
own node's rows; the others' are shown apart (``by_node``) and audited node by node.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from ..drills import DrillMode, DrillResult
from .models import DrillRow, TrunkEvent

Key = tuple[str, str, str]  # flow, destination, trunk


@dataclass
class NodeDrills:
    """One node's last result and last success of each leg it drilled."""

    last: dict[Key, DrillResult] = field(default_factory=dict)
    last_success: dict[Key, DrillResult] = field(default_factory=dict)


class SqlDrillLog:
    """``drills.DrillLog`` on the call log's engine for one node; every query bounded by
    ``timeout``."""

    def __init__(
        self, engine: AsyncEngine, node: str, timeout: float = 10.0, lock_timeout: float = 600.0
    ) -> None:
        if not node:
            raise ValueError("a drill log needs its node's name ([node] name)")
        self.engine = engine
        self.node = node
        self.timeout = timeout
        self.lock_timeout = lock_timeout  # another node's drill of the line: wait this long

    @contextlib.asynccontextmanager
    async def exclusive(self, line: str) -> AsyncIterator[None]:
        """While held, no other node drills ``line`` (a number): every node drills at the
        same time before a closure, and a line with one channel would answer one test call
        and give the other busy, a false failure.  A PostgreSQL advisory lock, held on its
        own connection (a node that dies releases it); SQLite is one node: nothing to do."""
        if self.engine.dialect.name != "postgresql":
            yield
            return
        key = {"key": f"callflow drill {line}"}
        async with self.engine.connect() as conn:
            async with asyncio.timeout(self.lock_timeout):
                await conn.execute(text("SELECT pg_advisory_lock(hashtext(:key))"), key)
            try:
                yield
            finally:
                async with asyncio.timeout(self.timeout):
                    await conn.execute(text("SELECT pg_advisory_unlock(hashtext(:key))"), key)

    async def record(self, results: Sequence[DrillResult]) -> None:
        rows = [
            {
                "node": self.node,
                "flow": r.flow,
                "destination": r.destination,
                "trunk": r.trunk,
                "mode": str(r.mode),
                "passed": r.passed,
                "reason": r.reason,
                "at": r.at,
                "answer_delay": r.answer_delay,
            }
            for r in results
        ]
        async with asyncio.timeout(self.timeout), self.engine.begin() as conn:
            await conn.execute(insert(DrillRow), rows)

    async def latest(self) -> tuple[list[DrillResult], list[DrillResult]]:
        """This node's last result of each leg, and its last success."""
        async with asyncio.timeout(self.timeout):
            last = await _latest(self.engine, None, self.node)
            ok = await _latest(self.engine, True, self.node)
        return [r for _, r in last], [r for _, r in ok]


async def _latest(
    engine: AsyncEngine, passed: bool | None, node: str | None
) -> list[tuple[str, DrillResult]]:
    """The newest row of each (node, flow, destination, trunk), among passed ones if asked,
    of one node or (``node`` None) of every node."""
    cols = (DrillRow.node, DrillRow.flow, DrillRow.destination, DrillRow.trunk)
    newest = select(*cols, func.max(DrillRow.at).label("at"))
    if passed is not None:
        newest = newest.where(DrillRow.passed.is_(passed))
    if node is not None:
        newest = newest.where(DrillRow.node == node)
    sub = newest.group_by(*cols).subquery()
    query = select(DrillRow).join(
        sub,
        and_(
            DrillRow.node == sub.c.node,
            DrillRow.flow == sub.c.flow,
            DrillRow.destination == sub.c.destination,
            DrillRow.trunk == sub.c.trunk,
            DrillRow.at == sub.c.at,
        ),
    )
    if passed is not None:
        query = query.where(DrillRow.passed.is_(passed))
    async with engine.connect() as conn:
        rows = (await conn.execute(query.order_by(DrillRow.id))).all()
    found: dict[tuple[str, Key], DrillResult] = {}
    for row in rows:  # two rows at the same instant: the later id wins
        r = DrillResult(
            row.flow,
            row.destination,
            row.trunk,
            DrillMode(row.mode),
            bool(row.passed),
            row.reason,
            row.at,
            row.answer_delay,
        )
        found[(row.node, (r.flow, r.destination, r.trunk))] = r
    return [(n, r) for (n, _), r in found.items()]


async def by_node(engine: AsyncEngine) -> dict[str, NodeDrills]:
    """Every node's last result and last success of each leg (the page's other nodes)."""
    out: dict[str, NodeDrills] = {}
    for node, r in await _latest(engine, None, None):
        out.setdefault(node, NodeDrills()).last[(r.flow, r.destination, r.trunk)] = r
    for node, r in await _latest(engine, True, None):
        out.setdefault(node, NodeDrills()).last_success[(r.flow, r.destination, r.trunk)] = r
    return out


async def last_successes(engine: AsyncEngine, node: str) -> dict[Key, datetime]:
    """When each leg last passed on ``node``."""
    return {(r.flow, r.destination, r.trunk): r.at for _, r in await _latest(engine, True, node)}


async def successes_by_node(engine: AsyncEngine, since: datetime) -> dict[str, dict[Key, datetime]]:
    """The continuity audit's drill half: when each leg last passed, node by node, for every
    node seen since ``since`` (a drill, passed or not, or a trunk change it logged): a node
    that never passed a leg's drill is there with nothing for that leg.  A node silent
    since then is taken as gone, unless every node is (then each that ever drilled)."""
    async with engine.connect() as conn:
        drilled = select(DrillRow.node).where(DrillRow.at >= since).distinct()
        changed = (
            select(TrunkEvent.node).where(TrunkEvent.at >= since, TrunkEvent.node != "").distinct()
        )
        nodes = set((await conn.execute(drilled)).scalars())
        nodes |= set((await conn.execute(changed)).scalars())
        if not nodes:
            nodes = set((await conn.execute(select(DrillRow.node).distinct())).scalars())
    out: dict[str, dict[Key, datetime]] = {n: {} for n in nodes}
    for node, r in await _latest(engine, True, None):
        if node in out:
            out[node][(r.flow, r.destination, r.trunk)] = r.at
    return out
