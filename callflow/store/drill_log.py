"""Drill results in the call log's database (table ``drills``).

Written directly, not through the journal: a drill is not a call, holds no patient data, and
a result the database could not take is still kept in memory (page, metrics) and logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ..drills import DrillMode, DrillResult
from .models import DrillRow

Key = tuple[str, str, str]  # flow, destination, trunk


class SqlDrillLog:
    """``drills.DrillLog`` on the call log's engine; every query bounded by ``timeout``."""

    def __init__(self, engine: AsyncEngine, timeout: float = 10.0) -> None:
        self.engine = engine
        self.timeout = timeout

    async def record(self, results: Sequence[DrillResult]) -> None:
        rows = [
            {
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
        async with asyncio.timeout(self.timeout):
            return await _latest(self.engine, passed=None), await _latest(self.engine, True)


async def _latest(engine: AsyncEngine, passed: bool | None) -> list[DrillResult]:
    """The newest row of each (flow, destination, trunk), among passed ones if asked."""
    cols = (DrillRow.flow, DrillRow.destination, DrillRow.trunk)
    newest = select(*cols, func.max(DrillRow.at).label("at"))
    if passed is not None:
        newest = newest.where(DrillRow.passed.is_(passed))
    sub = newest.group_by(*cols).subquery()
    query = select(DrillRow).join(
        sub,
        and_(
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
    found: dict[Key, DrillResult] = {}
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
        found[(r.flow, r.destination, r.trunk)] = r
    return list(found.values())


async def last_successes(engine: AsyncEngine) -> dict[Key, datetime]:
    """When each leg last passed (the continuity audit's drill half)."""
    return {(r.flow, r.destination, r.trunk): r.at for r in await _latest(engine, True)}
