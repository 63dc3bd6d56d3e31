"""The callback queue in the call log: pending requests with how long they have waited.

A queue's ``overdue`` delay comes from the flow file that defines it (``queues:``); the
commands (``callflow callbacks``) are in ``commands``, the admin API's view in
``callflow.api.queries``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from ..flow.registry import FlowSet
from .models import CallbackRequestRow

DEFAULT_OVERDUE = timedelta(hours=24)  # a queue no flow defines any more


@dataclass(frozen=True)
class PendingCallback:
    id: int
    flow: str
    queue: str
    priority: str
    tier: int | None
    caller: str | None
    created: datetime
    waiting: timedelta
    overdue: bool


def overdue_after(flows: FlowSet | None, flow: str, queue: str) -> timedelta:
    f = flows.flows.get(flow) if flows else None
    spec = f.spec.queues.get(queue) if f else None
    return timedelta(seconds=spec.overdue) if spec else DEFAULT_OVERDUE


async def pending_callbacks(
    engine: AsyncEngine, flows: FlowSet | None, now: datetime, queue: str | None = None
) -> list[PendingCallback]:
    query = select(CallbackRequestRow).where(CallbackRequestRow.status == "pending")
    if queue is not None:
        query = query.where(CallbackRequestRow.queue == queue)
    async with engine.connect() as conn:
        rows = (await conn.execute(query.order_by(CallbackRequestRow.created))).all()
    out = []
    for r in rows:
        created = r.created if r.created.tzinfo else r.created.replace(tzinfo=UTC)
        waiting = now - created
        out.append(
            PendingCallback(
                id=r.id,
                flow=r.flow,
                queue=r.queue,
                priority=r.priority,
                tier=r.tier,
                caller=r.caller,
                created=created,
                waiting=waiting,
                overdue=waiting > overdue_after(flows, r.flow, r.queue),
            )
        )
    return out


__all__ = ["DEFAULT_OVERDUE", "PendingCallback", "overdue_after", "pending_callbacks"]
