"""GDPR housekeeping and admin actions on the call log: purge, export, audit, callbacks.

Retention (``[privacy] retention_days``, default 365): ``purge`` deletes the calls that
started before ``now - retention_days`` with all their steps, and anonymises the callback
requests created before that moment: their caller number is erased (NULL) and one still
pending is cancelled (``completed_by = "retention"``).  Callback numbers are kept in clear
until then because calling the patient back is their purpose; statistics (completion rate,
delay) survive the anonymisation.  Trunk events hold no personal data; the audit trail
(``admin_actions``) is kept: it is the controller's record of what was done.

``export_caller`` gathers everything stored about one caller (the right of access): with
pseudonymised storage it computes the keyed HMAC of the number to find the calls.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..errors import UserError
from .models import AdminAction, Call, CallbackRequestRow, CallStep
from .privacy import CallerPrivacy, normalise


def mask(number: str) -> str:
    """A number for the audit trail: enough to recognise it, not to identify a patient."""
    return number if len(number) <= 4 else "*" * (len(number) - 2) + number[-2:]


async def record_action(
    conn: AsyncConnection,
    who: str,
    action: str,
    detail: Mapping[str, Any],
    at: datetime,
) -> None:
    """Add an entry to the audit trail, in the caller's transaction."""
    await conn.execute(
        insert(AdminAction).values(
            id=str(uuid.uuid4()), at=at, who=who, action=action, detail=dict(detail)
        )
    )


@dataclass(frozen=True)
class PurgeResult:
    cutoff: datetime
    calls: int
    steps: int
    callbacks_anonymised: int
    callbacks_cancelled: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "calls": self.calls,
            "steps": self.steps,
            "callbacks_anonymised": self.callbacks_anonymised,
            "callbacks_cancelled": self.callbacks_cancelled,
        }


async def purge(
    engine: AsyncEngine,
    now: datetime,
    retention_days: int,
    *,
    callback_erase_days: int | None = None,
    who: str = "callflow",
) -> PurgeResult:
    """Delete calls and steps older than the retention period; anonymise old callbacks, and
    those done or cancelled more than ``callback_erase_days`` ago (their number served its
    purpose; kept, it would re-identify a pseudonymised call by a join)."""
    if now.tzinfo is None:
        raise ValueError("purge: now must be an aware datetime")
    cutoff = now - timedelta(days=retention_days)
    erase = cutoff if callback_erase_days is None else now - timedelta(days=callback_erase_days)
    async with engine.begin() as conn:
        old_calls = select(Call.id).where(Call.started < cutoff)
        steps = await conn.execute(delete(CallStep).where(CallStep.call_id.in_(old_calls)))
        calls = await conn.execute(delete(Call).where(Call.started < cutoff))
        cancelled = await conn.execute(
            update(CallbackRequestRow)
            .where(CallbackRequestRow.created < cutoff, CallbackRequestRow.status == "pending")
            .values(status="cancelled", completed=now, completed_by="retention")
        )
        closed = CallbackRequestRow.status.in_(("done", "cancelled"))
        anonymised = await conn.execute(
            update(CallbackRequestRow)
            .where(
                or_(
                    CallbackRequestRow.created < cutoff,
                    and_(closed, CallbackRequestRow.completed < erase),
                ),
                CallbackRequestRow.caller.is_not(None),
            )
            .values(caller=None)
        )
        result = PurgeResult(
            cutoff,
            calls.rowcount,
            steps.rowcount,
            anonymised.rowcount,
            cancelled.rowcount,
        )
        await record_action(conn, who, "purge", result.as_dict(), now)
    return result


def _json(row: Mapping[Any, Any], *, without: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        k: (v.isoformat() if isinstance(v, datetime) else v)
        for k, v in row.items()
        if k not in without
    }


async def export_caller(
    engine: AsyncEngine,
    privacy: CallerPrivacy,
    numbers: Iterable[str],
    *,
    now: datetime,
    who: str = "callflow",
) -> dict[str, Any]:
    """Everything stored about the caller(s) ``numbers`` (one patient may call from several
    numbers, or with and without the country code: give each form).  The export itself is
    recorded in the audit trail (with masked numbers)."""
    wanted = [n for n in numbers if normalise(n)]
    if not wanted:
        raise UserError("export: give the caller's number")
    keys = sorted({form for n in wanted for form in privacy.stored_forms(n)})
    clear = sorted({normalise(n) for n in wanted})
    async with engine.begin() as conn:
        calls = (
            (await conn.execute(select(Call).where(Call.caller.in_(keys)).order_by(Call.started)))
            .mappings()
            .all()
        )
        ids = [c["id"] for c in calls]
        steps: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        if ids:
            rows = await conn.execute(
                select(CallStep)
                .where(CallStep.call_id.in_(ids))
                .order_by(CallStep.call_id, CallStep.seq)
            )
            for s in rows.mappings():
                steps[s["call_id"]].append(_json(s, without=("call_id",)))
        callbacks = (
            await conn.execute(
                select(CallbackRequestRow)
                .where(
                    or_(
                        CallbackRequestRow.caller.in_(clear),
                        CallbackRequestRow.call_id.in_(ids),
                    )
                )
                .order_by(CallbackRequestRow.created)
            )
        ).mappings()
        cb_json = [_json(c) for c in callbacks]
        found = {"calls": len(ids), "callbacks": len(cb_json)}
        await record_action(
            conn, who, "export", {"callers": [mask(n) for n in clear], **found}, now
        )
    return {
        "generated": now.isoformat(),
        "caller_numbers": "pseudonymised" if privacy.pseudonymised else "clear",
        "searched": {"numbers": clear, "stored_as": keys},
        "calls": [{**_json(c), "steps": steps[c["id"]]} for c in calls],
        "callbacks": cb_json,
    }


async def complete_callback(
    engine: AsyncEngine,
    callback_id: int,
    *,
    by: str,
    at: datetime,
    status: str = "done",
) -> bool:
    """Mark a pending callback request done (or cancelled) by ``by``; False if it was not
    pending.  Recorded in the audit trail."""
    if status not in ("done", "cancelled"):
        raise ValueError(f"callback status {status!r}: expected done or cancelled")
    async with engine.begin() as conn:
        res = await conn.execute(
            update(CallbackRequestRow)
            .where(CallbackRequestRow.id == callback_id, CallbackRequestRow.status == "pending")
            .values(status=status, completed=at, completed_by=by)
        )
        if res.rowcount != 1:
            return False
        await record_action(conn, by, f"callback {status}", {"callback": callback_id}, at)
    return True


__all__ = [
    "PurgeResult",
    "complete_callback",
    "export_caller",
    "mask",
    "purge",
    "record_action",
]
