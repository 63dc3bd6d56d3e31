"""docker/prometheus/rules: the forwarding drills' alerts pass promtool, and its unit tests
(``docker/prometheus/tests``) say they fire when they should and only then; every metric
they read is one the daemon exports."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parents[2] / "docker"
RULES = DOCKER / "prometheus" / "rules" / "drills.yml"
TESTS = DOCKER / "prometheus" / "tests" / "drills.test.yml"


def tool(name: str, install: str) -> str:
    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(f"{name} is missing in CI: {install}")
        pytest.skip(f"{name} not installed ({install})")
    return found


def _promtool(*args: str) -> None:
    promtool = tool("promtool", "apt-get install prometheus")
    proc = subprocess.run([promtool, *args], capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode()


def test_promtool_accepts_the_drill_rules() -> None:
    _promtool("check", "rules", str(RULES))


def test_the_drill_alerts_fire_when_they_should() -> None:
    _promtool("test", "rules", str(TESTS))


def test_the_rules_read_metrics_the_daemon_exports() -> None:
    source = (DOCKER.parent / "callflow" / "metrics" / "drill_gauges.py").read_text()
    used = set(re.findall(r"callflow_[a-z_]+", RULES.read_text()))
    assert used and all(f'"{name}"' in source for name in used), used
