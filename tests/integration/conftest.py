"""Fixtures of the real-call bench: a real Asterisk 22 (the sandbox), SIPp, the daemon."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import Bench, Daemon, ari_up, channels, sandbox, wait_until

FLOWS = Path(__file__).resolve().parent / "flows"
# Rows of the fault matrix (test_crash.py): fault, placed, served, logged, without outcome,
# duplicated; printed as a table at the end of the run.
FAULT_MATRIX = pytest.StashKey[list[tuple[str, int, int, int, int, int]]]()
MATRIX_HEADER = ("fault", "placed", "served", "logged", "without outcome", "duplicated")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows: list[tuple[object, ...]] = [MATRIX_HEADER, *config.stash.get(FAULT_MATRIX, [])]
    if len(rows) == 1:
        return
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(MATRIX_HEADER))]
    lines = [
        "| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)) + " |"
        for r in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    terminalreporter.write_sep("=", "fault matrix")
    for line in lines:
        terminalreporter.write_line(line)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def asterisk() -> None:
    """A running sandbox Asterisk with the bench's configuration (installed and started if
    needed; restarted only when the configuration changed)."""
    sandbox("up")
    wait_until(ari_up, 60, "Asterisk's ARI")


@pytest.fixture
def flows_dir(tmp_path: Path) -> Path:
    d = tmp_path / "flows"
    shutil.copytree(FLOWS, d)
    return d


@pytest.fixture
def bench(tmp_path: Path, asterisk: None) -> Iterator[Bench]:
    b = Bench(tmp_path)
    yield b
    b.close()
    # Leave no channel behind for the next test.
    try:
        wait_until(lambda: not channels(), 15, "every channel to be gone")
    except AssertionError:
        for c in channels():
            try:
                from .harness import ari

                ari("DELETE", f"/channels/{c['id']}")
            except OSError:
                pass
        raise


@pytest.fixture
def daemon(tmp_path: Path, flows_dir: Path, asterisk: None) -> Iterator[Daemon]:
    d = Daemon(tmp_path, flows_dir)
    d.start()
    yield d
    code = d.stop()  # the process has exited: its log is complete
    log = d.log()
    assert "Traceback" not in log, log[-4000:]
    assert code == 0, f"daemon exit code {code}\n{log[-3000:]}"
