"""The [ami] settings section and the AmiConfig built from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from callflow.ami import AmiConfig
from callflow.errors import SettingsError
from callflow.settings import load_settings, read_secret


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "callflow.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults() -> None:
    s = load_settings(None, env={})
    assert (s.ami.enabled, s.ami.host, s.ami.port, s.ami.username) == (
        True,
        "127.0.0.1",
        5038,
        "callflow",
    )
    assert (s.ami.secret_env, s.ami.secret_file, s.ami.action_timeout) == (
        "CALLFLOW_AMI_SECRET",
        None,
        5.0,
    )
    assert s.daemon.state_dir == "/var/lib/callflow"


def test_file_and_environment(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        '[ami]\nenabled = false\nhost = "pbx"\nport = 5039\nsecret_file = "ami.secret"\n'
        '[daemon]\nstate_dir = "/run/callflow"\n',
    )
    s = load_settings(p, env={"CALLFLOW_AMI_ENABLED": "yes", "CALLFLOW_AMI_ACTION_TIMEOUT": "2"})
    assert s.ami.enabled is True and s.ami.host == "pbx" and s.ami.port == 5039
    assert s.ami.action_timeout == 2.0
    assert s.daemon.state_dir == "/run/callflow"
    (tmp_path / "ami.secret").write_text("s3cret\n")
    secret = read_secret(s.ami.secret_env, s.ami.secret_file, "[ami] secret", s.base_dir, env={})
    cfg = AmiConfig.from_settings(s.ami, secret)
    assert (cfg.host, cfg.port, cfg.secret, cfg.action_timeout) == ("pbx", 5039, "s3cret", 2.0)
    assert "s3cret" not in repr(cfg)


def test_secret_variable_is_not_taken_for_a_setting() -> None:
    s = load_settings(None, env={"CALLFLOW_AMI_SECRET": "s3cret"})
    assert s.ami.secret_env == "CALLFLOW_AMI_SECRET"


@pytest.mark.parametrize(
    ("text", "env", "match"),
    [
        ('[ami]\nenabled = "maybe"\n', {}, r"\[ami\] enabled: expected true or false"),
        ("", {"CALLFLOW_AMI_ENABLED": "maybe"}, "expected true or false"),
        ('[ami]\nport = "5038"\n', {}, r"\[ami\] port"),
        ("[ami]\nsecret = 'x'\n", {}, "unknown key 'secret' in \\[ami\\]"),
    ],
)
def test_bad_values_are_refused_by_name(
    tmp_path: Path, text: str, env: dict[str, str], match: str
) -> None:
    with pytest.raises(SettingsError, match=match):
        load_settings(write(tmp_path, text), env=env)
