"""Shared helpers of the flow-language unit tests (loader, check, engine, simulate)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from callflow.cli import main
from tests.support import flows

REPO = Path(__file__).resolve().parents[2]
DIALPLAN = REPO / "dialplans" / "cabinet-du-parc.yaml"
FLOWS = Path(__file__).resolve().parent / "flows"


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


@pytest.fixture
def write_flow(tmp_path: Path) -> Callable[..., Path]:
    """Write dedented YAML to ``tmp_path/<name>`` (default ``flow.yaml``) and return the path."""

    def write(text: str, name: str = "flow.yaml") -> Path:
        return flows.write_flow(tmp_path, text, name)

    return write


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``callflow.cli.main`` in-process; return its exit code, stdout and stderr."""

    def run(*argv: str | Path) -> CliResult:
        capsys.readouterr()  # drop anything printed before
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
