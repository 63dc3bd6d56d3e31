"""The write-ahead journal: every record reaches the spool within ``commit_interval``, before
and whatever the database does, so a kill of the daemon loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from callflow.store import recorder as recorder_module
from callflow.store.models import Call
from callflow.store.recorder import Recorder
from callflow.store.spool import decode_line

from .conftest import REPO
from .support import counts, play_call

CALLS = 40
STEPS = 3
RECORDS = CALLS * (STEPS + 2)  # start, steps, end


def journaled(spool: Path) -> list[dict[str, object]]:
    """The records in the spool's segments, as a new process would read them."""
    out = []
    for seg in sorted(spool.glob("segment-*.jsonl")):
        for line in seg.read_bytes().splitlines(keepends=True):
            with contextlib.suppress(ValueError):  # a line being written
                out.append(decode_line(line))
    return out


async def poll(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_records_reach_the_journal_before_any_database_write(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    # The database is fed once an hour: only the journal can put the records on disk.
    rec = Recorder(engine, spool, flush_interval=3600.0, commit_interval=0.05)
    async with rec:
        await rec.flush()  # a database feed now: the next one is an hour away
        for n in range(CALLS):
            play_call(rec, f"c{n}", STEPS)
        await poll(lambda: len(journaled(spool)) == RECORDS, "the group commit")
        assert await counts(engine) == (0, 0, 0)  # nothing in the database yet
        assert rec.queue_depth == 0 and rec.spool_size == RECORDS
        await rec.flush()  # the database is fed from the journal, which empties
        assert await counts(engine) == (CALLS, CALLS * STEPS, 0)
        assert rec.spool_size == 0 and journaled(spool) == []


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    from callflow.store.db import create_engine
    from callflow.store.recorder import Recorder
    from tests.store.support import play_call

    async def main() -> None:
        # A database that never answers: whatever reaches the disk went through the journal.
        engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
        rec = Recorder(engine, Path({spool!r}), flush_interval=3600.0, commit_interval=0.05)
        async with rec:
            for n in range({calls}):
                play_call(rec, f"c{{n}}", {steps})
            print("queued", flush=True)
            await asyncio.Event().wait()  # until killed

    asyncio.run(main())
    """
)


async def test_a_killed_daemon_loses_no_record(engine: AsyncEngine, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    code = CHILD.format(repo=str(REPO), spool=str(spool), calls=CALLS, steps=STEPS)
    child = subprocess.Popen(  # noqa: ASYNC220 - a process to kill, not awaited
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "queued"
        # No flush, no close: the group commit alone puts the records on disk.
        await poll(lambda: len(journaled(spool)) == RECORDS, "the child's group commit")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    # The next start replays the journal into the database: every record, once.
    async with Recorder(engine, spool) as rec:
        await rec.flush()
    assert await counts(engine) == (CALLS, CALLS * STEPS, 0)
    assert journaled(spool) == []
    async with engine.connect() as conn:
        outcomes = (await conn.execute(select(Call.outcome))).scalars().all()
    assert len(outcomes) == CALLS and None not in outcomes  # every call closed, none twice


async def journaled_while_a_write_waits(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, one_by_one: bool
) -> None:
    """Calls reported while a database write waits reach the journal (a kill then loses
    nothing), and all reach the database once the write ends.  ``one_by_one``: the batch
    is refused as bad data first, so the waiting write is one of the record-by-record
    retries."""
    entered, release = asyncio.Event(), asyncio.Event()
    real = recorder_module.write_records

    async def slow(conn: Any, records: Any, **kwargs: Any) -> None:
        if one_by_one and len(records) > 1:
            raise ValueError("a malformed record in the batch")  # bad data: one by one
        entered.set()
        await release.wait()  # a locked or slow database
        await real(conn, records, **kwargs)

    monkeypatch.setattr(recorder_module, "write_records", slow)
    spool = tmp_path / "spool"
    rec = Recorder(engine, spool, flush_interval=0.05, commit_interval=0.05, write_timeout=600)
    async with rec:
        try:
            play_call(rec, "first", STEPS)
            await poll(entered.is_set, "a database write under way")
            for n in range(CALLS):
                play_call(rec, f"c{n}", STEPS)
            # Journaled while the write still waits: a kill now would lose nothing.
            ids = {f"c{n}" for n in range(CALLS)}
            await poll(
                lambda: ids <= {r.get("id") or r.get("call_id") for r in journaled(spool)},
                "the records reported during the write, in the journal",
            )
            assert rec.queue_depth == 0
        finally:
            release.set()  # the write ends (else the recorder's close would wait on it)
        monkeypatch.setattr(recorder_module, "write_records", real)
        await rec.flush()
    assert await counts(engine) == (CALLS + 1, (CALLS + 1) * STEPS, 0)


async def test_a_slow_database_write_does_not_hold_the_journal_up(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by the fault matrix (kill -9 under load just after a restart whose CDR import
    # kept SQLite's write lock): records reported while a database write waited stayed in
    # memory until it ended, and the kill lost seven calls outright.
    await journaled_while_a_write_waits(engine, tmp_path, monkeypatch, one_by_one=False)


async def test_records_reported_while_a_refused_batch_is_retried_one_by_one_are_journaled(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found in review: a batch the database refused is written again record by record (up
    # to a batch of transactions in a row); records reported meanwhile waited in memory.
    await journaled_while_a_write_waits(engine, tmp_path, monkeypatch, one_by_one=True)
