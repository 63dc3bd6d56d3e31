"""Retiring a node that went away for good: its open calls get an outcome, once, and nobody
else's are touched (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from callflow.flow.events import OutcomeKind, StepKind, StepResult
from callflow.store.models import AdminAction, Call
from callflow.store.recorder import Recorder
from callflow.store.retire import NodeActive, retire_node

from .support import T0, answered, info, step

NOW = T0 + timedelta(hours=2)
QUIET = timedelta(minutes=10)


async def outcomes(engine: AsyncEngine) -> dict[str, tuple[str | None, str | None]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(Call.id, Call.outcome, Call.detail))
        return {r.id: (r.outcome, r.detail) for r in rows}


async def test_the_retired_nodes_open_calls_are_closed_and_no_one_elses(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    gone = Recorder(engine, tmp_path / "spool-gone", node="gone")
    async with gone:
        gone.call_started(info("gone-menu"))  # in the menu when the node died
        gone.step(step("gone-menu", 1, kind=StepKind.MENU, result=StepResult.PRESSED, key="1"))
        gone.call_started(info("gone-talking"))  # talking to the secretariat
        gone.step(
            step(
                "gone-talking",
                1,
                kind=StepKind.DIAL,
                result=StepResult.ANSWERED,
                outcome=OutcomeKind.ANSWERED,
                destination="secretariat",
            )
        )
        gone.call_started(info("gone-done"))
        gone.call_ended(info("gone-done"), answered(), T0 + timedelta(minutes=1))
    alive = Recorder(engine, tmp_path / "spool-alive", node="alive")
    async with alive:
        alive.call_started(info("alive-open"))
    legacy = Recorder(engine, tmp_path / "spool-legacy")
    async with legacy:
        legacy.call_started(info("untagged"))

    done = await retire_node(engine, "gone", by="cli:admin", now=NOW, quiet=QUIET)
    assert (done.closed, done.reached) == (2, 1)
    got = await outcomes(engine)
    assert got["gone-menu"][0] == "lost"
    assert "closed by cli:admin: node gone retired" in str(got["gone-menu"][1])
    assert got["gone-talking"][0] == "answered"
    assert got["gone-done"][0] == "answered"
    assert got["alive-open"] == (None, None)  # another node's call, running there
    assert got["untagged"] == (None, None)  # no node's: not this one's to close
    again = await retire_node(engine, "gone", by="cli:admin", now=NOW, quiet=QUIET)
    assert again.closed == 0  # once
    async with engine.connect() as conn:
        audit = (await conn.execute(select(AdminAction.who, AdminAction.detail))).all()
    assert sorted((tuple(a) for a in audit), key=lambda a: -a[1]["closed"]) == [
        ("cli:admin", {"node": "gone", "closed": 2, "reached": 1}),
        ("cli:admin", {"node": "gone", "closed": 0, "reached": 0}),
    ]


async def test_a_node_that_logged_a_call_within_the_quiet_period_is_refused(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    rec = Recorder(engine, tmp_path / "spool", node="busy")
    async with rec:
        rec.call_started(info("busy-open", started=NOW - timedelta(minutes=3)))
    with pytest.raises(NodeActive):
        await retire_node(engine, "busy", by="cli:admin", now=NOW, quiet=QUIET)
    assert (await outcomes(engine))["busy-open"] == (None, None)
    later = await retire_node(
        engine, "busy", by="cli:admin", now=NOW + timedelta(minutes=8), quiet=QUIET
    )
    assert later.closed == 1
