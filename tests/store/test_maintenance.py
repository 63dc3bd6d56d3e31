"""GDPR: retention purge, the right of access (export), callbacks done, the audit trail."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from callflow.errors import UserError
from callflow.store.db import create_engine
from callflow.store.leftovers import CORRUPT, REJECTED, LeftoversPurged, purge_leftovers
from callflow.store.maintenance import complete_callback, export_caller, purge
from callflow.store.models import AdminAction, Call, CallbackRequestRow, CallStep
from callflow.store.privacy import CallerPrivacy
from callflow.store.writer import write_records

NOW = datetime(2027, 3, 2, 3, 0, tzinfo=UTC)


def records(cid: str, started: datetime, caller: str, *, n_steps: int = 2) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {
            "t": "end",
            "id": cid,
            "flow": "cabinet",
            "flow_version": "v1",
            "dialed": "0388000000",
            "caller": caller,
            "started": started.isoformat(),
            "answered": None,
            "ended": (started + timedelta(minutes=1)).isoformat(),
            "outcome": "callback",
            "tier": None,
            "destination": None,
            "trunk": None,
            "end_step": "callback",
            "detail": "same-day",
        }
    ]
    for seq in range(1, n_steps + 1):
        out.append(
            {
                "t": "step",
                "call_id": cid,
                "flow": "cabinet",
                "seq": seq,
                "at": (started + timedelta(seconds=seq)).isoformat(),
                "step": f"s{seq}",
                "kind": "play",
                "result": "played",
                "detail": "",
                "next": None,
                "duration": 1.0,
            }
        )
    return out


def callback(cid: str, created: datetime, caller: str) -> dict[str, Any]:
    return {
        "t": "callback",
        "call_id": cid,
        "flow": "cabinet",
        "queue": "same-day",
        "priority": "high",
        "tier": None,
        "caller": caller,
        "created": created.isoformat(),
    }


async def audit(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(AdminAction).order_by(AdminAction.at))).all())


async def test_purge_deletes_old_calls_and_anonymises_old_callbacks(engine: AsyncEngine) -> None:
    old = NOW - timedelta(days=366)
    recent = NOW - timedelta(days=364)
    async with engine.begin() as conn:
        await write_records(
            conn,
            [
                *records("old-1", old, "0611111111", n_steps=3),
                *records("old-2", old - timedelta(days=30), "0622222222"),
                *records("new-1", recent, "0611111111"),
                callback("old-1", old, "0611111111"),  # pending, old: cancelled, anonymised
                callback("old-2", old - timedelta(days=30), "0622222222"),  # done, old
                callback("new-1", recent, "0611111111"),  # pending, recent: untouched
            ],
        )
        ids = dict(
            (await conn.execute(select(CallbackRequestRow.call_id, CallbackRequestRow.id))).all()
        )
    assert await complete_callback(engine, ids["old-2"], by="desk", at=old)

    result = await purge(engine, NOW, 365)
    assert (result.calls, result.steps) == (2, 5)
    assert (result.callbacks_anonymised, result.callbacks_cancelled) == (2, 1)
    assert result.cutoff == NOW - timedelta(days=365)
    async with engine.connect() as conn:
        assert (await conn.execute(select(Call.id))).scalars().all() == ["new-1"]
        assert {s.call_id for s in (await conn.execute(select(CallStep))).all()} == {"new-1"}
        cbs = {c.call_id: c for c in (await conn.execute(select(CallbackRequestRow))).all()}
    assert cbs["old-1"].caller is None and cbs["old-1"].status == "cancelled"
    assert cbs["old-1"].completed_by == "retention"
    assert cbs["old-2"].caller is None and cbs["old-2"].status == "done"
    assert cbs["old-2"].completed_by == "desk"  # statistics survive
    assert cbs["new-1"].caller == "0611111111" and cbs["new-1"].status == "pending"
    entries = await audit(engine)
    assert [e.action for e in entries] == ["callback done", "purge"]
    assert entries[-1].detail["calls"] == 2 and entries[-1].who == "callflow"

    again = await purge(engine, NOW, 365)  # nothing left to do
    assert (again.calls, again.steps, again.callbacks_anonymised) == (0, 0, 0)


async def test_export_everything_about_a_caller_in_clear(engine: AsyncEngine) -> None:
    t = NOW - timedelta(days=3)
    async with engine.begin() as conn:
        await write_records(
            conn,
            [
                *records("mine-1", t, "0611111111", n_steps=2),
                *records("mine-2", t + timedelta(hours=1), "0611111111", n_steps=1),
                *records("theirs", t, "0699999999"),
                callback("mine-1", t, "0611111111"),
                callback("theirs", t, "0699999999"),
            ],
        )
    data = await export_caller(
        engine, CallerPrivacy(), ["06 11 11 11 11"], now=NOW, who="cli:alice"
    )
    assert data["caller_numbers"] == "clear"
    assert data["searched"] == {"numbers": ["0611111111"], "stored_as": ["0611111111"]}
    assert [c["id"] for c in data["calls"]] == ["mine-1", "mine-2"]
    assert [s["seq"] for s in data["calls"][0]["steps"]] == [1, 2]
    assert data["calls"][0]["started"] == t.isoformat()
    assert [c["call_id"] for c in data["callbacks"]] == ["mine-1"]
    [entry] = await audit(engine)
    assert entry.action == "export" and entry.who == "cli:alice"
    assert entry.detail == {"callers": ["********11"], "calls": 2, "callbacks": 1}


async def test_export_with_pseudonymised_storage(engine: AsyncEngine) -> None:
    privacy = CallerPrivacy(b"a secret key of 32 bytes........")
    t = NOW - timedelta(days=3)
    async with engine.begin() as conn:
        await write_records(
            conn,
            [
                *records("mine", t, privacy.protect("0611111111")),
                *records("theirs", t, privacy.protect("0699999999")),
            ],
        )
    data = await export_caller(engine, privacy, ["0611111111"], now=NOW)
    assert [c["id"] for c in data["calls"]] == ["mine"]
    assert data["calls"][0]["caller"].startswith("hmac:")
    other_key = CallerPrivacy(b"another key, another controller!")
    assert (await export_caller(engine, other_key, ["0611111111"], now=NOW))["calls"] == []
    with pytest.raises(UserError):
        await export_caller(engine, privacy, [" "], now=NOW)


async def test_complete_a_callback_once(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await write_records(conn, [callback("c1", NOW, "0611111111")])
        cid = (await conn.execute(select(CallbackRequestRow.id))).scalar_one()
    assert await complete_callback(engine, cid, by="desk:bob", at=NOW + timedelta(minutes=5))
    assert not await complete_callback(engine, cid, by="desk:eve", at=NOW + timedelta(hours=1))
    async with engine.connect() as conn:
        row = (await conn.execute(select(CallbackRequestRow))).one()
    assert (row.status, row.completed_by) == ("done", "desk:bob")
    assert row.completed == NOW + timedelta(minutes=5)
    with pytest.raises(ValueError):
        await complete_callback(engine, cid, by="x", at=NOW, status="maybe")


async def test_a_callback_number_is_erased_some_days_after_the_callback(
    engine: AsyncEngine,
) -> None:
    day = timedelta(days=1)
    async with engine.begin() as conn:
        await write_records(
            conn,
            [
                *records("done-long-ago", NOW - 40 * day, "0611111111"),
                callback("done-long-ago", NOW - 40 * day, "0611111111"),
                callback("cancelled-long-ago", NOW - 40 * day, "0622222222"),
                callback("done-lately", NOW - 40 * day, "0633333333"),
                callback("still-pending", NOW - 40 * day, "0644444444"),
            ],
        )
        ids = dict(
            (await conn.execute(select(CallbackRequestRow.call_id, CallbackRequestRow.id))).all()
        )
    done = NOW - 31 * day
    assert await complete_callback(engine, ids["done-long-ago"], by="desk", at=done)
    assert await complete_callback(
        engine, ids["cancelled-long-ago"], by="desk", at=done, status="cancelled"
    )
    assert await complete_callback(engine, ids["done-lately"], by="desk", at=NOW - 29 * day)
    result = await purge(engine, NOW, 365, callback_erase_days=30)
    assert result.callbacks_anonymised == 2 and result.calls == 0
    async with engine.connect() as conn:
        rows = (await conn.execute(select(CallbackRequestRow))).all()
    callers = {c.call_id: c.caller for c in rows}
    assert callers == {
        "done-long-ago": None,
        "cancelled-long-ago": None,
        "done-lately": "0633333333",  # its delay has not passed
        "still-pending": "0644444444",  # the number is still needed
    }


def test_the_purge_covers_the_journal_leftovers(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    (spool / CORRUPT).mkdir(parents=True)
    old_seg, new_seg = spool / CORRUPT / "segment-1.log", spool / CORRUPT / "segment-2.log"
    old_seg.write_text('{"caller": "0611111111"}\n')
    new_seg.write_text('{"caller": "0622222222"}\n')
    os.utime(old_seg, (time.time() - 400 * 86400,) * 2)
    lines = [
        {"at": (NOW - timedelta(days=400)).isoformat(), "error": "x", "rec": {"c": "0611"}},
        {"at": (NOW - timedelta(days=2)).isoformat(), "error": "y", "rec": {"c": "0622"}},
    ]
    (spool / REJECTED).write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = purge_leftovers(spool, NOW - timedelta(days=365))
    assert (result.rejected, result.corrupt) == (1, 1)
    assert not old_seg.exists() and new_seg.exists()
    kept = (spool / REJECTED).read_text()
    assert "0622" in kept and "0611" not in kept
    assert (spool / REJECTED).stat().st_mode & 0o777 == 0o600
    assert purge_leftovers(spool, NOW - timedelta(days=365)) == LeftoversPurged(0, 0)


async def test_sqlite_overwrites_what_it_deletes(tmp_path: Path) -> None:
    sqlite = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")
    try:
        async with sqlite.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA secure_delete")).scalar() == 1
    finally:
        await sqlite.dispose()
