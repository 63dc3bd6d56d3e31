"""[database] and [privacy] settings, the database URL and its password, the HMAC key."""

from __future__ import annotations

import hashlib
import hmac
import socket
from pathlib import Path

import pytest

from callflow.errors import SettingsError
from callflow.settings import load_settings
from callflow.store.db import database_url
from callflow.store.privacy import CallerPrivacy, e164, normalise


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "callflow.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, ""), env={})
    assert s.database.url == "sqlite+aiosqlite:///callflow.db"
    assert s.database.spool_dir == "spool"
    assert (s.database.batch_size, s.database.flush_interval) == (500, 1.0)
    assert s.privacy.caller_numbers == "clear" and s.privacy.retention_days == 365
    # A system install: the data under /var/lib/callflow, never beside the settings file.
    url = database_url(s, env={})
    assert url.database == "/var/lib/callflow/callflow.db"
    assert s.state_path(s.database.spool_dir) == Path("/var/lib/callflow/spool")


def test_data_paths_are_relative_to_the_state_dir(tmp_path: Path) -> None:
    etc = tmp_path / "etc" / "callflow"
    etc.mkdir(parents=True)
    text = (
        f'[daemon]\nstate_dir = "{tmp_path / "lib"}"\n[flows]\ndir = "dialplans"\n'
        '[database]\nurl = "sqlite+aiosqlite:///calls.db"\nspool_dir = "journal"\n'
    )
    s = load_settings(write(etc, text), env={})
    assert database_url(s, env={}).database == str(tmp_path / "lib" / "calls.db")
    assert s.state_path(s.database.spool_dir) == tmp_path / "lib" / "journal"
    assert s.resolve(s.flows.dir) == etc / "dialplans"  # configuration stays beside the file
    # A relative state_dir is relative to the settings file (a checkout's ./var).
    s = load_settings(write(etc, '[daemon]\nstate_dir = "var"\n'), env={})
    assert database_url(s, env={}).database == str((etc / "var" / "callflow.db").absolute())


def test_file_and_environment(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        '[database]\nurl = "postgresql+asyncpg://callflow@db.example:5432/calls"\n'
        "batch_size = 200\nflush_interval = 0.5\n"
        '[privacy]\ncaller_numbers = "pseudonymised"\nkey_file = "hmac.key"\n'
        "retention_days = 90\n",
    )
    env = {"CALLFLOW_DATABASE_BATCH_SIZE": "50", "CALLFLOW_PRIVACY_RETENTION_DAYS": "30"}
    s = load_settings(p, env=env)
    assert s.database.batch_size == 50 and s.database.flush_interval == 0.5
    assert s.privacy.caller_numbers == "pseudonymised" and s.privacy.retention_days == 30
    assert s.privacy.key_file == "hmac.key"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[privacy]\ncaller_numbers = "hashed"\n', "must be 'clear' or 'pseudonymised'"),
        ("[privacy]\nretention_days = 0\n", "retention_days must be at least 1"),
        ("[database]\nbatch_size = 0\n", "batch_size and memory_limit must be at least 1"),
        ("[database]\nflush_interval = 0\n", "must be positive"),
        ('[database]\npassword = "x"\n', "unknown key 'password' in \\[database\\]"),
    ],
)
def test_invalid_settings(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(write(tmp_path, text), env={})


def test_a_password_in_the_url_is_refused(tmp_path: Path) -> None:
    s = load_settings(
        write(tmp_path, '[database]\nurl = "postgresql+asyncpg://callflow:secret@db/calls"\n'),
        env={},
    )
    with pytest.raises(SettingsError, match="a password does not belong in the URL"):
        database_url(s, env={})


def test_the_password_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    p = write(tmp_path, '[database]\nurl = "postgresql+asyncpg://callflow@db:5432/calls"\n')
    env = {"CALLFLOW_DATABASE_PASSWORD": "s3cret"}
    s = load_settings(p, env=env)  # the secret variable is not taken for a setting
    url = database_url(s, env=env)
    assert url.password == "s3cret" and url.username == "callflow" and url.host == "db"
    assert "s3cret" not in url.render_as_string(hide_password=True)
    assert database_url(s, env={}).password is None  # trust / .pgpass
    (tmp_path / "db.pw").write_text("from-file\n", encoding="utf-8")
    p = write(
        tmp_path,
        '[database]\nurl = "postgresql+asyncpg://callflow@db/calls"\npassword_file = "db.pw"\n',
    )
    assert database_url(load_settings(p, env={}), env=env).password == "from-file"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///x.db", "use sqlite\\+aiosqlite"),
        ("postgresql://u@db/x", "use postgresql\\+asyncpg"),
        ("not a url", "not a database URL"),
    ],
)
def test_wrong_drivers(tmp_path: Path, url: str, message: str) -> None:
    s = load_settings(write(tmp_path, f'[database]\nurl = "{url}"\n'), env={})
    with pytest.raises(SettingsError, match=message):
        database_url(s, env={})


# -- privacy ------------------------------------------------------------------------------


def test_clear_numbers_are_normalised() -> None:
    assert normalise("06 12-34.56 (78)") == "0612345678"
    assert CallerPrivacy().protect("+33 6 12 34 56 78") == "+33612345678"
    assert not CallerPrivacy().pseudonymised


def test_pseudonymised_is_a_keyed_hmac_of_the_e164_number_with_its_key_id() -> None:
    key = b"0123456789abcdef0123456789abcdef"
    p = CallerPrivacy(key)
    value = p.protect("06 12 34 56 78")
    digest = hmac.new(key, b"+33612345678", hashlib.sha256).hexdigest()
    kid = hashlib.sha256(key).hexdigest()[:8]
    assert value == f"hmac:{kid}:{digest}"
    assert hashlib.sha256(b"0612345678").hexdigest() not in value
    assert hashlib.sha256(b"+33612345678").hexdigest() not in value
    # One patient, one pseudonym, whatever form the number came in.
    for form in ("0612345678", "+33612345678", "0033 6 12 34 56 78", "+33 6.12.34.56.78"):
        assert p.protect(form) == value, form
    assert p.protect("0612345679") != value
    other = CallerPrivacy(b"another key, another controller!")
    assert other.protect("0612345678") != value
    assert other.protect("0612345678").split(":")[1] != kid


def test_e164_canonical_forms() -> None:
    assert e164("01 23 45 67 89") == "+33123456789"
    assert e164("0044 20 7946 0000") == "+442079460000"
    assert e164("+1 (415) 555-0100") == "+14155550100"
    for kept in ("3624", "anonymous", "", "123"):
        assert e164(kept) == kept


def test_old_pseudonyms_stay_findable_after_a_key_rotation() -> None:
    old, new = b"o" * 32, b"n" * 32
    before = CallerPrivacy(old).protect("0612345678")
    legacy = "hmac:" + hmac.new(old, b"0612345678", hashlib.sha256).hexdigest()  # first scheme
    rotated = CallerPrivacy(new, old_keys=(old,))
    assert rotated.protect("0612345678") != before
    forms = rotated.stored_forms("06 12 34 56 78")
    assert {before, legacy, rotated.protect("0612345678")} <= forms
    assert CallerPrivacy(new).stored_forms("0612345678").isdisjoint({before, legacy})


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "hmac.key"
    key.write_bytes(b"k" * 32)
    key.chmod(0o640)
    p = write(tmp_path, '[privacy]\ncaller_numbers = "pseudonymised"\nkey_file = "hmac.key"\n')
    with pytest.raises(SettingsError, match="readable by others: chmod 600"):
        CallerPrivacy.from_settings(load_settings(p, env={}))
    key.chmod(0o600)
    assert CallerPrivacy.from_settings(load_settings(p, env={})).pseudonymised


def test_pseudonymised_needs_a_key_file(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, '[privacy]\ncaller_numbers = "pseudonymised"\n'), env={})
    with pytest.raises(SettingsError, match="needs key_file"):
        CallerPrivacy.from_settings(s)
    p = write(tmp_path, '[privacy]\ncaller_numbers = "pseudonymised"\nkey_file = "missing.key"\n')
    with pytest.raises(SettingsError, match=r"cannot read .*missing\.key"):
        CallerPrivacy.from_settings(load_settings(p, env={}))
    (tmp_path / "short.key").write_bytes(b"tiny")
    (tmp_path / "short.key").chmod(0o600)
    p = write(tmp_path, '[privacy]\ncaller_numbers = "pseudonymised"\nkey_file = "short.key"\n')
    with pytest.raises(SettingsError, match="at least 16"):
        CallerPrivacy.from_settings(load_settings(p, env={}))
    (tmp_path / "good.key").write_bytes(b"k" * 32 + b"\n")
    (tmp_path / "good.key").chmod(0o600)
    p = write(tmp_path, '[privacy]\ncaller_numbers = "pseudonymised"\nkey_file = "good.key"\n')
    privacy = CallerPrivacy.from_settings(load_settings(p, env={}))
    assert privacy.key == b"k" * 32 and privacy.pseudonymised


def test_sqlite_connections_use_wal_a_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    import asyncio

    from callflow.store.db import SQLITE_BUSY_TIMEOUT_MS, create_engine

    async def pragmas() -> list[object]:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/sub/dir/x.db")
        try:
            async with engine.connect() as conn:
                return [
                    (await conn.exec_driver_sql(f"PRAGMA {p}")).scalar()
                    for p in ("journal_mode", "busy_timeout", "foreign_keys")
                ]
        finally:
            await engine.dispose()

    assert asyncio.run(pragmas()) == ["wal", SQLITE_BUSY_TIMEOUT_MS, 1]


def test_the_node_name_defaults_to_the_host_name_and_is_checked() -> None:
    assert load_settings(None, {}).node.resolved == socket.gethostname().split(".")[0][:64]
    settings = load_settings(None, {"CALLFLOW_NODE_NAME": "pbx-2"})
    assert settings.node.resolved == "pbx-2"
    for bad in ("pbx 2", "-x", "a" * 65, "pbx/2"):
        with pytest.raises(SettingsError, match=r"\[node\] name"):
            load_settings(None, {"CALLFLOW_NODE_NAME": bad})
