"""The recorder: batched writes, outages (spool, replay exactly once, in order), restarts,
damaged spools, a full disk, refused records, two daemons on one database."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

import callflow.store.recorder as recorder_module
import callflow.store.spool as spool_module
from callflow.errors import UserError
from callflow.flow.engine import Engine
from callflow.flow.events import CallAnswered, Outcome, OutcomeKind, StepKind, StepResult
from callflow.flow.registry import LoadedFlow, load_flows
from callflow.flow.services import CallbackRequest, Services
from callflow.simulate import Scenario, SimulatedCall, Transcript
from callflow.store.models import (
    AdminAction,
    Call,
    CallbackRequestRow,
    CallStep,
    TrunkEvent,
    UTCDateTime,
)
from callflow.store.privacy import CallerPrivacy
from callflow.store.recorder import Recorder
from callflow.store.writer import write_records
from callflow.telephony import Driver
from tests.support.polling import wait_until

from .conftest import REPO, Database
from .support import T0, count, counts, info, play_call, step, step_keys


def make_recorder(engine: AsyncEngine, spool: Path, **kwargs: Any) -> Recorder:
    kwargs.setdefault("flush_interval", 0.02)
    kwargs.setdefault("retry_min", 0.01)
    kwargs.setdefault("retry_max", 0.05)
    kwargs.setdefault("write_timeout", 5.0)
    return Recorder(engine, spool, **kwargs)


class Outage:
    """Makes a recorder's database look down (or slow) while ``down`` is True."""

    def __init__(self, rec: Recorder) -> None:
        self.down = False
        self.calls = 0
        self.real = rec._transaction

        async def transaction(records: list[dict[str, Any]]) -> None:
            self.calls += 1
            if self.down:
                raise OperationalError("INSERT", {}, ConnectionRefusedError("db is down"))
            await self.real(records)

        rec._transaction = transaction  # type: ignore[method-assign]


def spool_files(spool: Path) -> list[Path]:
    return sorted(spool.glob("segment-*.jsonl"))


# -- the engine's calls, recorded -----------------------------------------------------------


@pytest.fixture(scope="module")
def flow() -> LoadedFlow:
    flows = load_flows([REPO / "dialplans" / "cabinet-du-parc.yaml"])
    return flows.flows["cabinet-du-parc"]


class Both:
    """The recorder plus a transcript, to compare what the engine said with what is stored."""

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec
        self.transcripts: dict[str, Transcript] = {}

    def call_started(self, i: Any) -> None:
        self.transcripts[i.call_id] = Transcript()
        self.transcripts[i.call_id].call_started(i)
        self.rec.call_started(i)

    def step(self, r: Any) -> None:
        self.transcripts[r.call_id].step(r)
        self.rec.step(r)

    def call_answered(self, a: CallAnswered) -> None:
        self.transcripts[a.call_id].call_answered(a)
        self.rec.call_answered(a)

    def call_ended(self, i: Any, o: Outcome, at: datetime) -> None:
        self.transcripts[i.call_id].call_ended(i, o, at)
        self.rec.call_ended(i, o, at)


def _step_fields(s: Any) -> tuple[object, ...]:
    """A stored step (a row) or a reported one (a StepRecord), field by field."""
    names = ("seq", "step", "kind", "result", "detail", "next", "key", "attempt")
    names += ("destination", "trunk", "tier", "dial_status", "outcome", "score", "scale")
    return tuple(None if (v := getattr(s, n)) is None else str(v) for n in names)


def clock_from(start: datetime) -> Iterator[datetime]:
    t = start
    while True:
        yield t
        t += timedelta(milliseconds=500)


async def test_engine_calls_are_recorded(
    engine: AsyncEngine, tmp_path: Path, flow: LoadedFlow
) -> None:
    rec = make_recorder(engine, tmp_path / "spool")
    both = Both(rec)
    ticks = clock_from(T0)  # Monday 10:00 in Paris: the office is open
    services = Services(clock=lambda: next(ticks), callbacks=rec, observer=both)
    eng = Engine(services)
    task = asyncio.create_task(rec.run())
    scenarios = {
        "desk": Scenario(digits=["2"]),
        "rated": Scenario(digits=["2", "5"]),  # the secretary hangs up: the caller rates 5
        "callback": Scenario(digits=["2"], no_answer={"secretariat"}),
        "emergency": Scenario(digits=["1", "1"]),
        "abandoned": Scenario(hangup_after_prompts=1),
    }
    ids = {}
    for name, sc in scenarios.items():
        call = SimulatedCall(flow, sc, caller="06 12 34 56 78", dialed="0388000000")
        ids[name] = call.id
        await eng.run(flow, call)
    await rec.close()
    await task
    assert rec.queue_depth == 0 and rec.spool_size == 0 and rec.dropped == 0

    async with engine.connect() as conn:
        calls = {r.id: r for r in (await conn.execute(select(Call))).all()}
        stored = (await conn.execute(select(CallStep).order_by(CallStep.seq))).all()
        callbacks = (await conn.execute(select(CallbackRequestRow))).all()
    assert {c.outcome for c in calls.values()} == {"answered", "callback", "emergency", "abandoned"}
    for name, call_id in ids.items():
        t = both.transcripts[call_id]
        row = calls[call_id]
        assert t.outcome is not None
        assert row.outcome == str(t.outcome.kind), name
        assert row.caller == "0612345678"  # normalised, in clear (the default)
        assert row.flow == "cabinet-du-parc" and row.flow_version == flow.version
        assert row.started.tzinfo is not None and row.ended is not None
        assert row.end_step == t.outcome.step
        mine = [_step_fields(s) for s in stored if s.call_id == call_id]
        said = [_step_fields(s) for s in t.steps]
        assert mine == said, name
        first_answer = t.answers[0].at if t.answers else None
        assert row.answered == first_answer, name
    emergency = calls[ids["emergency"]]
    assert emergency.tier == 1 and emergency.destination == "samu" and emergency.trunk == "trunk-b"
    assert emergency.answered is not None and emergency.started <= emergency.answered
    assert calls[ids["abandoned"]].answered is None
    assert len(callbacks) == 1
    cb = callbacks[0]
    assert (cb.call_id, cb.queue, cb.priority, cb.status) == (
        ids["callback"],
        "same-day",
        "high",
        "pending",
    )
    assert cb.caller == "0612345678"


@pytest.mark.parametrize("batches", [1, 3])
async def test_answered_is_the_first_answer_event(
    engine: AsyncEngine, tmp_path: Path, batches: int
) -> None:
    """The answer time is an event of its own: the first one is kept, written in the same
    batch as the call's start or in a later one, and the end does not clear it."""
    rec = make_recorder(engine, tmp_path / "spool")
    i = info("c1")
    first = T0 + timedelta(seconds=10)

    def answer(at: datetime) -> CallAnswered:
        return CallAnswered("c1", "cabinet", at, "desk", "secretariat", None, None)

    rec.call_started(i)
    if batches > 1:
        await rec.flush()
    rec.call_answered(answer(first))
    rec.call_answered(answer(first + timedelta(seconds=60)))  # a second person, later
    if batches > 1:
        await rec.flush()
    rec.call_ended(i, Outcome(OutcomeKind.ANSWERED, "desk", "secretariat"), first)
    await rec.close()
    async with engine.connect() as conn:
        row = (await conn.execute(select(Call))).one()
    assert row.answered == first and row.outcome == "answered"


async def test_an_end_spooled_by_an_older_version_keeps_its_answer_time(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    rec = make_recorder(engine, spool)
    rec.open()
    old_end = {
        "t": "end",
        "id": "c1",
        "flow": "cabinet",
        "flow_version": "v1",
        "dialed": "100",
        "caller": "0612345678",
        "started": T0.isoformat(),
        "answered": (T0 + timedelta(seconds=5)).isoformat(),
        "ended": (T0 + timedelta(seconds=50)).isoformat(),
        "outcome": "answered",
        "tier": None,
        "destination": "secretariat",
        "trunk": None,
        "end_step": "desk",
        "detail": "",
    }
    old_step = {
        "t": "step",
        "call_id": "c1",
        "seq": 1,
        "at": T0.isoformat(),
        "step": "menu",
        "kind": "menu",
        "result": "pressed 1",
        "detail": "attempt 1: pressed 1",
        "next": "desk",
        "duration": 2.0,
    }
    rec.spool.append([old_step, old_end])
    await rec.close()
    async with engine.connect() as conn:
        row = (await conn.execute(select(Call))).one()
        st = (await conn.execute(select(CallStep))).one()
    assert row.answered == T0 + timedelta(seconds=5)
    assert (st.result, st.key, st.destination) == ("pressed 1", None, None)


async def test_a_recorder_runs_once_and_says_so_when_entered_again(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    rec = make_recorder(engine, tmp_path / "spool")
    async with rec:
        play_call(rec, "c1", 2)
    assert await counts(engine) == (1, 2, 0)
    # Entered again, it would start no writer and its flush would wait forever.
    with pytest.raises(RuntimeError, match="a Recorder runs once"):
        async with rec:
            pass


# -- idempotence ------------------------------------------------------------------------------


async def test_writing_twice_changes_nothing(engine: AsyncEngine, tmp_path: Path) -> None:
    rec = make_recorder(engine, tmp_path / "spool")
    play_call(rec, "c1", 4)
    rec.submit(CallbackRequest("c1", "cabinet", "0612345678", "q", "high", None, T0))
    records = rec._take_all()
    for _ in range(2):
        async with engine.begin() as conn:
            await write_records(conn, records)
    # A start replayed after the end keeps the end.
    async with engine.begin() as conn:
        await write_records(conn, [records[0]])
    assert await counts(engine) == (1, 4, 1)
    async with engine.connect() as conn:
        row = (await conn.execute(select(Call))).one()
    assert row.outcome == "answered" and row.ended is not None


async def test_a_step_without_its_call_gets_a_placeholder_that_the_end_fills(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    rec = make_recorder(engine, tmp_path / "spool")
    play_call(rec, "c1", 2)
    records = rec._take_all()
    _lost_start, *rest = records
    async with engine.begin() as conn:
        await write_records(conn, rest[:1])  # a step alone: its start was lost
    async with engine.connect() as conn:
        placeholder = (await conn.execute(select(Call))).one()
    assert placeholder.caller == "" and placeholder.outcome is None
    async with engine.begin() as conn:
        await write_records(conn, rest)
    async with engine.connect() as conn:
        row = (await conn.execute(select(Call))).one()
    assert row.caller == "0612345678" and row.outcome == "answered" and row.flow_version == "v1"


async def test_each_call_keeps_its_driver_and_older_records_read_ari(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    rec = make_recorder(engine, tmp_path / "spool")
    agi = replace(info("agi-call"), driver=Driver.AGI)
    rec.call_started(agi)
    rec.call_ended(agi, Outcome(OutcomeKind.ABANDONED, "menu"), T0 + timedelta(seconds=3))
    play_call(rec, "ari-call", 1)
    records = rec._take_all()
    # A start journaled before calls had a driver (an older version's spool).
    old = {k: v for k, v in records[-1].items() if k != "driver"} | {"id": "old-call"}
    async with engine.begin() as conn:
        await write_records(conn, [*records, old])
    async with engine.connect() as conn:
        rows = (await conn.execute(select(Call.id, Call.driver).order_by(Call.id))).all()
    assert [tuple(r) for r in rows] == [
        ("agi-call", "agi"),
        ("ari-call", "ari"),
        ("old-call", "ari"),
    ]


# -- outages ----------------------------------------------------------------------------------


async def test_outage_spools_then_replays_in_order_exactly_once(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    rec = make_recorder(engine, spool, batch_size=7, segment_records=25)
    outage = Outage(rec)
    task = asyncio.create_task(rec.run())
    play_call(rec, "before", 3)
    await rec.flush()
    assert await counts(engine) == (1, 3, 0)

    outage.down = True
    for n in range(20):
        play_call(rec, f"down-{n}", 3)
        if n % 5 == 0:
            await rec.flush()
    await rec.flush()
    assert not rec.database_up
    assert rec.spool_size == 20 * 5 and rec.queue_depth == 0
    assert len(spool_files(spool)) >= 4  # sealed every 25 records
    assert await counts(engine) == (1, 3, 0)

    written: list[str] = []
    real = outage.real

    async def spy(records: list[dict[str, Any]]) -> None:
        await real(records)
        written.extend(r.get("id") or r.get("call_id") for r in records)

    outage.real = spy
    outage.down = False
    play_call(rec, "after", 3)  # queued behind the spool
    await rec.flush()
    await rec.close()
    await task
    assert rec.database_up and rec.spool_size == 0 and spool_files(spool) == []
    assert await counts(engine) == (22, 66, 0)
    order = list(dict.fromkeys(written))
    assert order == [f"down-{n}" for n in range(20)] + ["after"]
    assert await step_keys(engine) == sorted(
        (c, s) for c in ["before", "after", *(f"down-{n}" for n in range(20))] for s in (1, 2, 3)
    )


async def test_a_slow_database_counts_as_an_outage(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = {"on": True}

    async def sluggish(
        conn: AsyncConnection, records: list[dict[str, Any]], *, node: str | None = None
    ) -> None:
        if slow["on"]:
            await asyncio.sleep(5)
        await write_records(conn, records, node=node)

    monkeypatch.setattr(recorder_module, "write_records", sluggish)
    rec = make_recorder(engine, tmp_path / "spool", write_timeout=0.2)
    play_call(rec, "c1", 2)
    await rec.flush()
    assert rec.spool_size == 4 and not rec.database_up
    slow["on"] = False
    await rec.flush()
    await rec.close()
    assert await counts(engine) == (1, 2, 0) and rec.spool_size == 0


async def test_a_restart_replays_the_spool_first(engine: AsyncEngine, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    first = make_recorder(engine, spool)
    Outage(first).down = True
    for n in range(5):
        play_call(first, f"old-{n}", 2)
    await first.close()  # the database never came back: all in the spool
    assert len(spool_files(spool)) == 1 and await counts(engine) == (0, 0, 0)

    second = make_recorder(engine, spool)
    assert second.spool_size == 0
    second.open()
    assert second.spool_size == 20
    written: list[str] = []
    outage = Outage(second)
    real = outage.real

    async def spy(records: list[dict[str, Any]]) -> None:
        await real(records)
        written.extend(r.get("id") or r.get("call_id") for r in records)

    outage.real = spy
    play_call(second, "new", 2)  # recorded before run(): still written after the spool
    task = asyncio.create_task(second.run())
    await second.flush()
    await second.close()
    await task
    assert list(dict.fromkeys(written)) == [*(f"old-{n}" for n in range(5)), "new"]
    assert await counts(engine) == (6, 12, 0) and spool_files(spool) == []


async def test_a_replay_interrupted_by_a_crash_does_not_duplicate(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    first = make_recorder(engine, spool, batch_size=10)
    Outage(first).down = True
    for n in range(10):
        play_call(first, f"c{n}", 3)  # 50 records: 5 batches
    await first.close()

    crashing = make_recorder(engine, spool, batch_size=10)
    outage = Outage(crashing)
    real = outage.real
    batches = 0

    async def two_then_crash(records: list[dict[str, Any]]) -> None:
        nonlocal batches
        batches += 1
        if batches > 2:
            raise OperationalError("INSERT", {}, ConnectionResetError("gone"))
        await real(records)

    outage.real = two_then_crash
    await crashing.flush()  # writes two batches, then fails
    assert 0 < (await counts(engine))[1] < 30
    crashing.spool.close()  # the process dies: no close(), the spool stays as it was

    third = make_recorder(engine, spool, batch_size=10)
    await third.flush()
    await third.close()
    assert await counts(engine) == (10, 30, 0)
    assert await step_keys(engine) == sorted((f"c{n}", s) for n in range(10) for s in (1, 2, 3))
    assert spool_files(spool) == []


async def test_damaged_spool_lines_are_skipped_logged_and_kept(
    engine: AsyncEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool"
    first = make_recorder(engine, spool)
    Outage(first).down = True
    for n in range(4):
        play_call(first, f"c{n}", 3)  # 5 records a call: lines 1-5, 6-10, 11-15, 16-20
    await first.close()
    [segment] = spool_files(spool)
    lines = segment.read_bytes().splitlines(keepends=True)
    assert len(lines) == 20
    lines[6] = lines[6].replace(b'"seq":1', b'"seq":9')  # line 7: c1's step 1, checksum fails
    lines.insert(12, b"\x00\xffnot json at all\n")  # a line of garbage after line 12
    lines[-1] = lines[-1][:30]  # the last line torn by a crash (c3's end)
    segment.write_bytes(b"".join(lines))

    second = make_recorder(engine, spool)
    with caplog.at_level(logging.ERROR, logger="callflow.store"):
        await second.flush()
    await second.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("line 7 is damaged (checksum mismatch)" in e for e in errors)
    assert any("line 13 is damaged (not JSON" in e for e in errors)
    assert any("line 21 is damaged (truncated line" in e for e in errors)
    assert any("kept as" in e and "7, 13, 21" in e for e in errors)
    # The rest is there; the damaged segment is kept aside, whole.
    keys = await step_keys(engine)
    assert ("c1", 1) not in keys and len(keys) == 11
    async with engine.connect() as conn:
        outcomes = dict((await conn.execute(select(Call.id, Call.outcome))).all())
    assert outcomes == {"c0": "answered", "c1": "answered", "c2": "answered", "c3": None}
    assert spool_files(spool) == []
    assert (spool / "corrupt" / segment.name).read_bytes() == b"".join(lines)


async def test_a_full_disk_keeps_records_in_memory_then_writes_them(
    engine: AsyncEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rec = make_recorder(engine, tmp_path / "spool", memory_limit=1000)
    outage = Outage(rec)
    outage.down = True
    real_write = rec.spool.write
    disk = {"full": True}

    def write(records: list[dict[str, Any]]) -> None:
        if disk["full"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(records)

    rec.spool.write = write  # type: ignore[method-assign]
    task = asyncio.create_task(rec.run())
    with caplog.at_level(logging.ERROR, logger="callflow.store"):
        for n in range(10):
            play_call(rec, f"c{n}", 2)
            await rec.flush()
    assert rec.queue_depth == 40 and rec.spool_size == 0 and rec.dropped == 0
    assert any("CANNOT WRITE THE SPOOL" in r.getMessage() for r in caplog.records)

    disk["full"] = False  # space again: memory goes to the spool, behind nothing
    rec._disk_retry_at = 0.0
    play_call(rec, "c10", 2)
    await rec.flush()
    assert rec.queue_depth == 0 and rec.spool_size == 44
    outage.down = False
    await rec.flush()
    await rec.close()
    await task
    assert await counts(engine) == (11, 22, 0)


async def test_memory_is_bounded_and_losses_are_counted_and_logged(
    engine: AsyncEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rec = make_recorder(engine, tmp_path / "spool", memory_limit=10)
    Outage(rec).down = True

    def full(records: list[dict[str, Any]]) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    rec.spool.write = full  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="callflow.store"):
        for n in range(4):
            play_call(rec, f"c{n}", 2)  # 16 records: 6 too many, and no exception
    assert rec.queue_depth == 10 and rec.dropped == 6
    assert any("LOST" in r.getMessage() for r in caplog.records)
    with caplog.at_level(logging.CRITICAL, logger="callflow.store"):
        await rec.close()
    assert rec.dropped == 16
    assert any("they are LOST" in r.getMessage() for r in caplog.records)


async def test_a_record_the_database_refuses_is_kept_aside_and_the_rest_written(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    rec = make_recorder(engine, spool)
    play_call(rec, "c1", 2)
    bogus = Outcome("transferred-to-mars", "x")  # type: ignore[arg-type]
    rec.call_ended(info("c2"), bogus, T0)
    play_call(rec, "c3", 2)
    await rec.flush()
    await rec.close()
    assert rec.rejected == 1
    assert await counts(engine) == (2, 4, 0)
    rejected = (spool / "rejected.jsonl").read_text()
    assert "transferred-to-mars" in rejected and '"id": "c2"' in rejected


async def test_nul_characters_are_stored_visibly(engine: AsyncEngine, tmp_path: Path) -> None:
    rec = make_recorder(engine, tmp_path / "spool")
    i = info("c1", caller="06\x0012")
    rec.call_started(i)
    rec.step(step("c1", 1, kind=StepKind.MENU, result=StepResult.PRESSED, detail="key \x00"))
    rec.call_ended(i, Outcome(OutcomeKind.ABANDONED, "menu"), T0)
    await rec.close()
    assert rec.rejected == 0
    async with engine.connect() as conn:
        call = (await conn.execute(select(Call))).one()
        stored = (await conn.execute(select(CallStep))).one()
    assert call.caller == "06\ufffd12" and stored.detail == "key \ufffd"


async def test_data_the_database_cannot_hold_is_rejected_not_retried(
    database: Database, engine: AsyncEngine, tmp_path: Path
) -> None:
    rec = make_recorder(engine, tmp_path / "spool")
    play_call(rec, "c1", 1)
    rec.step(step("c1", 2**40))
    play_call(rec, "c2", 1)
    await rec.close()
    assert rec.spool_size == 0 and rec.database_up
    if database.backend == "postgresql":  # integer out of range (SQLSTATE 22)
        assert rec.rejected == 1 and await counts(engine) == (2, 2, 0)
        assert "out of int32 range" in (tmp_path / "spool" / "rejected.jsonl").read_text()
    else:  # SQLite integers have 64 bits
        assert rec.rejected == 0 and await counts(engine) == (2, 3, 0)


async def test_trunk_changes_and_admin_actions(engine: AsyncEngine, tmp_path: Path) -> None:
    rec = make_recorder(engine, tmp_path / "spool")
    rec.trunk_changed("trunk-a", "unreachable", None, T0)
    rec.trunk_changed("trunk-a", "reachable", 12.5, T0 + timedelta(seconds=30))
    rec.audit("admin:alice", "override", {"calendar": "office", "until": T0}, T0)
    await rec.flush()
    rec.trunk_changed("trunk-a", "reachable", 12.5, T0 + timedelta(seconds=30))  # again
    await rec.close()
    async with engine.connect() as conn:
        trunks = (await conn.execute(select(TrunkEvent).order_by(TrunkEvent.at))).all()
        audit = (await conn.execute(select(AdminAction))).one()
    assert [(t.trunk, t.state, t.rtt_ms) for t in trunks] == [
        ("trunk-a", "unreachable", None),
        ("trunk-a", "reachable", 12.5),
    ]
    assert audit.who == "admin:alice" and audit.detail == {
        "calendar": "office",
        "until": str(T0),  # what JSON cannot hold is kept as text
    }
    assert audit.at == T0


async def test_two_nodes_tag_their_calls_and_see_one_trunk_change_each(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """Two daemons on one database: each call and trunk change carries its node; the same
    trunk seen down at the same instant by both nodes is two rows, not one."""
    for node in ("pbx-1", "pbx-2"):
        rec = make_recorder(engine, tmp_path / node, node=node)
        play_call(rec, f"call-{node}", 1)
        rec.trunk_changed("trunk-a", "unreachable", None, T0)
        await rec.close()
    # A record journaled by an older version has no node: the replaying daemon's is given.
    async with engine.begin() as conn:
        old = {"t": "trunk", "trunk": "trunk-b", "state": "reachable", "rtt_ms": 3.0}
        await write_records(conn, [{**old, "at": T0.isoformat()}], node="pbx-2")
    async with engine.connect() as conn:
        calls = {r.id: r.node for r in await conn.execute(select(Call.id, Call.node))}
        trunks = (await conn.execute(select(TrunkEvent.trunk, TrunkEvent.node))).all()
    assert calls == {"call-pbx-1": "pbx-1", "call-pbx-2": "pbx-2"}
    assert sorted(tuple(t) for t in trunks) == [
        ("trunk-a", "pbx-1"),
        ("trunk-a", "pbx-2"),
        ("trunk-b", "pbx-2"),
    ]


async def test_pseudonymised_callers_but_callbacks_in_clear(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    privacy = CallerPrivacy(b"k" * 32)
    rec = make_recorder(engine, tmp_path / "spool", privacy=privacy)
    play_call(rec, "c1", 1)
    rec.submit(CallbackRequest("c1", "cabinet", "0612345678", "q", "high", None, T0))
    await rec.close()
    async with engine.connect() as conn:
        call = (await conn.execute(select(Call))).one()
        cb = (await conn.execute(select(CallbackRequestRow))).one()
    assert call.caller == privacy.protect("0612345678") and call.caller.startswith("hmac:")
    assert "0612345678" not in call.caller
    assert cb.caller == "0612345678"


async def test_no_caller_number_in_any_detail(
    engine: AsyncEngine, tmp_path: Path, flow: LoadedFlow
) -> None:
    privacy = CallerPrivacy(b"k" * 32)
    rec = make_recorder(engine, tmp_path / "spool", privacy=privacy)
    ticks = clock_from(T0)
    eng = Engine(Services(clock=lambda: next(ticks), callbacks=rec, observer=rec))
    # Nobody at the desk, and a caller ID that cannot be called back: the engine says so,
    # in prose that never quotes the number.
    scenario = Scenario(digits=["2"], no_answer={"secretariat"})
    await eng.run(flow, SimulatedCall(flow, scenario, caller="06-12-34 x", dialed="100"))
    await rec.close()
    async with engine.connect() as conn:
        details = (await conn.execute(select(CallStep.detail))).scalars().all()
        call = (await conn.execute(select(Call))).one()
    assert any("cannot be called back" in d for d in details), details
    assert not any("06-12-34" in d for d in details)
    assert call.caller.startswith("hmac:") and "06-12-34" not in (call.detail or "")


async def test_observer_calls_do_not_touch_the_database(tmp_path: Path) -> None:
    from callflow.store.db import create_engine

    dead = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    rec = make_recorder(dead, tmp_path / "spool", write_timeout=1.0)
    for n in range(200):  # synchronous calls: they cannot wait for anything
        play_call(rec, f"c{n}", 5)
    assert rec.queue_depth == 1400  # queued only: nothing was written on their way
    await rec.close()  # the database is unreachable: everything goes to the spool
    assert rec.spool_size == 1400 and rec.dropped == 0
    await dead.dispose()


# -- two daemons ----------------------------------------------------------------------------


async def test_two_daemons_on_one_database(database: Database, tmp_path: Path) -> None:
    from callflow.store.db import upgrade

    e1, e2 = database.engine(), database.engine()
    await upgrade(e1)
    a = make_recorder(e1, tmp_path / "spool-a", batch_size=20)
    b = make_recorder(e2, tmp_path / "spool-b", batch_size=20)
    tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
    for n in range(100):
        play_call(a, f"a-{n}", 4)
        play_call(b, f"b-{n}", 4)
        if n % 10 == 0:
            await asyncio.sleep(0)
    # The same call id from both (ids must be unique: this is what happens if they are not):
    # one call row, the first writer's steps; nothing is duplicated, nothing crashes.
    play_call(a, "same", 2)
    await a.flush()
    play_call(b, "same", 3)
    await asyncio.gather(a.close(), b.close())
    await asyncio.gather(*tasks)
    assert await counts(e1) == (201, 800 + 3, 0)
    assert a.rejected == b.rejected == a.dropped == b.dropped == 0
    assert await count(e2, CallStep) == 803


async def test_one_spool_per_daemon(engine: AsyncEngine, tmp_path: Path) -> None:
    a = make_recorder(engine, tmp_path / "spool")
    b = make_recorder(engine, tmp_path / "spool")
    a.open()
    with pytest.raises(UserError, match="in use by another callflow process"):
        b.open()
    await a.close()
    b.open()
    await b.close()


def test_aware_times_only() -> None:
    """The call log stores UTC and only ever gives back aware UTC datetimes."""
    column = UTCDateTime()
    local = T0.astimezone(ZoneInfo("Europe/Paris"))  # 10:00 in Paris
    lite, pg = sqlite.dialect(), postgresql.dialect()
    stored = column.process_bind_param(local, lite)
    assert stored == T0.replace(tzinfo=None)  # SQLite keeps naive UTC
    stored_pg = column.process_bind_param(local, pg)
    assert stored_pg == T0 and stored_pg is not None and stored_pg.tzinfo is UTC
    for raw in (T0.replace(tzinfo=None), T0.replace(tzinfo=None).isoformat(sep=" "), local):
        back = column.process_result_value(raw, lite)
        assert back == T0 and back is not None and back.tzinfo is UTC


async def test_the_journal_is_written_at_each_group_commit_and_fsyncd_off_the_loop(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync_threads: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        fsync_threads.append(threading.get_ident())
        real_fsync(fd)

    monkeypatch.setattr(spool_module.os, "fsync", fsync)
    spool = tmp_path / "spool"
    rec = make_recorder(engine, spool, commit_interval=0.01, sync_interval=3600.0)
    outage = Outage(rec)
    outage.down = True  # the records stay in the journal
    task = asyncio.create_task(rec.run())

    def journaled() -> int:
        return sum(len(p.read_bytes().splitlines()) for p in spool_files(spool))

    play_call(rec, "c1", 2)  # 4 records
    # In the journal's file at the group commit (a kill of the daemon loses none), with no
    # fsync yet: that waits for sync_interval.
    await wait_until(lambda: journaled() == 4, 10)
    assert fsync_threads == []
    rec.sync_interval = 0.05
    await wait_until(lambda: bool(fsync_threads), 10)
    assert threading.get_ident() not in fsync_threads  # never on the loop's thread
    outage.down = False
    await rec.flush()
    await rec.close()
    await task
    assert await counts(engine) == (1, 2, 0)
    assert threading.get_ident() not in fsync_threads
