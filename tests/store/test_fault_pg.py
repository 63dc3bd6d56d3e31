"""A real outage: PostgreSQL is stopped (``scripts/postgres stop``) while the engine runs
calls and the recorder writes them, then started again.  Every call and every step must be
in the database exactly once, and no disk or database wait may happen on the event loop
that runs the calls (checked by where each fsync runs, not by a timer: a loaded machine
makes any timer lie)."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from callflow.flow.engine import Engine
from callflow.flow.registry import load_flows
from callflow.flow.services import Services
from callflow.simulate import Scenario, SimulatedCall
from callflow.store import spool as spool_module
from callflow.store.db import create_engine, upgrade
from callflow.store.models import Call, CallStep
from callflow.store.recorder import Recorder

from .conftest import PG_ENV, REPO, in_ci, pg_url
from .support import T0
from .test_recorder import Both, clock_from

SCRIPT = REPO / "scripts" / "postgres"


async def _script(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(SCRIPT), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, f"scripts/postgres {' '.join(args)}: {err.decode()}"
    return out.decode().strip()


async def test_postgres_stopped_and_started_while_recording(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = pg_url()
    assert url is not None
    sandbox = await _script("url")
    if sandbox != url:
        message = f"{PG_ENV} is not the sandbox of scripts/postgres ({sandbox}): cannot stop it"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url)
    async with admin.begin() as conn:
        await conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    engine = create_engine(
        url, write_timeout=2.0, connect_args={"server_settings": {"search_path": schema}}
    )
    flow = load_flows([REPO / "dialplans" / "cabinet-du-parc.yaml"]).flows["cabinet-du-parc"]
    try:
        await upgrade(engine)
        rec = Recorder(
            engine,
            tmp_path / "spool",
            batch_size=50,
            flush_interval=0.05,
            write_timeout=2.0,
            retry_min=0.05,
            retry_max=0.5,
        )
        both = Both(rec)
        # Where the journal's fsyncs run: never on the loop's thread, which runs the calls.
        fsync_threads: set[int] = set()
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            fsync_threads.add(threading.get_ident())
            real_fsync(fd)

        monkeypatch.setattr(spool_module.os, "fsync", fsync)
        loop_thread = threading.get_ident()
        ticks = clock_from(T0)
        eng = Engine(Services(clock=lambda: next(ticks), callbacks=rec, observer=both))
        writer = asyncio.create_task(rec.run())
        stop = asyncio.Event()
        calls_during_outage = 0
        scenarios = [
            Scenario(digits=["2"]),
            Scenario(digits=["1", "2"]),
            Scenario(digits=["2"], no_answer={"secretariat"}),
            Scenario(hangup_after_prompts=1),
        ]

        async def calls() -> None:
            nonlocal calls_during_outage
            n = 0
            while not stop.is_set():
                call = SimulatedCall(
                    flow, scenarios[n % 4], caller="0612345678", dialed="0388000000"
                )
                await eng.run(flow, call)
                if not rec.database_up:
                    calls_during_outage += 1
                n += 1
                await asyncio.sleep(0.002)

        caller = asyncio.create_task(calls())
        try:
            await asyncio.sleep(0.5)
            await _script("stop")
            await asyncio.sleep(1.5)
            assert not rec.database_up
        finally:
            await _script("up")
        await asyncio.sleep(1.0)
        stop.set()
        await caller
        await rec.close()
        await writer

        assert calls_during_outage > 0, "no call ran while the database was down"
        assert fsync_threads and loop_thread not in fsync_threads
        assert rec.spool_size == 0 and rec.queue_depth == 0
        assert rec.dropped == 0 and rec.rejected == 0
        expected_calls = {
            cid: str(t.outcome.kind) for cid, t in both.transcripts.items() if t.outcome
        }
        expected_steps = sorted(
            (cid, s.seq) for cid, t in both.transcripts.items() for s in t.steps
        )
        assert len(expected_calls) == len(both.transcripts) > 100
        async with engine.connect() as conn:
            calls_rows = (await conn.execute(select(Call.id, Call.outcome))).all()
            step_rows = (await conn.execute(select(CallStep.call_id, CallStep.seq))).all()
        assert len(calls_rows) == len(expected_calls)
        assert dict(calls_rows) == expected_calls
        assert sorted((r[0], r[1]) for r in step_rows) == expected_steps
    finally:
        await _script("up")
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        await admin.dispose()
