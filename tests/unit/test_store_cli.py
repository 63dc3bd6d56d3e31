"""``callflow db ...``, ``callflow export``, ``callflow report`` on SQLite; the Store facade."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import CliResult
from sqlalchemy import select

from callflow.errors import UserError
from callflow.flow.events import CallInfo, Outcome, OutcomeKind
from callflow.settings import Settings, load_settings
from callflow.store import Store, StoreUnavailable
from callflow.store.db import head_revision
from callflow.store.models import AdminAction

Run = Callable[..., CliResult]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    p = tmp_path / "callflow.toml"
    # Data paths are relative to state_dir (itself relative to the file): ./state/var/calls.db
    p.write_text(
        '[daemon]\nstate_dir = "state"\n[database]\nurl = "sqlite+aiosqlite:///var/calls.db"\n',
        encoding="utf-8",
    )
    return p


def record_calls(config: Path, when: datetime, callers: list[str], prefix: str = "c") -> None:
    """Record calls through the daemon's path: Store.from_settings, its recorder."""

    async def go() -> None:
        store = Store.from_settings(load_settings(config, env={}), env={})
        await store.check_schema()
        for n, caller in enumerate(callers):
            i = CallInfo(f"{prefix}{n}", "cabinet", "v1", caller, "0388000000", when)
            store.recorder.call_started(i)
            store.recorder.call_ended(
                i, Outcome(OutcomeKind.ABANDONED, "menu"), when + timedelta(seconds=20)
            )
        await store.recorder.close()
        await store.dispose()

    asyncio.run(go())


def test_db_upgrade_current_downgrade(run_cli: Run, config: Path) -> None:
    db_file = config.parent / "state" / "var" / "calls.db"
    r = run_cli("db", "current", "--config", config)
    assert r.code == 1 and f"no call log at {db_file}" in r.err
    assert not db_file.exists()  # asking does not create it
    r = run_cli("db", "upgrade", "--config", config)
    assert r.code == 0, r.err
    assert f"schema upgraded from nothing to {head_revision()}" in r.out
    assert db_file.is_file()
    r = run_cli("db", "upgrade", "--config", config)
    assert f"schema already at {head_revision()}" in r.out
    r = run_cli("db", "current", "--config", config)
    assert r.code == 0 and f"{head_revision()} (up to date)" in r.out
    r = run_cli("db", "downgrade", "--revision", "base", "--config", config)
    assert r.code == 0 and "downgraded from" in r.out
    r = run_cli("report", "--from", "2026-01-01", "--to", "2026-01-31", "--config", config)
    assert r.code == 1
    assert "database schema is at nothing (empty database), this callflow needs" in r.err
    assert "run `callflow db upgrade`" in r.err


def test_purge_export_report(run_cli: Run, config: Path) -> None:
    assert run_cli("db", "upgrade", "--config", config).code == 0
    now = datetime.now(UTC)
    record_calls(config, now - timedelta(days=400), ["0611111111"], prefix="old")
    record_calls(config, now - timedelta(days=1), ["0699999999", "06 11 11 11 11"], prefix="new")

    r = run_cli("export", "--caller", "06.11.11.11.11", "--config", config)
    assert r.code == 0, r.err
    assert [c["id"] for c in json.loads(r.out)["calls"]] == ["old0", "new1"]

    r = run_cli("db", "purge", "--config", config)
    assert r.code == 0 and "1 calls, 0 steps deleted" in r.out, r.out
    r = run_cli("export", "--caller", "0611111111", "--config", config)
    assert [c["id"] for c in json.loads(r.out)["calls"]] == ["new1"]

    day = (now - timedelta(days=1)).astimezone(UTC).date().isoformat()
    r = run_cli(
        "report",
        "--from",
        day,
        "--to",
        day,
        "--timezone",
        "UTC",
        "--format",
        "json",
        "--config",
        config,
    )
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["calls"]["total"] == 2 and report["missed"]["rate"] == 1.0
    r = run_cli("report", "--from", day, "--to", day, "--format", "html", "--config", config)
    assert r.code == 0 and "<svg" in r.out
    assert '<html lang="fr">' in r.out  # [daemon] language: French by default
    r = run_cli("report", "--from", day, "--to", day, "--config", config)
    assert r.code == 0 and "taux d'appels manqués" in r.out
    r = run_cli("report", "--from", day, "--to", day, "--language", "en", "--config", config)
    assert r.code == 0 and "missed-call rate" in r.out


def test_report_arguments(run_cli: Run, config: Path) -> None:
    assert run_cli("db", "upgrade", "--config", config).code == 0
    r = run_cli("report", "--from", "2026-02-01", "--to", "2026-01-01", "--config", config)
    assert r.code == 1 and "--to must not be before --from" in r.err
    r = run_cli("report", "--from", "01/02/2026", "--to", "2026-01-01", "--config", config)
    assert r.code == 1 and "invalid date '01/02/2026'" in r.err
    r = run_cli(
        "report",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-02",
        "--timezone",
        "Mars/Olympus",
        "--config",
        config,
    )
    assert r.code == 1 and "unknown time zone 'Mars/Olympus'" in r.err


def test_export_pseudonymised_and_audited(run_cli: Run, tmp_path: Path) -> None:
    (tmp_path / "hmac.key").write_bytes(b"s" * 32)
    (tmp_path / "hmac.key").chmod(0o600)
    config = tmp_path / "callflow.toml"
    config.write_text(
        '[daemon]\nstate_dir = "."\n[database]\nurl = "sqlite+aiosqlite:///calls.db"\n'
        '[privacy]\ncaller_numbers = "pseudonymised"\nkey_file = "hmac.key"\n',
        encoding="utf-8",
    )
    assert run_cli("db", "upgrade", "--config", config).code == 0
    record_calls(config, datetime.now(UTC), ["0611111111", "0622222222"])
    r = run_cli("export", "--caller", "+33 6 11 11 11 11", "--config", config)  # any form
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["caller_numbers"] == "pseudonymised"
    assert [c["id"] for c in data["calls"]] == ["c0"]
    assert data["calls"][0]["caller"].startswith("hmac:")
    assert "0611111111" not in (tmp_path / "calls.db").read_bytes().decode("latin-1")

    async def entries() -> list[str]:
        store = Store.from_settings(load_settings(config, env={}), env={})
        async with store.engine.connect() as conn:
            rows = (await conn.execute(select(AdminAction.action, AdminAction.who))).all()
        await store.dispose()
        return [f"{a} by {w}" for a, w in rows]

    [entry] = asyncio.run(entries())
    assert entry.startswith("export by cli:")
    # Without its key, pseudonymised storage refuses to work.
    (tmp_path / "hmac.key").unlink()
    r = run_cli("export", "--caller", "0611111111", "--config", config)
    assert r.code == 1 and "key_file: cannot read" in r.err


def test_a_password_in_the_url_is_refused_by_the_commands(run_cli: Run, tmp_path: Path) -> None:
    config = tmp_path / "callflow.toml"
    config.write_text(
        '[database]\nurl = "postgresql+asyncpg://callflow:secret@127.0.0.1:1/x"\n',
        encoding="utf-8",
    )
    r = run_cli("db", "current", "--config", config)
    assert r.code == 1 and "a password does not belong in the URL" in r.err


def test_an_unreachable_database(run_cli: Run, tmp_path: Path) -> None:
    config = tmp_path / "callflow.toml"
    config.write_text(
        '[database]\nurl = "postgresql+asyncpg://callflow@127.0.0.1:1/x"\n', encoding="utf-8"
    )
    r = run_cli("db", "current", "--config", config)
    assert r.code == 1 and r.err.startswith("callflow: database: ")

    async def check() -> None:
        store = Store.from_settings(load_settings(config, env={}), env={})
        try:
            await store.check_schema()
        finally:
            await store.dispose()

    with pytest.raises(StoreUnavailable, match="database unavailable"):
        asyncio.run(check())


def test_the_store_refuses_an_old_schema(config: Path) -> None:
    async def check() -> None:
        store = Store.from_settings(load_settings(config, env={}), env={})
        try:
            await store.check_schema()
        finally:
            await store.dispose()

    with pytest.raises(UserError, match="run `callflow db upgrade`"):
        asyncio.run(check())


def test_retire_node_closes_a_gone_nodes_open_calls_and_refuses_its_own(
    run_cli: Run, config: Path, tmp_path: Path
) -> None:
    assert run_cli("db", "upgrade", "--config", config).code == 0
    started = datetime.now(UTC) - timedelta(hours=1)

    def open_call_on(node: str) -> None:
        own = tmp_path / f"{node}.toml"
        own.write_text(config.read_text() + f'[node]\nname = "{node}"\n', encoding="utf-8")
        asyncio.run(record(load_settings(own, env={})))

    async def record(settings: Settings) -> None:
        store = Store.from_settings(settings, env={})
        store.recorder.call_started(
            CallInfo(f"{settings.node.name}-1", "cabinet", "v1", "0612345678", "0388", started)
        )
        await store.recorder.close()
        await store.dispose()

    open_call_on("node2")
    r = run_cli("db", "retire-node", "node2", "--by", "admin", "--config", config)
    assert r.code == 0, r.err
    assert "node node2 retired by admin: 1 open call(s) closed (0 had reached someone" in r.out
    r = run_cli("db", "retire-node", "node1", "--config", config)
    assert (r.code, r.out) == (0, "node node1: no call logged by this node (nothing to close)\n")
    mine = tmp_path / "mine.toml"
    mine.write_text(config.read_text() + '[node]\nname = "node1"\n', encoding="utf-8")
    r = run_cli("db", "retire-node", "node1", "--config", mine)
    assert r.code == 1 and "this settings file's own node" in r.err

    open_call_on("node3")  # started an hour ago: within a 2-hour quiet period
    r = run_cli("db", "retire-node", "node3", "--quiet-minutes", "120", "--config", config)
    assert r.code == 1 and "is it really gone?" in r.err
