"""Read-only queries of the call log for the admin API (``callflow.store``'s tables).

Every query of a practice's data takes the credential's ``Scope`` (a required argument, so
that no route can forget it): the one place where a scoped account (a secretariat hosting
one practice among many) is kept to its own flows.  A row of another practice is simply
not found."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, select, true
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import InstrumentedAttribute

from ..flow.registry import FlowSet
from ..metrics import CallbackBacklog, tier_label
from ..store.callbacks import overdue_after
from ..store.models import AdminAction, Call, CallbackRequestRow, CallStep, TrunkEvent
from .accounts import Scope

CALLBACK_FILTERS = ("pending", "done", "cancelled", "all")
# Pending requests looked at for the metrics' backlog; far more than any practice has.
BACKLOG_LIMIT = 100_000

Row = Mapping[Any, Any]  # a row of the call log, by column name


def in_scope(flow: InstrumentedAttribute[str], scope: Scope) -> ColumnElement[bool]:
    """The condition that keeps a query to ``scope``'s flows."""
    return true() if scope.flows is None else flow.in_(sorted(scope.flows))


def _scoped(query: Select[Any], flow: InstrumentedAttribute[str], scope: Scope) -> Select[Any]:
    return query if scope.flows is None else query.where(in_scope(flow, scope))


def _utc(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def _iso(t: datetime | None) -> str | None:
    t = _utc(t)
    return t.isoformat() if t else None


def callback_json(row: Row, flows: FlowSet | None, now: datetime) -> dict[str, Any]:
    """A callback request as the API shows it, with its waiting time and overdue flag."""
    created = _utc(row["created"])
    completed = _utc(row["completed"])
    assert created is not None
    end = completed if completed is not None else now
    waiting = max((end - created).total_seconds(), 0.0)
    limit = overdue_after(flows, row["flow"], row["queue"]).total_seconds()
    return {
        "id": row["id"],
        "call_id": row["call_id"],
        "flow": row["flow"],
        "queue": row["queue"],
        "priority": row["priority"],
        "tier": row["tier"],
        "caller": row["caller"],
        "status": row["status"],
        "created": _iso(created),
        "completed": _iso(completed),
        "completed_by": row["completed_by"],
        "waiting_seconds": waiting,
        "overdue_after_seconds": limit,
        "overdue": row["status"] == "pending" and waiting > limit,
    }


async def list_callbacks(
    engine: AsyncEngine, *, scope: Scope, status: str = "pending", limit: int = 200
) -> list[Row]:
    """Callback requests: pending ones oldest first; done / cancelled / all newest first."""
    if status not in CALLBACK_FILTERS:
        raise ValueError(f"status: expected one of {', '.join(CALLBACK_FILTERS)}")
    t = CallbackRequestRow
    query = _scoped(select(t), t.flow, scope)
    if status == "pending":
        query = query.where(t.status == "pending").order_by(t.created, t.id)
    elif status == "all":
        query = query.order_by(t.created.desc(), t.id.desc())
    else:
        query = query.where(t.status == status).order_by(t.completed.desc(), t.id.desc())
    async with engine.connect() as conn:
        return list((await conn.execute(query.limit(limit))).mappings().all())


async def get_callback(engine: AsyncEngine, callback_id: int, scope: Scope) -> Row | None:
    t = CallbackRequestRow
    async with engine.connect() as conn:
        rows = await conn.execute(_scoped(select(t).where(t.id == callback_id), t.flow, scope))
        row: Row | None = rows.mappings().first()
        return row


async def callback_backlog(
    engine: AsyncEngine, flows: FlowSet | None, now: datetime
) -> CallbackBacklog:
    """Pending and overdue callback requests by tier, and the oldest one's wait."""
    t = CallbackRequestRow
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(t.flow, t.queue, t.tier, t.created)
                .where(t.status == "pending")
                .limit(BACKLOG_LIMIT)
            )
        ).all()
    pending: Counter[str] = Counter()
    overdue: Counter[str] = Counter()
    oldest = 0.0
    for flow, queue, tier, created in rows:
        waited = max((now - (_utc(created) or now)).total_seconds(), 0.0)
        label = tier_label(tier)
        pending[label] += 1
        if waited > overdue_after(flows, flow, queue).total_seconds():
            overdue[label] += 1
        oldest = max(oldest, waited)
    return CallbackBacklog(dict(pending), dict(overdue), oldest)


def _call_json(row: Row, steps: Sequence[Row]) -> dict[str, Any]:
    started, answered, ended = (_utc(row[k]) for k in ("started", "answered", "ended"))
    return {
        "id": row["id"],
        "flow": row["flow"],
        "flow_version": row["flow_version"],
        "driver": row["driver"],  # ari or agi
        "node": row["node"],  # the node whose daemon took it (None: before nodes were)
        "dialed": row["dialed"],
        "caller": row["caller"],
        "started": _iso(started),
        "answered": _iso(answered),
        "ended": _iso(ended),
        "answer_seconds": (answered - started).total_seconds() if answered and started else None,
        "duration_seconds": (ended - started).total_seconds() if ended and started else None,
        "outcome": row["outcome"],
        "tier": row["tier"],
        "destination": row["destination"],
        "trunk": row["trunk"],
        "end_step": row["end_step"],
        "detail": row["detail"],
        # A call that went to the dialplan fallback: what it did, and where it left the call
        # (secretariat, outside, voicemail, nobody, abandoned, cut), once its CDR is read.
        "fallback": row["fallback"],
        "fallback_fate": row["fallback_fate"],
        "steps": [
            {
                "seq": s["seq"],
                "at": _iso(s["at"]),
                "step": s["step"],
                "kind": s["kind"],
                "result": s["result"],
                "detail": s["detail"],
                "next": s["next"],
                "duration": s["duration"],
            }
            for s in steps
        ],
    }


async def recent_calls(
    engine: AsyncEngine, *, scope: Scope, limit: int = 50, flow: str | None = None
) -> list[dict[str, Any]]:
    """The last ``limit`` calls (newest first), each with its steps."""
    query = _scoped(select(Call), Call.flow, scope)
    if flow is not None:
        query = query.where(Call.flow == flow)
    async with engine.connect() as conn:
        calls = (
            (await conn.execute(query.order_by(Call.started.desc(), Call.id).limit(limit)))
            .mappings()
            .all()
        )
        steps: dict[str, list[Row]] = {c["id"]: [] for c in calls}
        if steps:
            rows = await conn.execute(
                select(CallStep)
                .where(CallStep.call_id.in_(list(steps)))
                .order_by(CallStep.call_id, CallStep.seq)
            )
            for s in rows.mappings():
                steps[s["call_id"]].append(s)
    return [_call_json(c, steps[c["id"]]) for c in calls]


async def get_call(engine: AsyncEngine, call_id: str, scope: Scope) -> dict[str, Any] | None:
    query = _scoped(select(Call).where(Call.id == call_id), Call.flow, scope)
    async with engine.connect() as conn:
        call = (await conn.execute(query)).mappings().first()
        if call is None:
            return None
        steps = (
            (
                await conn.execute(
                    select(CallStep).where(CallStep.call_id == call_id).order_by(CallStep.seq)
                )
            )
            .mappings()
            .all()
        )
    return _call_json(call, steps)


async def recent_audit(engine: AsyncEngine, *, limit: int = 50) -> list[dict[str, Any]]:
    """The last entries of the audit trail, newest first."""
    async with engine.connect() as conn:
        rows = (
            (await conn.execute(select(AdminAction).order_by(AdminAction.at.desc()).limit(limit)))
            .mappings()
            .all()
        )
    return [
        {"at": _iso(r["at"]), "who": r["who"], "action": r["action"], "detail": r["detail"]}
        for r in rows
    ]


async def trunks_by_node(engine: AsyncEngine, limit: int = 10_000) -> dict[str, list[Row]]:
    """Each node's last known state of each trunk (from the trunk changes every node logs),
    by node then trunk name."""
    t = TrunkEvent
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(t.node, t.trunk, t.state, t.rtt_ms, t.at)
                .order_by(t.at.desc(), t.id.desc())
                .limit(limit)
            )
        ).mappings()
        last: dict[tuple[str, str], Row] = {}
        for r in rows:
            last.setdefault((r["node"], r["trunk"]), r)
    out: dict[str, list[Row]] = {}
    for (node, _), e in sorted(last.items()):
        out.setdefault(node, []).append(
            {"name": e["trunk"], "state": e["state"], "rtt_ms": e["rtt_ms"], "since": _iso(e["at"])}
        )
    return out


__all__ = [
    "CALLBACK_FILTERS",
    "callback_backlog",
    "callback_json",
    "get_call",
    "get_callback",
    "in_scope",
    "list_callbacks",
    "recent_audit",
    "recent_calls",
    "trunks_by_node",
]
