from pathlib import Path

import pytest

from callflow.errors import SettingsError
from callflow.settings import load_settings, read_secret


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "callflow.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_without_a_file() -> None:
    s = load_settings(None, env={})
    assert s.ari.url == "http://127.0.0.1:8088"
    assert s.ari.app == "callflow"
    assert s.flows.dir == "dialplans"


def test_file_values_and_relative_paths(tmp_path: Path) -> None:
    p = write(tmp_path, '[ari]\nurl = "http://pbx:8088"\n[flows]\ndir = "flows"\ndefault = "x"\n')
    s = load_settings(p, env={})
    assert s.ari.url == "http://pbx:8088"
    assert s.flows.default == "x"
    assert s.resolve(s.flows.dir) == tmp_path / "flows"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    p = write(tmp_path, '[ari]\nurl = "http://pbx:8088"\nrequest_timeout = 3.0\n')
    env = {"CALLFLOW_ARI_URL": "http://other:8088", "CALLFLOW_ARI_REQUEST_TIMEOUT": "7.5"}
    s = load_settings(p, env=env)
    assert s.ari.url == "http://other:8088"
    assert s.ari.request_timeout == 7.5


def test_unknown_key_is_refused_by_name(tmp_path: Path) -> None:
    p = write(tmp_path, '[ari]\nusername = "a"\npasword = "x"\n')
    with pytest.raises(SettingsError, match="unknown key 'pasword' in \\[ari\\]"):
        load_settings(p, env={})


def test_unknown_section_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, "[asterisk]\nurl = 1\n")
    with pytest.raises(SettingsError, match=r"unknown section \[asterisk\]"):
        load_settings(p, env={})


def test_unknown_environment_setting_is_refused() -> None:
    with pytest.raises(SettingsError, match="CALLFLOW_ARI_ULR"):
        load_settings(None, env={"CALLFLOW_ARI_ULR": "x"})


def test_secret_variable_is_not_taken_for_a_setting() -> None:
    s = load_settings(None, env={"CALLFLOW_ARI_PASSWORD": "s3cret"})
    assert s.ari.password_env == "CALLFLOW_ARI_PASSWORD"


def test_wrong_type_and_bad_number(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="request_timeout"):
        load_settings(write(tmp_path, '[ari]\nrequest_timeout = "soon"\n'), env={})
    with pytest.raises(SettingsError, match="expected a number"):
        load_settings(None, env={"CALLFLOW_ARI_REQUEST_TIMEOUT": "soon"})


def test_invalid_toml_says_where(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="invalid TOML"):
        load_settings(write(tmp_path, "[ari\n"), env={})


def test_secret_from_env_or_file(tmp_path: Path) -> None:
    assert read_secret("PW", None, "ari", tmp_path, env={"PW": "abc"}) == "abc"
    (tmp_path / "pw").write_text("from-file\n")
    assert read_secret("PW", "pw", "ari", tmp_path, env={"PW": "abc"}) == "from-file"
    with pytest.raises(SettingsError, match="set the environment variable PW"):
        read_secret("PW", None, "ari", tmp_path, env={})
    with pytest.raises(SettingsError, match="cannot read secret file"):
        read_secret(None, "missing", "ari", tmp_path, env={})


def test_agi_is_off_by_default_and_checks_its_addresses(tmp_path: Path) -> None:
    s = load_settings(None, env={})
    assert not s.agi.enabled and (s.agi.host, s.agi.port) == ("127.0.0.1", 4573)
    p = write(
        tmp_path, '[agi]\nenabled = true\nlisten = "0.0.0.0:4574"\nallow = "10.0.0.0/24, ::1"\n'
    )
    s = load_settings(p, env={})
    assert s.agi.enabled and s.agi.port == 4574
    assert [str(n) for n in s.agi.networks] == ["10.0.0.0/24", "::1/128"]
    for bad, message in (
        ('allow = "10.0.0.300"', "not an address or network: '10.0.0.300'"),
        ('allow = " , "', "allow names no address"),
        ('listen = "4573"', "listen must be host:port"),
        ("command_timeout = 0.0", "must be positive"),
    ):
        with pytest.raises(SettingsError, match=message):
            load_settings(write(tmp_path, f"[agi]\n{bad}\n"), env={})


def test_cdr_settings_and_their_bad_values(tmp_path: Path) -> None:
    p = write(tmp_path, '[cdr]\nfile = "cdr/callflow-cdr.json"\npoll_interval = 0.5\n')
    s = load_settings(p, env={"CALLFLOW_CDR_SETTLE": "2"})
    assert (s.cdr.poll_interval, s.cdr.settle) == (0.5, 2.0)
    assert s.resolve(s.cdr.file) == tmp_path / "cdr" / "callflow-cdr.json"
    assert load_settings(None, env={}).cdr.file == ""  # no import unless asked
    with pytest.raises(SettingsError, match=r"\[cdr\] poll_interval must be positive"):
        load_settings(write(tmp_path, "[cdr]\npoll_interval = 0\n"), env={})


def test_ari_transport(tmp_path: Path) -> None:
    assert load_settings(None, env={}).ari.transport == "auto"
    s = load_settings(None, env={"CALLFLOW_ARI_TRANSPORT": "websocket"})
    assert s.ari.transport == "websocket"
    with pytest.raises(SettingsError, match=r"\[ari\] transport must be"):
        load_settings(write(tmp_path, '[ari]\ntransport = "pigeon"\n'), env={})


def test_the_events_heartbeat_defaults_to_five_seconds_and_stays_within_1_to_300(
    tmp_path: Path,
) -> None:
    assert load_settings(None, env={}).ari.heartbeat == 5.0
    assert load_settings(write(tmp_path, "[ari]\nheartbeat = 2.5\n"), env={}).ari.heartbeat == 2.5
    for bad in ("0", "0.5", "-1", "301"):
        with pytest.raises(SettingsError, match=r"\[ari\] heartbeat must be between 1 and 300"):
            load_settings(write(tmp_path, f"[ari]\nheartbeat = {bad}\n"), env={})


def test_the_shipped_file_sets_the_heartbeat_the_daemon_defaults_to() -> None:
    shipped = Path(__file__).resolve().parents[2] / "callflow.toml"
    assert load_settings(shipped, env={}).ari.heartbeat == load_settings(None, env={}).ari.heartbeat
