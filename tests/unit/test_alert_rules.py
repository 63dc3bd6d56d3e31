"""docker/prometheus/rules: the alerts (forwarding drills, the call log's completeness, the
PBX's voicemail) pass promtool, and its unit tests (``docker/prometheus/tests``) say they fire
when they should and only then; every metric they read is one the daemon exports."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parents[2] / "docker"
RULES = sorted((DOCKER / "prometheus" / "rules").glob("*.yml"))
METRICS = DOCKER.parent / "callflow" / "metrics"


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


def test_every_rules_file_has_its_tests() -> None:
    assert [r.stem for r in RULES] == ["call-log", "drills", "pbx"]
    for rules in RULES:
        assert _tests(rules).is_file(), rules


def _tests(rules: Path) -> Path:
    return DOCKER / "prometheus" / "tests" / f"{rules.stem}.test.yml"


@pytest.mark.parametrize("rules", RULES, ids=lambda r: r.stem)
def test_promtool_accepts_the_rules(rules: Path) -> None:
    _promtool("check", "rules", str(rules))


@pytest.mark.parametrize("rules", RULES, ids=lambda r: r.stem)
def test_the_alerts_fire_when_they_should(rules: Path) -> None:
    _promtool("test", "rules", str(_tests(rules)))


@pytest.mark.parametrize("rules", RULES, ids=lambda r: r.stem)
def test_the_rules_read_metrics_the_daemon_exports(rules: Path) -> None:
    source = "".join(f.read_text() for f in sorted(METRICS.glob("*.py")))
    used = set(re.findall(r"callflow_[a-z_]+", rules.read_text()))
    # A counter is exported under its name without _total (prometheus_client adds it).
    named = {u.removesuffix("_total") for u in used}
    assert named and all(f'"{name}"' in source for name in named), named - {
        n for n in named if f'"{n}"' in source
    }
