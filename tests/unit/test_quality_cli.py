"""``callflow report`` without --from/--to: the monthly quality report, in French."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from conftest import CliResult

from callflow.store.commands import parse_month
from callflow.store.db import create_engine
from callflow.store.writer import write_records

Run = Callable[..., CliResult]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    p = tmp_path / "callflow.toml"
    # Data paths are relative to state_dir; "." keeps them beside this file (./var/calls.db).
    p.write_text(
        '[daemon]\nstate_dir = "."\n[database]\nurl = "sqlite+aiosqlite:///var/calls.db"\n',
        encoding="utf-8",
    )
    return p


def abandoned(config: Path, cid: str, started: str) -> None:
    async def go() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{config.parent / 'var' / 'calls.db'}")
        call = {
            "id": cid,
            "flow": "cabinet",
            "flow_version": "v1",
            "dialed": "0388000000",
            "caller": "0612345678",
            "started": started,
        }
        end = {"answered": None, "ended": started, "outcome": "abandoned", "tier": None}
        end |= {"destination": None, "trunk": None, "end_step": "menu", "detail": ""}
        async with engine.begin() as conn:
            await write_records(conn, [{"t": "end", **call, **end}])
        await engine.dispose()

    asyncio.run(go())


def test_monthly_quality_report(run_cli: Run, config: Path) -> None:
    assert run_cli("db", "upgrade", "--config", config).code == 0
    abandoned(config, "m1", "2026-03-10T09:00:00+00:00")
    abandoned(config, "f1", "2026-02-10T09:00:00+00:00")
    abandoned(config, "f2", "2026-02-11T09:00:00+00:00")
    r = run_cli("report", "--month", "2026-03", "--config", config)
    assert r.code == 0, r.err
    assert r.out.startswith("Rapport qualité de la ligne : mars 2026 (Europe/Paris)")
    lines = [" ".join(line.split()) for line in r.out.splitlines()]
    assert "appels 1 2" in lines
    assert "taux d'appels manqués 100,0 % (1) 100,0 % (2)" in lines
    r = run_cli("report", "--month", "2026-03", "--format", "json", "--config", config)
    data = json.loads(r.out)
    assert [m["figures"]["*"]["calls"] for m in data["months"]] == [1, 2]
    r = run_cli("report", "--month", "2026-03", "--format", "html", "--config", config)
    assert r.code == 0 and "<h1>Rapport qualité de la ligne : mars 2026</h1>" in r.out


def test_report_arguments(run_cli: Run, config: Path) -> None:
    assert run_cli("db", "upgrade", "--config", config).code == 0
    r = run_cli("report", "--month", "03/2026", "--config", config)
    assert r.code == 1 and "invalid month '03/2026': expected YYYY-MM" in r.err
    r = run_cli("report", "--from", "2026-03-01", "--config", config)
    assert r.code == 1 and "give --from and --to together, or --month" in r.err


def test_last_month_by_default() -> None:
    assert parse_month(None, datetime(2026, 3, 15)) == (2026, 2)
    assert parse_month(None, datetime(2026, 1, 2)) == (2025, 12)
    assert parse_month("2026-11", datetime(2026, 1, 2)) == (2026, 11)
