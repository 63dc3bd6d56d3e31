"""callflow as an admin installs it: the wheel, in a clean virtualenv outside the checkout,
creates its database, checks its settings and flows, and carries a real call.

``scripts/wheel-check`` builds the wheel and the virtualenv (it needs the package index for
the dependencies); ``CALLFLOW_TEST_VENV`` names one already made by it (e.g. outside the
network namespace the integration tests run in)."""

from __future__ import annotations

import os
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Bench, Daemon

REPO = Path(__file__).resolve().parents[2]
FLOWS = Path(__file__).resolve().parent / "flows"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("CALLFLOW_TEST_VENV")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run(
        [REPO / "scripts" / "wheel-check", out], capture_output=True, text=True, timeout=1800
    )
    assert r.returncode == 0, r.stderr[-4000:]
    return Path(r.stdout.strip().splitlines()[-1])


@pytest.fixture
def installed(tmp_path: Path, venv: Path, asterisk: None) -> Iterator[Daemon]:
    flows = tmp_path / "flows"
    flows.mkdir()
    for f in FLOWS.glob("*.yaml"):
        (flows / f.name).write_text(f.read_text())
    work = tmp_path / "etc"  # outside the checkout: nothing of it can be imported
    d = Daemon(work, flows, command=[str(venv / "bin" / "callflow")])
    yield d
    if d.proc is not None:
        d.stop()


def test_the_wheel_holds_the_migrations_and_the_page(venv: Path) -> None:
    [wheel] = list((venv.parent / "dist").glob("callflow_pbx-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    package = REPO / "callflow"
    needed = {
        str(p.relative_to(REPO))
        for pattern in ("store/migrations/**/*.py", "api/static/*", "api/locales/*.json")
        for p in package.glob(pattern)
        if "__pycache__" not in p.parts
    }
    assert "callflow/store/migrations/env.py" in needed
    assert "callflow/api/static/index.html" in needed
    assert needed <= names, sorted(needed - names)


def test_the_installed_callflow_runs_from_its_virtualenv(venv: Path, tmp_path: Path) -> None:
    python = venv / "bin" / "python"
    r = subprocess.run(
        [python, "-c", "import callflow; print(callflow.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert r.stdout.strip().startswith(str(venv)) and str(REPO) not in r.stdout
    r = subprocess.run([venv / "bin" / "callflow", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("callflow 0.")


def test_db_upgrade_check_and_a_real_call_from_the_wheel(installed: Daemon, bench: Bench) -> None:
    d = installed
    r = d.cli("db", "upgrade")
    assert "schema upgraded from nothing to" in r.stdout, r.stderr
    assert d.db_path.is_file()
    r = d.cli("check", check=False)
    assert r.returncode == 0, r.stderr
    assert f"settings OK: {d.config}" in r.stdout and "OK: " in r.stdout.splitlines()[-1]
    d.start()
    accueil = bench.peer("accueil", "uas-answer.xml", hangup_ms="1500")
    patient = bench.patient("100", digits="1", wait_ms="1500", hold_ms="8000")
    assert accueil.wait(40) == 0, accueil.log()
    assert patient.wait(40) == 0, patient.log()
    out = d.wait_outcome()
    assert (out["flow"], out["outcome"], out["destination"]) == ("bench", "answered", "secretariat")
    assert d.stop() == 0, d.log()[-3000:]
    assert "Traceback" not in d.log()
    assert d.query("SELECT outcome FROM calls") == [("answered",)]
