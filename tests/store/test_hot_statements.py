"""The statements of every call (its row, its answer, its steps) run on the driver with
rows as tuples (``writer._hot``): they must store exactly what SQLAlchemy's own execution
of the same statements stores, on SQLite and PostgreSQL, times included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from callflow.store.writer import STEPS, _rows_of, _statements, write_records

PARIS_SUMMER = timezone(timedelta(hours=2))


def records(call_id: str) -> list[dict[str, Any]]:
    start = datetime(2026, 7, 1, 10, 0, 0, 123456, tzinfo=PARIS_SUMMER)  # 08:00 UTC
    at = start + timedelta(seconds=2, microseconds=-123456)  # a whole second
    call = {
        "id": call_id,
        "flow": "cabinet",
        "flow_version": "v1",
        "dialed": "0388000000",
        "caller": "h:abc",
        "started": start.isoformat(),
        "driver": "ari",
        "node": None,
    }
    step = {
        "t": "step",
        "call_id": call_id,
        "flow": "cabinet",
        "seq": 1,
        "at": at.isoformat(),
        "step": "menu",
        "kind": "menu",
        "result": "pressed",
        "detail": "é",
        "next": "desk",
        "duration": 1.25,
        "key": "2",
        "attempt": 1,
        "destination": None,
        "trunk": None,
        "tier": None,
        "dial_status": None,
        "outcome": None,
        "score": None,
        "scale": None,
    }
    end = {
        "t": "end",
        **call,
        "ended": (start + timedelta(minutes=3)).isoformat(),
        "outcome": "answered",
        "tier": 1,
        "destination": "secretariat",
        "trunk": None,
        "end_step": "desk",
        "detail": "",
    }
    answer = {"t": "answered", "id": call_id, "answered": (at + timedelta(seconds=5)).isoformat()}
    return [{"t": "call", **call}, step, answer, end]


async def rows(engine: AsyncEngine, table: str, key: str) -> list[tuple[Any, ...]]:
    """Every row of ``table`` as the driver gives it, the call id left out."""
    async with engine.connect() as conn:
        result = await conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY {key}")
        names = list(result.keys())
        at = names.index(key)
        return [tuple(v for i, v in enumerate(r) if i != at) for r in result.all()]


async def test_the_driver_path_stores_what_sqlalchemy_stores(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await write_records(conn, records("hot"), node="n1")
        # The same records through SQLAlchemy's own execution of the same statements.
        stmts = _statements(conn.dialect.name)
        ref = _rows_of(records("ref"), "n1")
        await conn.execute(stmts.call, list(ref.calls.values()))
        answers = [{"call_id": k, "at": v} for k, v in ref.answers.items()]
        await conn.execute(stmts.answer, answers)
        await conn.execute(stmts.ignore[STEPS.name], list(ref.steps.values()))
    calls = await rows(engine, "calls", "id")
    steps = await rows(engine, "call_steps", "call_id")
    assert len(calls) == 2 and calls[0] == calls[1]
    assert len(steps) == 2 and steps[0] == steps[1]
    assert None not in calls[0][:8]  # started, answered, ended... all set


async def test_a_replay_through_the_driver_path_changes_nothing(engine: AsyncEngine) -> None:
    """Written twice, with the start again after the end (a replay): the same rows, and
    the call keeps its first start and its end."""
    recs = records("c1")
    async with engine.begin() as conn:
        await write_records(conn, recs)
    before = (await rows(engine, "calls", "id"), await rows(engine, "call_steps", "call_id"))
    later = dict(recs[0], started=(datetime.fromisoformat(recs[0]["started"]) + timedelta(1)))
    later["started"] = later["started"].isoformat()
    async with engine.begin() as conn:
        await write_records(conn, [*recs, later])
    after = (await rows(engine, "calls", "id"), await rows(engine, "call_steps", "call_id"))
    assert after == before


async def test_an_answer_in_a_later_batch_is_stored_like_every_other_time(
    engine: AsyncEngine,
) -> None:
    """The usual case: a call's answer reaches the database after its start (review)."""
    call, _step, answer, _end = records("late")
    async with engine.begin() as conn:
        await write_records(conn, [call])
    async with engine.begin() as conn:
        await write_records(conn, [answer])
    async with engine.connect() as conn:
        result = await conn.exec_driver_sql("SELECT started, answered FROM calls")
        [(started, answered)] = result.all()
    if isinstance(started, str):  # SQLite: the naive UTC text of every other time
        assert (started, answered) == ("2026-07-01 08:00:00.123456", "2026-07-01 08:00:07.000000")
    else:  # PostgreSQL: an aware timestamp
        assert answered == datetime(2026, 7, 1, 8, 0, 7, tzinfo=UTC)
