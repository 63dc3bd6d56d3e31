"""packaging/callflow.service: systemd accepts it, and it says what the issue asks."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from callflow.cli import _parser
from callflow.settings import STATE_DIR, DaemonSettings

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "packaging" / "callflow.service"


def service_keys() -> dict[str, str]:
    keys: dict[str, str] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith("#") and section == "Service":
            key, _, value = line.partition("=")
            keys[key] = value
    return keys


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is missing (apt-get install systemd)")
    # verify checks that ExecStart exists: point it at this checkout's callflow.
    installed = Path(sys.executable).parent / "callflow"
    text = UNIT.read_text().replace("/opt/callflow/bin/callflow", str(installed))
    assert text != UNIT.read_text()
    unit = tmp_path / "callflow.service"
    unit.write_text(text)
    r = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    # systemd only warns about an unknown key or a bad value: any word from it is a fault.
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


def test_the_unit_is_notify_watched_restarted_and_hardened() -> None:
    keys = service_keys()
    assert keys["Type"] == "notify"
    assert keys["Restart"] == "always"
    assert keys["WatchdogSec"].endswith("s") and int(keys["WatchdogSec"][:-1]) >= 10
    assert keys["User"] == "callflow"
    assert keys["StateDirectory"] == "callflow" and STATE_DIR == "/var/lib/callflow"
    assert keys["ReadWritePaths"] == STATE_DIR
    for key, value in {
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
    }.items():
        assert keys[key] == value, key
    # systemd must let calls finish ([daemon] stop_grace) before it kills.
    assert int(keys["TimeoutStopSec"][:-1]) > DaemonSettings().stop_grace


def test_execstart_is_a_callflow_command() -> None:
    argv = shlex.split(service_keys()["ExecStart"])
    assert argv[0].endswith("/callflow")
    args = _parser().parse_args(argv[1:])
    assert args.command == "run" and args.config == Path("/etc/callflow/callflow.toml")
