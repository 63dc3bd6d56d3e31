"""The callback queue: requests to call patients back, listed with their delay and worked.

``callflow callbacks list`` shows pending requests (oldest first, overdue ones marked; a
queue's ``overdue`` delay comes from the flow file that defines it) and ``callflow callbacks
done ID`` marks one completed, in the audit trail.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from .errors import UserError
from .flow.registry import FlowSet, load_flows
from .store.models import CallbackRequestRow

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


def add_commands(sub: Any) -> None:
    c = sub.add_parser("callbacks", help="the callback queue: list pending requests, mark done")
    csub = c.add_subparsers(dest="callbacks_command", required=True, metavar="ACTION")
    ls = csub.add_parser("list", help="pending callback requests, oldest first")
    ls.add_argument("--queue", help="only this queue")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--config", default=None, metavar="FILE")
    ls.set_defaults(func=cmd_list)
    done = csub.add_parser("done", help="mark a callback request completed")
    done.add_argument("id", type=int)
    done.add_argument("--by", help="who called the patient back (default: this user)")
    done.add_argument("--cancel", action="store_true", help="cancel it instead")
    done.add_argument("--config", default=None, metavar="FILE")
    done.set_defaults(func=cmd_done)


def _flows(settings: Any) -> FlowSet | None:
    try:
        return load_flows([settings.resolve(settings.flows.dir)])
    except UserError:
        return None  # overdue delays fall back to the default; the list still works


def _human(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60}h{minutes % 60:02d}" if minutes >= 60 else f"{minutes} min"


def cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    from pathlib import Path

    from .settings import load_settings
    from .store.commands import _run

    settings = load_settings(Path(args.config) if args.config else None)
    flows = _flows(settings)
    now = datetime.now(UTC)

    async def job(engine: AsyncEngine) -> list[PendingCallback]:
        return await pending_callbacks(engine, flows, now, args.queue)

    items = _run(settings, job)
    if args.json:
        rows = [
            {**c.__dict__, "created": c.created.isoformat(), "waiting": c.waiting.total_seconds()}
            for c in items
        ]
        json.dump(rows, out, ensure_ascii=False)
        out.write("\n")
        return 0
    if not items:
        out.write("no pending callback\n")
        return 0
    out.write(f"{'id':>5}  {'queue':<12} {'prio':<7} {'tier':<4} {'caller':<14} waiting\n")
    for c in items:
        late = "  OVERDUE" if c.overdue else ""
        out.write(
            f"{c.id:>5}  {c.queue:<12} {c.priority:<7} {c.tier or '-'!s:<4} "
            f"{c.caller or '?':<14} {_human(c.waiting)}{late}\n"
        )
    return 0


def cmd_done(args: argparse.Namespace, out: TextIO) -> int:
    from pathlib import Path

    from .settings import load_settings
    from .store.commands import _run, _who
    from .store.maintenance import complete_callback

    settings = load_settings(Path(args.config) if args.config else None)
    who = args.by or _who()
    status = "cancelled" if args.cancel else "done"

    async def job(engine: AsyncEngine) -> bool:
        return await complete_callback(engine, args.id, by=who, at=datetime.now(UTC), status=status)

    if not _run(settings, job):
        raise UserError(f"callback {args.id} is not pending (unknown, or already completed)")
    out.write(f"callback {args.id} {status} by {who}\n")
    return 0
