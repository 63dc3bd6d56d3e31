"""Shared helpers of the flow-language unit tests (loader, check, engine, simulate)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
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


@pytest.fixture
def readable_folder() -> Iterator[Path]:
    """A folder every user may cross (pytest's own are their owner's only), for what a
    test runs as another user."""
    folder = Path(tempfile.mkdtemp(dir="/tmp"))  # /tmp: crossed by every user
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def as_nobody(cmd: list[str]) -> list[str]:
    """``cmd`` run as nobody when the tests run as root (root reads every file), as is
    otherwise: the caller closes its files to itself (mode 000) instead."""
    if os.geteuid() != 0:
        return cmd
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
