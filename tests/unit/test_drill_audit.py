"""The continuity audit's drill half: ``check --horizon`` names each forwarding leg with
no successful drill in 90 days, from the call log; without one it says so, never passes
in silence."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from callflow.drills import DrillMode, DrillResult
from callflow.store.db import create_engine, upgrade
from callflow.store.drill_log import SqlDrillLog
from tests.support.flows import FORWARD_ONLY_FLOW, write_flow

RunCli = Callable[..., Any]  # the fixture of conftest.py


def settings(tmp_path: Path) -> Path:
    write_flow(tmp_path / "flows", FORWARD_ONLY_FLOW, "cabinet.yaml")
    config = tmp_path / "callflow.toml"
    config.write_text(
        '[flows]\ndir = "flows"\n[daemon]\nstate_dir = "var"\n'
        '[database]\nurl = "sqlite+aiosqlite:///callflow.db"\n'
    )
    return config


async def _seed(db: Path, results: list[DrillResult], node: str = "pbx-1") -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    try:
        await upgrade(engine)
        await SqlDrillLog(engine, node).record(results)
    finally:
        await engine.dispose()


def test_without_settings_the_drill_half_is_not_checked(run_cli: RunCli, tmp_path: Path) -> None:
    write_flow(tmp_path, FORWARD_ONLY_FLOW, "cabinet.yaml")
    r = run_cli("check", str(tmp_path), "--horizon", "2d")
    assert "drills: NOT CHECKED (no settings" in r.out, r.out + r.err


def test_without_a_call_log_the_drill_half_is_not_checked(run_cli: RunCli, tmp_path: Path) -> None:
    r = run_cli("check", "--config", str(settings(tmp_path)), "--horizon", "2d")
    assert "drills: NOT CHECKED (no call log at" in r.out, r.out + r.err


def test_legs_without_a_recent_successful_drill_are_named(run_cli: RunCli, tmp_path: Path) -> None:
    config = settings(tmp_path)
    (tmp_path / "var").mkdir()
    now = datetime.now(UTC)

    def leg(trunk: str, passed: bool, days: int) -> DrillResult:
        at = now - timedelta(days=days)
        return DrillResult("cabinet", "telesecretariat", trunk, DrillMode.CALL, passed, "", at)

    asyncio.run(
        _seed(
            tmp_path / "var" / "callflow.db",
            [leg("trunk-a", True, 10), leg("trunk-b", True, 100), leg("trunk-b", False, 1)],
        )
    )
    r = run_cli("check", "--config", str(config), "--horizon", "2d")
    assert r.code == 1, r.out + r.err
    assert "drills: 1 of 2 legs without a successful drill in 90 days" in r.out
    old = (now - timedelta(days=100)).strftime("%Y-%m-%d")
    assert f"NO DRILL cabinet/telesecretariat via trunk-b: last successful drill {old}" in r.out
    assert "via trunk-a" not in r.out
    asyncio.run(_seed(tmp_path / "var" / "callflow.db", [leg("trunk-b", True, 0)]))
    r = run_cli("check", "--config", str(config), "--horizon", "2d")
    assert r.code == 0, r.out + r.err
    assert "every forwarding destination (2 legs) passed a drill in 90 days" in r.out


def test_a_leg_drilled_on_one_node_only_is_stale_on_the_other(
    run_cli: RunCli, tmp_path: Path
) -> None:
    """Each node goes out by its own trunks: node pbx-2's trunk-a is not pbx-1's."""
    config = settings(tmp_path)
    (tmp_path / "var").mkdir()
    at = datetime.now(UTC) - timedelta(days=1)
    db = tmp_path / "var" / "callflow.db"

    def leg(trunk: str, passed: bool) -> DrillResult:
        return DrillResult("cabinet", "telesecretariat", trunk, DrillMode.CALL, passed, "", at)

    asyncio.run(_seed(db, [leg("trunk-a", True), leg("trunk-b", True)], "pbx-1"))
    asyncio.run(_seed(db, [leg("trunk-a", True), leg("trunk-b", False)], "pbx-2"))
    r = run_cli("check", "--config", str(config), "--horizon", "2d")
    assert r.code == 1, r.out + r.err
    assert "drills: 1 of 4 legs on 2 nodes (pbx-1, pbx-2) without a successful drill" in r.out
    assert "NO DRILL cabinet/telesecretariat via trunk-b on node pbx-2: never drilled" in r.out
    assert "on node pbx-1" not in r.out
