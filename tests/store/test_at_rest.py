"""Data at rest (issue 13): the call log's files are the owner's only, whatever the umask,
and a pseudonymised daemon's spool holds no caller number in clear, not even the one of a
callback request (sealed until it is written to the database)."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from callflow.flow.events import Outcome
from callflow.flow.services import CallbackRequest
from callflow.store.db import create_engine, upgrade
from callflow.store.models import Call, CallbackRequestRow
from callflow.store.privacy import CallerPrivacy
from callflow.store.recorder import Recorder

from .support import T0, counts, info, play_call
from .test_journal import journaled, poll

NUMBER = "0612345678"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A permissive umask, as a service manager may leave it: the modes must not rely on it."""
    old = os.umask(0o022)
    yield
    os.umask(old)


async def test_the_call_log_files_are_private_and_the_spool_holds_no_clear_number(
    tmp_path: Path, open_umask: None
) -> None:
    db_file, spool = tmp_path / "var" / "calls.db", tmp_path / "var" / "spool"
    engine = create_engine(f"sqlite+aiosqlite:///{db_file}")
    await upgrade(engine)
    privacy = CallerPrivacy(b"k" * 32)
    rec = Recorder(engine, spool, privacy=privacy, flush_interval=3600.0, commit_interval=0.05)
    try:
        async with rec:
            await rec.flush()  # the next database feed is an hour away: records stay spooled
            play_call(rec, "c1", 2)
            rec.submit(CallbackRequest("c1", "cabinet", NUMBER, "q", "high", None, T0))
            rec.call_ended(info("c2"), Outcome("to-mars", "x"), T0)  # type: ignore[arg-type]
            await poll(lambda: len(journaled(spool)) == 6, "the group commit")
            segments = sorted(spool.glob("segment-*.jsonl"))
            assert segments and mode(spool) == 0o700
            assert all(mode(s) == 0o600 for s in segments) and mode(spool / ".lock") == 0o600
            on_disk = b"".join(s.read_bytes() for s in segments)
            assert NUMBER.encode() not in on_disk and b"612345678" not in on_disk
            [callback] = [r for r in journaled(spool) if r["t"] == "callback"]
            assert str(callback["caller"]).startswith("sealed:")
            await rec.flush()
        assert mode(db_file) == 0o600 and mode(db_file.parent) == 0o700
        assert rec.rejected == 1 and mode(spool / "rejected.jsonl") == 0o600
        assert NUMBER not in (spool / "rejected.jsonl").read_text()
        assert await counts(engine) == (1, 2, 1)
        async with engine.connect() as conn:
            caller = (await conn.execute(select(Call.caller))).scalar_one()
            to_call = (await conn.execute(select(CallbackRequestRow.caller))).scalar_one()
        # The call is pseudonymised; the callback is opened (its purpose is to call back).
        assert caller.startswith("hmac:") and to_call == NUMBER
    finally:
        await engine.dispose()


async def test_files_left_open_to_others_by_an_older_version_are_narrowed(
    tmp_path: Path, open_umask: None
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o755)
    old = spool / "segment-000000000001.jsonl"
    old.write_bytes(b"")
    os.chmod(old, 0o644)
    db_file = tmp_path / "calls.db"
    db_file.write_bytes(b"")
    os.chmod(db_file, 0o644)
    engine = create_engine(f"sqlite+aiosqlite:///{db_file}")
    try:
        assert mode(db_file) == 0o600
        await upgrade(engine)
        async with Recorder(engine, spool):
            assert mode(spool) == 0o700 and mode(old) == 0o600
    finally:
        await engine.dispose()


def test_a_sealed_number_opens_only_with_its_key() -> None:
    a, b = CallerPrivacy(b"a" * 32), CallerPrivacy(b"b" * 32)
    sealed = a.seal(NUMBER)
    assert NUMBER not in sealed and sealed != a.seal(NUMBER)  # a random nonce each time
    assert a.unseal(sealed) == NUMBER
    with pytest.raises(ValueError, match="does not open with this key"):
        b.unseal(sealed)
    assert CallerPrivacy().seal(NUMBER) == NUMBER  # clear mode: nothing to hide


async def test_the_database_driver_never_echoes_a_number(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Even an engine someone switched to echo=True, or a statement that fails, shows no
    # parameter: caller numbers travel as parameters.
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", echo=True)
    try:
        with caplog.at_level(logging.DEBUG):
            async with engine.begin() as conn:
                await conn.execute(text("CREATE TABLE t (n TEXT UNIQUE)"))
                await conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": NUMBER})
                with pytest.raises(IntegrityError) as info:
                    await conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": NUMBER})
        assert any("INSERT INTO t" in r.getMessage() for r in caplog.records)
        assert not any(NUMBER in r.getMessage() for r in caplog.records)
        assert NUMBER not in str(info.value)
    finally:
        await engine.dispose()
