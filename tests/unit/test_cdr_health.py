"""The daemon reports whether it can read Asterisk's CDR file: in /healthz's checks and in
``callflow_cdr_readable``, only when ``[cdr] file`` is set."""

from __future__ import annotations

from pathlib import Path

from callflow.app import Daemon
from callflow.settings import (
    AriSettings,
    CdrSettings,
    DaemonSettings,
    FlowsSettings,
    HttpSettings,
    Settings,
)

REPO = Path(__file__).resolve().parents[2]


def _daemon(tmp_path: Path, cdr_file: str) -> Daemon:
    settings = Settings(
        ari=AriSettings(password_env="TEST_ARI"),
        flows=FlowsSettings(dir=str(REPO / "dialplans")),
        daemon=DaemonSettings(state_dir=str(tmp_path)),
        http=HttpSettings(enabled=False),
        cdr=CdrSettings(file=cdr_file),
        base_dir=tmp_path,
    )
    return Daemon(settings, {"TEST_ARI": "x", "CALLFLOW_AMI_SECRET": "y"})


def _readable_metric(daemon: Daemon) -> list[str]:
    text = daemon.metrics.render().decode()
    return [line for line in text.splitlines() if line.startswith("callflow_cdr_readable ")]


def test_a_cdr_file_the_daemon_cannot_read_shows_in_its_health_and_metrics(
    tmp_path: Path,
) -> None:
    daemon = _daemon(tmp_path, "cdr")
    cdr = daemon.after_crash.cdr_file
    assert cdr is not None
    assert daemon._checks()["cdr"]() is True  # not read yet, not written yet: no fault
    assert _readable_metric(daemon) == ["callflow_cdr_readable 1.0"]
    (tmp_path / "cdr").mkdir()  # a path that cannot be read as a file
    cdr.read_new()
    assert daemon._checks()["cdr"]() is False
    assert _readable_metric(daemon) == ["callflow_cdr_readable 0.0"]
    (tmp_path / "cdr").rmdir()
    (tmp_path / "cdr").write_text("")
    cdr.read_new()
    assert daemon._checks()["cdr"]() is True
    assert _readable_metric(daemon) == ["callflow_cdr_readable 1.0"]


def test_without_a_cdr_file_there_is_nothing_to_report(tmp_path: Path) -> None:
    daemon = _daemon(tmp_path, "")
    assert daemon.after_crash.cdr_file is None
    assert set(daemon._checks()) == {"database", "ami", "voicemail"}  # no "cdr"
    assert _readable_metric(daemon) == []
