"""Installed like real software: the distribution's name and version, where the settings
are found, and admin commands that never create a database by accident."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest
from conftest import CliResult, as_nobody

from callflow import settings as settings_module
from callflow.errors import SettingsError
from callflow.settings import CONFIG_ENV, config_candidates, discover_settings, find_config

Run = Callable[..., CliResult]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_callflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("CALLFLOW_"):
            monkeypatch.delenv(var)


def test_the_distribution_is_callflow_pbx_and_says_its_version(run_cli: Run) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == "callflow-pbx"  # "callflow" on the index is someone else's
    with pytest.raises(SystemExit) as exit_:
        run_cli("--version")
    assert exit_.value.code == 0


def test_version_comes_from_the_installed_metadata(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from callflow.cli import main

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"callflow {version('callflow-pbx')}"


def test_the_help_lists_the_commands_that_exist(capsys: pytest.CaptureFixture[str]) -> None:
    from callflow.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "later" not in text
    for command in ("run", "check", "db", "report", "export", "callbacks", "trunks"):
        assert command in text


# -- where the settings are found -------------------------------------------------------


def test_config_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "etc" / "callflow.toml"
    local = tmp_path / "checkout" / "callflow.toml"
    from_env = tmp_path / "env.toml"
    explicit = tmp_path / "explicit.toml"
    for p in (system, local, from_env, explicit):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("")
    monkeypatch.setattr(settings_module, "SYSTEM_CONFIG", system)
    monkeypatch.chdir(local.parent)
    env = {CONFIG_ENV: str(from_env)}
    assert find_config(explicit, env) == explicit
    assert find_config(None, env) == from_env
    assert find_config(None, {}) == system
    system.unlink()
    assert find_config(None, {}) == Path("callflow.toml")  # the checkout, for development
    local.unlink()
    assert find_config(None, {}) is None
    assert [why for why, _ in config_candidates(None, {})] == ["system", "current directory"]


def test_a_named_file_that_is_missing_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"nope.toml \(from --config\): no such"):
        find_config(tmp_path / "nope.toml", {})
    with pytest.raises(SettingsError, match=rf"\(from \${CONFIG_ENV}\): no such"):
        find_config(None, {CONFIG_ENV: str(tmp_path / "nope.toml")})


def test_the_daemon_needs_a_settings_file(
    run_cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings_module, "SYSTEM_CONFIG", tmp_path / "none.toml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError, match="no settings file"):
        discover_settings(None, {}, required=True)
    r = run_cli("run")
    assert r.code == 1 and "no settings file: looked for" in r.err


def test_the_environment_names_the_file(
    run_cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "elsewhere.toml"
    cfg.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n')
    monkeypatch.setenv(CONFIG_ENV, str(cfg))
    monkeypatch.chdir(tmp_path)
    r = run_cli("db", "upgrade")
    assert r.code == 0, r.err
    assert (tmp_path / "state" / "callflow.db").is_file()


# -- admin commands never create a database ----------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> Path:
    p = tmp_path / "callflow.toml"
    p.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n')
    return p


@pytest.mark.parametrize(
    "argv",
    [
        ("report", "--from", "2026-01-01", "--to", "2026-01-31"),
        ("export", "--caller", "0612345678"),
        ("callbacks", "list"),
        ("callbacks", "done", "1"),
        ("db", "purge"),
        ("db", "current"),
    ],
)
def test_admin_commands_never_create_the_database(
    run_cli: Run, config: Path, argv: tuple[str, ...]
) -> None:
    r = run_cli(*argv, "--config", config)
    db_file = config.parent / "state" / "callflow.db"
    assert r.code == 1
    assert f"no call log at {db_file} (settings: {config})" in r.err
    assert "callflow db upgrade" in r.err
    assert not db_file.exists() and not db_file.parent.exists()


def test_callbacks_on_a_database_without_schema_say_so(run_cli: Run, config: Path) -> None:
    db_file = config.parent / "state" / "callflow.db"
    db_file.parent.mkdir()
    db_file.write_bytes(b"")  # an empty SQLite file: no table at all
    r = run_cli("callbacks", "list", "--config", config)
    assert r.code == 1
    assert "no such table" not in r.err
    assert "database schema is at nothing (empty database)" in r.err
    assert "run `callflow db upgrade`" in r.err


# -- callflow check --config -------------------------------------------------------------

FLOW = (REPO / "dialplans" / "cabinet-du-parc.yaml").read_text()


def test_check_validates_the_settings_and_their_flows(run_cli: Run, tmp_path: Path) -> None:
    (tmp_path / "dialplans").mkdir()
    (tmp_path / "dialplans" / "cabinet-du-parc.yaml").write_text(FLOW)
    cfg = tmp_path / "callflow.toml"
    cfg.write_text('[flows]\ndir = "dialplans"\ndefault = "cabinet-du-parc"\n')
    r = run_cli("check", "--config", cfg)
    assert r.code == 0, r.err
    assert f"settings OK: {cfg} (data in /var/lib/callflow)" in r.out
    assert "1 file OK: cabinet-du-parc" in r.out


def _checked(run_cli: Run, folder: Path, cdr: str | None) -> CliResult:
    (folder / "dialplans").mkdir(exist_ok=True)
    (folder / "dialplans" / "cabinet-du-parc.yaml").write_text(FLOW)
    cfg = folder / "callflow.toml"
    cdr_part = "" if cdr is None else f'[cdr]\nfile = "{cdr}"\n'
    cfg.write_text('[flows]\ndir = "dialplans"\n' + cdr_part)
    return run_cli("check", "--config", cfg)


def test_check_says_what_the_daemon_will_read_of_asterisks_cdrs(
    run_cli: Run, tmp_path: Path
) -> None:
    r = _checked(run_cli, tmp_path, None)
    assert r.code == 0, r.err
    assert "CDR: none ([cdr] file): the calls the dialplan fallback takes" in r.out
    r = _checked(run_cli, tmp_path, "cdr/callflow-cdr.json")
    assert r.code == 1  # no folder: no Asterisk here, or asterisk-conf not joined
    assert f"[cdr] file: {tmp_path / 'cdr'}: no such folder (is Asterisk" in r.err
    (tmp_path / "cdr").mkdir()
    r = _checked(run_cli, tmp_path, "cdr/callflow-cdr.json")
    assert r.code == 0, r.err
    assert f"CDR: {tmp_path / 'cdr/callflow-cdr.json'} (not written yet" in r.out
    (tmp_path / "cdr/callflow-cdr.json").write_text("")
    r = _checked(run_cli, tmp_path, "cdr/callflow-cdr.json")
    assert r.code == 0, r.err
    assert f"CDR: {tmp_path / 'cdr/callflow-cdr.json'}\n" in r.out  # pytest's: owner-only
    r = _checked(run_cli, tmp_path, "cdr")
    assert r.code == 1
    assert f"[cdr] file: {tmp_path / 'cdr'}: not a file" in r.err


def test_check_warns_of_a_cdr_file_every_user_may_read(run_cli: Run, readable_folder: Path) -> None:
    folder = readable_folder
    (folder / "cdr").mkdir()
    (folder / "cdr").chmod(0o755)  # the CLI's umask (077) is the process's since
    (folder / "cdr/callflow-cdr.json").write_text("")
    (folder / "cdr/callflow-cdr.json").chmod(0o644)
    r = _checked(run_cli, folder, "cdr/callflow-cdr.json")
    assert r.code == 0, r.err
    assert f"every user of this machine can read it: chmod 750 {folder / 'cdr'})" in r.out


@pytest.mark.parametrize("closed", ["file", "folder"])
def test_check_run_as_a_user_who_cannot_read_the_cdr_file_fails(
    closed: str, readable_folder: Path
) -> None:
    """The daemon's user out of Asterisk's group: its check says so, whether the file is
    Asterisk's group's or its folder is (README's 750).  Root reads any file, so the check
    runs as nobody, as README says to run it as the daemon's user."""
    folder = readable_folder
    (folder / "dialplans").mkdir()
    (folder / "dialplans").chmod(0o755)
    (folder / "dialplans" / "cabinet-du-parc.yaml").write_text(FLOW)
    (folder / "dialplans" / "cabinet-du-parc.yaml").chmod(0o644)
    (folder / "cdr-custom").mkdir()
    cdr = folder / "cdr-custom" / "callflow-cdr.json"
    cdr.write_text("")
    root = os.geteuid() == 0
    if closed == "file":
        (folder / "cdr-custom").chmod(0o755)
        cdr.chmod(0o640 if root else 0o000)
    else:
        cdr.chmod(0o640)
        (folder / "cdr-custom").chmod(0o750 if root else 0o000)
    cfg = folder / "callflow.toml"
    cfg.write_text(f'[flows]\ndir = "dialplans"\n[cdr]\nfile = "{cdr}"\n')
    cfg.chmod(0o644)
    main = "import sys; from callflow.cli import main; sys.exit(main())"
    env = {**os.environ, "HOME": str(folder)}
    try:
        proc = subprocess.run(
            as_nobody([sys.executable, "-c", main, "check", "--config", str(cfg)]),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=env,
            cwd=folder,
        )
    finally:
        (folder / "cdr-custom").chmod(0o755)  # removable again by a user who is not root
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"[cdr] file: {cdr}: Permission denied" in proc.stderr
    assert "usermod -a -G asterisk callflow" in proc.stderr


def test_check_reports_every_settings_problem(run_cli: Run, tmp_path: Path) -> None:
    cfg = tmp_path / "callflow.toml"
    cfg.write_text(
        '[http]\ntoken_file = "missing-tokens"\n'
        '[privacy]\ncaller_numbers = "pseudonymised"\nkey_file = "missing.key"\n'
        '[database]\nurl = "mysql://x@y/z"\n'
    )
    r = run_cli("check", "--config", cfg, REPO / "dialplans")
    assert r.code == 1
    assert "missing-tokens: cannot read" in r.err
    assert "[privacy] key_file: cannot read" in r.err
    assert "[database] url" in r.err
    assert "settings OK" not in r.out


def test_check_refuses_a_default_flow_that_does_not_exist(run_cli: Run, tmp_path: Path) -> None:
    (tmp_path / "dialplans").mkdir()
    (tmp_path / "dialplans" / "cabinet-du-parc.yaml").write_text(FLOW)
    cfg = tmp_path / "callflow.toml"
    cfg.write_text('[flows]\ndir = "dialplans"\ndefault = "cabinet-du-pac"\n')
    r = run_cli("check", "--config", cfg)
    assert r.code == 1
    assert "[flows] default = 'cabinet-du-pac' is not a flow (flows: cabinet-du-parc)" in r.err


def test_check_refuses_an_unknown_setting(run_cli: Run, tmp_path: Path) -> None:
    cfg = tmp_path / "callflow.toml"
    cfg.write_text('[daemon]\nlanguage = "de"\n')
    r = run_cli("check", "--config", cfg, REPO / "dialplans")
    assert r.code == 1 and "[daemon] language must be one of fr, en" in r.err
