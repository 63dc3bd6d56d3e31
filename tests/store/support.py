"""Records and counting helpers shared by the call-log tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from callflow.flow.events import CallInfo, Outcome, OutcomeKind, StepKind, StepRecord, StepResult
from callflow.store.models import Call, CallbackRequestRow, CallStep

# -- records for tests --------------------------------------------------------------------

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday, 10:00 in Paris


def info(call_id: str, *, started: datetime = T0, caller: str = "0612345678") -> CallInfo:
    return CallInfo(call_id, "cabinet", "v1", caller, "0388000000", started)


def steps(call_id: str, n: int, *, start: datetime = T0) -> list[StepRecord]:
    return [
        StepRecord(
            call_id=call_id,
            flow="cabinet",
            seq=seq,
            step=f"step-{seq}",
            kind=StepKind.PLAY,
            result=StepResult.PLAYED,
            next=f"step-{seq + 1}" if seq < n else None,
            at=start + timedelta(seconds=seq),
            duration=1.0,
        )
        for seq in range(1, n + 1)
    ]


def step(call_id: str, seq: int, at: datetime = T0, **fields: Any) -> StepRecord:
    """One step record: a played ``x`` unless ``fields`` say otherwise."""
    base: dict[str, Any] = {
        "step": "x",
        "kind": StepKind.PLAY,
        "result": StepResult.PLAYED,
        "next": None,
        "duration": 1.0,
    }
    return StepRecord(call_id=call_id, flow="cabinet", seq=seq, at=at, **{**base, **fields})


def answered(step: str = "desk") -> Outcome:
    return Outcome(OutcomeKind.ANSWERED, step, "secretariat")


def play_call(rec: Any, call_id: str, n_steps: int = 3, *, start: datetime = T0) -> None:
    """Report one whole call (start, ``n_steps`` steps, end) to an observer."""
    i = info(call_id, started=start)
    rec.call_started(i)
    for s in steps(call_id, n_steps, start=start):
        rec.step(s)
    rec.call_ended(i, answered(f"step-{n_steps}"), start + timedelta(seconds=n_steps + 1))


async def count(engine: AsyncEngine, model: type[Any]) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(model))).scalar_one())


async def counts(engine: AsyncEngine) -> tuple[int, int, int]:
    return (
        await count(engine, Call),
        await count(engine, CallStep),
        await count(engine, CallbackRequestRow),
    )


async def step_keys(engine: AsyncEngine) -> list[tuple[str, int]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(CallStep.call_id, CallStep.seq))
        return sorted((r[0], r[1]) for r in rows)


Factory = Callable[..., Any]
