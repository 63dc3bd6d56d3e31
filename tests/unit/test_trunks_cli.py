"""``callflow trunks``: the daemon's snapshot as a table or JSON; clear errors without one."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from callflow.telephony import DialStatus
from callflow.trunks import ContactUpdate, HealthAwareSelector, TrunkHealth, TrunkState

Run = Callable[..., Any]  # conftest's run_cli: (*argv) -> CliResult(code, out, err)


@pytest.fixture(autouse=True)
def _no_ami_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("CALLFLOW_"):
            monkeypatch.delenv(var)


def write_snapshot(state_dir: Path, *, live: bool = True) -> Path:
    at = datetime.now(UTC) - timedelta(minutes=5)
    health = TrunkHealth(["trunk-a", "trunk-b"], clock=lambda: at)
    health.resync(
        [
            ContactUpdate("trunk-a", "sip:a.example", TrunkState.REACHABLE, 23.817),
            ContactUpdate("trunk-b", "sip:b.example", TrunkState.UNREACHABLE),
        ]
    )
    health.set_live(live)
    selector = HealthAwareSelector(health)
    for _ in range(3):
        selector.report("trunk-b", DialStatus.CONGESTION)
    path = state_dir / "trunks.json"
    selector.write_snapshot(path)
    return path


def test_table_from_the_daemon_snapshot(run_cli: Run, tmp_path: Path) -> None:
    write_snapshot(tmp_path)
    r = run_cli("trunks", "--state-dir", tmp_path)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].split() == ["TRUNK", "STATE", "RTT", "LAST", "CHANGE", "FAILURES", "BREAKER"]
    a = lines[1].split()
    assert a[:4] == ["trunk-a", "reachable", "23.8", "ms"]
    assert a[-2:] == ["0", "closed"] and "(5 min ago)" in lines[1]
    b = lines[2].split()
    assert b[:3] == ["trunk-b", "unreachable", "-"] and b[-2:] == ["3", "open"]
    assert f"by the daemon (pid {os.getpid()}); AMI feed live" in r.out
    # Columns line up.
    assert lines[1].index("reachable") == lines[0].index("STATE")


def test_stale_feed_is_said(run_cli: Run, tmp_path: Path) -> None:
    write_snapshot(tmp_path, live=False)
    r = run_cli("trunks", "--state-dir", tmp_path)
    assert "AMI feed lost: states may be stale" in r.out


def test_a_snapshot_left_by_a_stopped_daemon_is_flagged(run_cli: Run, tmp_path: Path) -> None:
    path = write_snapshot(tmp_path)
    data = json.loads(path.read_text())
    data["pid"] = 2**22 + 12345  # above Linux's pid_max: no such process
    path.write_text(json.dumps(data))
    r = run_cli("trunks", "--state-dir", tmp_path)
    assert "the daemon has stopped, this snapshot may be stale" in r.out


def test_json_and_a_chosen_trunk(run_cli: Run, tmp_path: Path) -> None:
    write_snapshot(tmp_path)
    r = run_cli("trunks", "--state-dir", tmp_path, "--json", "trunk-b")
    doc = json.loads(r.out)
    assert doc["source"] == "snapshot" and doc["live"] is True
    assert doc["path"] == str(tmp_path / "trunks.json")
    assert [t["name"] for t in doc["trunks"]] == ["trunk-b"]
    assert doc["trunks"][0]["breaker_open"] is True


def test_an_unknown_trunk_is_refused_by_name(run_cli: Run, tmp_path: Path) -> None:
    write_snapshot(tmp_path)
    r = run_cli("trunks", "--state-dir", tmp_path, "trunk-z")
    assert r.code == 1
    assert "no trunk 'trunk-z' in the snapshot" in r.err and "trunk-a, trunk-b" in r.err


def test_state_dir_comes_from_the_settings_file(run_cli: Run, tmp_path: Path) -> None:
    write_snapshot(tmp_path / "state")
    cfg = tmp_path / "callflow.toml"
    cfg.write_text('[daemon]\nstate_dir = "state"\n')
    r = run_cli("trunks", "--config", cfg)
    assert r.code == 0 and "trunk-a" in r.out


def test_a_corrupt_snapshot_is_an_error(run_cli: Run, tmp_path: Path) -> None:
    (tmp_path / "trunks.json").write_text("{not json")
    r = run_cli("trunks", "--state-dir", tmp_path)
    assert r.code == 1 and "cannot read the trunk snapshot" in r.err


def test_neither_snapshot_nor_ami_exits_1_with_a_clear_message(
    run_cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CALLFLOW_AMI_PORT", str(port))
    monkeypatch.setenv("CALLFLOW_AMI_SECRET", "x")
    r = run_cli("trunks", "--state-dir", tmp_path, "trunk-a")
    assert r.code == 1
    assert f"no trunk snapshot at {tmp_path / 'trunks.json'}" in r.err
    assert "no answer over AMI either" in r.err and "cannot connect" in r.err
    assert "Traceback" not in r.err


def test_no_snapshot_and_no_secret(run_cli: Run, tmp_path: Path) -> None:
    r = run_cli("trunks", "--state-dir", tmp_path, "trunk-a")
    assert r.code == 1
    assert "no trunk snapshot" in r.err and "CALLFLOW_AMI_SECRET" in r.err


def test_ami_disabled(run_cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLFLOW_AMI_ENABLED", "false")
    r = run_cli("trunks", "--live", "trunk-a")
    assert r.code == 1 and "AMI is disabled" in r.err


def test_live_without_names_takes_the_trunks_of_the_flows(
    run_cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLFLOW_AMI_SECRET", "x")
    monkeypatch.setenv("CALLFLOW_FLOWS_DIR", str(tmp_path / "missing"))
    r = run_cli("trunks", "--live")
    assert r.code == 1
    assert "cannot tell which trunks to show" in r.err and "callflow trunks TRUNK" in r.err
