"""Drill results in the call log (table ``drills``), on SQLite and PostgreSQL: written,
read back as the last result and the last success of each leg (what the daemon shows
after a restart and the continuity audit reads)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from callflow.drills import DrillMode, DrillResult
from callflow.store.db import upgrade
from callflow.store.drill_log import SqlDrillLog, last_successes

from .conftest import Database

T0 = datetime(2026, 12, 4, 17, 0, tzinfo=UTC)


def leg(trunk: str, passed: bool, at: datetime, dest: str = "telesecretariat") -> DrillResult:
    mode = DrillMode.HEALTH if dest == "samu" else DrillMode.CALL
    delay = 1.5 if passed and mode is DrillMode.CALL else None
    reason = "answered in 1.5 s" if passed else "no answer within 6 s"
    return DrillResult("cabinet", dest, trunk, mode, passed, reason, at, delay)


async def test_results_are_stored_and_the_latest_read_back(database: Database) -> None:
    engine = database.engine()
    await upgrade(engine)
    log = SqlDrillLog(engine)
    await log.record([leg("trunk-a", True, T0), leg("trunk-b", True, T0)])
    later = T0 + timedelta(days=7)
    await log.record([leg("trunk-a", False, later), leg("trunk-b", True, later)])
    await log.record([leg("trunk-b", False, later, dest="samu")])
    last, ok = await log.latest()
    by_key = {(r.destination, r.trunk): r for r in last}
    assert by_key[("telesecretariat", "trunk-a")] == leg("trunk-a", False, later)
    assert by_key[("telesecretariat", "trunk-b")] == leg("trunk-b", True, later)
    assert by_key[("samu", "trunk-b")].mode is DrillMode.HEALTH
    assert {(r.destination, r.trunk, r.at) for r in ok} == {
        ("telesecretariat", "trunk-a", T0),  # its last success, before the failure
        ("telesecretariat", "trunk-b", later),
    }
    assert await last_successes(engine) == {
        ("cabinet", "telesecretariat", "trunk-a"): T0,
        ("cabinet", "telesecretariat", "trunk-b"): later,
    }
