"""``callflow drill``: which daemon and which token it uses, and what it says when the
daemon is not there."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from callflow.api.drill_cli import _token, _url
from callflow.errors import UserError
from callflow.settings import load_settings

RunCli = Callable[..., Any]  # the fixture of conftest.py


def settings_with(tmp_path: Path, tokens: str, http: str = "") -> Path:
    (tmp_path / "api-tokens").write_text(tokens)
    (tmp_path / "api-tokens").chmod(0o600)
    config = tmp_path / "callflow.toml"
    config.write_text(f'[http]\ntoken_file = "api-tokens"\n{http}')
    return config


def test_the_first_admin_token_of_the_token_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CALLFLOW_API_TOKEN", raising=False)
    config = settings_with(tmp_path, "# tokens\nstaff:secretariat:tok-staff\nboss:admin:tok-boss\n")
    assert _token(load_settings(config, {})) == "tok-boss"
    config = settings_with(tmp_path, "cron:tok-cron\n")  # name:token is an admin's
    assert _token(load_settings(config, {})) == "tok-cron"
    monkeypatch.setenv("CALLFLOW_API_TOKEN", "tok-env")
    assert _token(load_settings(config, {})) == "tok-env"
    monkeypatch.delenv("CALLFLOW_API_TOKEN")
    config = settings_with(tmp_path, "staff:secretariat:tok-staff\n")
    with pytest.raises(UserError, match="no admin token"):
        _token(load_settings(config, {}))


def test_the_daemon_url_from_the_settings(tmp_path: Path) -> None:
    config = settings_with(tmp_path, "x:tok\n", 'listen = "127.0.0.1:9099"\n')
    assert _url(load_settings(config, {}), None) == "http://127.0.0.1:9099"
    assert _url(load_settings(config, {}), "http://pbx:1/") == "http://pbx:1"


def test_no_daemon_listening_is_said_plainly(run_cli: RunCli, tmp_path: Path) -> None:
    with socket.socket() as s:  # bound, never listening: every connection is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        config = settings_with(tmp_path, "x:tok\n", f'listen = "127.0.0.1:{port}"\n')
        r = run_cli("drill", "cabinet", "--config", str(config))
    assert r.code == 1
    assert f"cannot reach the daemon at http://127.0.0.1:{port}" in r.err
