"""Retiring a node: closing the calls a node left open when it went away for good.

A node's open calls are its own to close (its after-crash pass does it when it comes back,
from its Asterisk's channels and CDRs).  A node that never comes back (a dead machine, a
node removed from the cluster) would leave them without an outcome forever; an
administrator who knows it is gone closes them with ``callflow db retire-node NODE``.  A
node that took a call recently is refused: it may well be alive.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from .cdr_import import close_calls, open_calls
from .maintenance import record_action
from .models import Call
from .reconcile import retired


class NodeActive(Exception):
    """The node took a call within the quiet period: it may be alive."""

    def __init__(self, node: str, last: datetime) -> None:
        super().__init__(f"node {node} took a call at {last.isoformat(timespec='seconds')}")
        self.node = node
        self.last = last


@dataclass(frozen=True)
class Retired:
    node: str
    closed: int  # open calls closed
    reached: int  # of them, calls that had reached someone (closed with that outcome)
    last: datetime | None  # when the node's last call started, None: it logged none


async def last_activity(engine: AsyncEngine, node: str) -> datetime | None:
    """The newest call the node took (its start: ends are not the node's alone, a
    retirement writes them too)."""
    async with engine.connect() as conn:
        last = (
            await conn.execute(select(func.max(Call.started)).where(Call.node == node))
        ).scalar_one()
    return last if isinstance(last, datetime) else None


async def retire_node(
    engine: AsyncEngine, node: str, *, by: str, now: datetime, quiet: timedelta
) -> Retired:
    """Close every call ``node`` left open (tagged with it; not untagged ones, which are
    no node's), unless it took a call within ``quiet`` before ``now``."""
    last = await last_activity(engine, node)
    if last is not None:
        last = last if last.tzinfo is not None else last.replace(tzinfo=now.tzinfo)
        if now - last < quiet:
            raise NodeActive(node, last)
    calls = await open_calls(engine, now, node, untagged=False)
    closings = [retired(c, node, by, now) for c in calls]
    closed = set(await close_calls(engine, closings, {}, now))
    reached = sum(1 for c in calls if c.id in closed and c.reached is not None)
    if last is not None:  # the audit trail: calls closed by hand, by whom
        async with engine.begin() as conn:
            detail = {"node": node, "closed": len(closed), "reached": reached}
            await record_action(conn, by, "retire node", detail, now)
    return Retired(node, len(closed), reached, last)


__all__ = ["NodeActive", "Retired", "last_activity", "retire_node"]
