"""Asterisk's CDRs into the call log: the dialplan fallback's calls imported exactly once, and
the calls a crash left open closed once, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Collection, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from callflow.flow.engine import RESCUE_SEQ
from callflow.flow.events import CallAnswered, Outcome, OutcomeKind, StepKind, StepResult
from callflow.store.aftercrash import CUT_HOLD, CUT_MARGIN, LOST_MARGIN, AfterCrash
from callflow.store.cdr import CdrCall, CdrFile
from callflow.store.cdr_import import follow_fallbacks, follow_voicemails, import_fallback_calls
from callflow.store.db import create_engine
from callflow.store.maintenance import purge
from callflow.store.models import Call, CallStep, CdrImport
from callflow.store.privacy import CallerPrivacy
from callflow.store.recorder import Recorder

from .conftest import Database
from .support import T0, info, step

NOW = T0 + timedelta(hours=1)


def fallback_cdr(uid: str, **fields: Any) -> CdrCall:
    base: dict[str, Any] = {
        "uniqueid": uid,
        "linkedid": uid,
        "start": T0,
        "end": T0 + timedelta(seconds=40),
        "answer": T0 + timedelta(seconds=5),
        "caller": "0612345678",
        "dialed": "100",
        "fallback": "secretariat=ANSWER",
        "hangup_by": "caller",
        "disposition": "ANSWERED",
    }
    return CdrCall(**{**base, **fields})


async def calls(engine: AsyncEngine) -> dict[str, tuple[Any, ...]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(Call.id, Call.outcome, Call.flow, Call.dialed, Call.caller, Call.detail)
        )
        return {r.id: tuple(r)[1:] for r in rows}


async def imports(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(CdrImport))).scalar_one())


async def import_at_now(engine: AsyncEngine, cdrs: Iterable[CdrCall], **windows: Any) -> list[str]:
    """``import_fallback_calls`` at ``NOW``, numbers in clear, with the windows given."""
    return await import_fallback_calls(
        engine, cdrs, privacy=CallerPrivacy(), flow_of=flow_of, now=NOW, **windows
    )


async def logged(engine: AsyncEngine, tmp_path: Path, outcome: Outcome, *call_ids: str) -> None:
    """Calls the daemon logged (each started at T0, ended with ``outcome``)."""
    async with Recorder(engine, tmp_path / "spool") as rec:
        for call_id in call_ids:
            rec.call_started(info(call_id))
            rec.call_ended(info(call_id), outcome, T0)


def flow_of(dialed: str) -> str:
    return {"100": "bench"}.get(dialed, "")


async def test_a_fallback_call_is_imported_once_however_often_it_is_read(
    engine: AsyncEngine,
) -> None:
    cdrs = [fallback_cdr("a.1"), fallback_cdr("a.2", fallback="secretariat=NOANSWER outside")]
    privacy = CallerPrivacy()
    first = await import_fallback_calls(engine, cdrs, privacy=privacy, flow_of=flow_of, now=NOW)
    assert sorted(first) == ["a.1", "a.2"]
    for _ in range(2):  # the file read again, a restart
        assert (
            await import_fallback_calls(engine, cdrs, privacy=privacy, flow_of=flow_of, now=NOW)
            == []
        )
    got = await calls(engine)
    assert set(got) == {"a.1", "a.2"}
    outcome, flow, dialed, caller, detail = got["a.2"]
    assert (outcome, flow, dialed, caller) == ("fallback", "bench", "100", "0612345678")
    assert "secretariat=NOANSWER outside" in detail
    assert await imports(engine) == 2


async def test_two_daemons_importing_at_once_import_each_call_once(
    database: Database, engine: AsyncEngine
) -> None:
    other = database.engine()
    cdrs = [fallback_cdr(f"b.{i}") for i in range(30)]
    privacy = CallerPrivacy()
    results = await asyncio.gather(
        *(
            import_fallback_calls(e, cdrs, privacy=privacy, flow_of=flow_of, now=NOW)
            for e in (engine, other)
        ),
        return_exceptions=True,
    )
    imported = [i for r in results if isinstance(r, list) for i in r]
    assert len(set(imported)) == len(imported)  # nobody claims a call twice
    assert len(await calls(engine)) == 30 and await imports(engine) == 30


async def test_calls_the_daemon_logged_or_that_skipped_the_fallback_are_not_imported(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    rec = Recorder(engine, tmp_path / "spool")
    async with rec:
        rec.call_started(info("known"))  # the daemon shed it to the dialplan: it logged it
        rec.call_ended(info("known"), Outcome(OutcomeKind.SHED, None), T0)
    cdrs = [fallback_cdr("known"), fallback_cdr("leg", fallback="")]
    assert (
        await import_fallback_calls(engine, cdrs, privacy=CallerPrivacy(), flow_of=flow_of, now=NOW)
        == []
    )
    assert (await calls(engine))["known"][0] == "shed"
    assert set(await calls(engine)) == {"known"}


async def test_an_incoming_call_a_kill_lost_is_logged_from_its_cdr_once(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    # Found by the fault matrix (kill -9 under load): calls the daemon answered, whose
    # records had not reached the journal when it was killed, and whose callers hung up
    # before it came back, were in no log at all (their CDRs had no fallback to import).
    await logged(engine, tmp_path, Outcome(OutcomeKind.ABANDONED, None), "known")
    cdrs = [
        fallback_cdr("known", fallback="", entered=True),  # the daemon logged it
        fallback_cdr("left", fallback="", entered=True),  # the caller hung up in Stasis
        fallback_cdr("cut", fallback="", entered=True, hangup_by="pbx"),
        fallback_cdr("running", fallback="", entered=True, hangup_by=""),  # not over yet
    ]
    privacy = CallerPrivacy()
    window = (T0 - timedelta(minutes=1), NOW)  # around the killed run's end
    got = await import_fallback_calls(
        engine, cdrs, privacy=privacy, flow_of=flow_of, now=NOW, lost_window=window
    )
    assert sorted(got) == ["cut", "left"]
    again = await import_fallback_calls(
        engine, cdrs, privacy=privacy, flow_of=flow_of, now=NOW, lost_window=window
    )
    assert again == []
    log = await calls(engine)
    assert set(log) == {"known", "left", "cut"}
    # Lost, whoever hung up: the daemon was dead (a caller in its silence is no abandon).
    assert (log["left"][0], log["cut"][0], log["known"][0]) == ("lost", "lost", "abandoned")
    assert "lost at a crash" in log["left"][4] and "hung up by the caller" in log["left"][4]


async def test_a_call_asterisk_cut_before_the_daemon_took_it_is_logged_failed(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    # Found by the fault matrix (Asterisk restarted under load): a caller's channel was in
    # Stasis, its StasisStart not yet read, when Asterisk stopped: 603 to the caller, a CDR
    # (hung up by the pbx, FAILED), and no line in the log.
    await logged(engine, tmp_path, Outcome(OutcomeKind.ANSWERED, "desk"), "served")
    cut = {"fallback": "", "entered": True, "hangup_by": "pbx", "disposition": "FAILED"}
    cut["answer"] = None  # the daemon answers the calls it takes
    lost_at = T0 + timedelta(minutes=10)
    taken = {**cut, "answer": lost_at, "disposition": "ANSWERED", "start": lost_at}
    cdrs = [
        fallback_cdr("served", **cut),  # the daemon logged it: not imported again
        # Answered, so taken by a daemon (another's log, on the same Asterisk): not ours.
        fallback_cdr("answered", **taken),
        fallback_cdr("cut", **{**cut, "start": lost_at - timedelta(seconds=1)}),
        fallback_cdr("crash", **{**cut, "start": lost_at - timedelta(seconds=2)}),
        fallback_cdr("before", **{**cut, "start": lost_at - timedelta(minutes=5)}),
        fallback_cdr("after", **{**cut, "start": lost_at + timedelta(minutes=5)}),
        fallback_cdr("fallback", start=lost_at),  # the fallback's: imported as such
    ]
    cut_windows = [(lost_at - timedelta(seconds=30), lost_at + timedelta(seconds=20))]
    crash = (lost_at - timedelta(seconds=3), lost_at - timedelta(seconds=2))
    # Read once: an iterator of CDRs imports as a list does.
    got = await import_at_now(engine, iter(cdrs), lost_window=crash, cut_windows=cut_windows)
    assert sorted(got) == ["crash", "cut", "fallback"]
    log = await calls(engine)
    assert (log["cut"][0], log["crash"][0], log["fallback"][0]) == ("failed", "lost", "fallback")
    assert log["cut"][4].startswith("cut by the PBX before callflow took it")
    assert "hung up by the pbx (FAILED)" in log["cut"][4]
    assert log["served"][0] == "answered"
    # Outside every window, no such call is imported: without a window it is not either.
    assert "before" not in log and "after" not in log and "answered" not in log
    # A caller who hung up first was not cut by the PBX: the detail says what is known.
    left = fallback_cdr("left", **{**cut, "start": lost_at, "hangup_by": "caller"})
    assert await import_at_now(engine, [left], cut_windows=cut_windows) == ["left"]
    detail = (await calls(engine))["left"][4]
    assert detail.startswith("never reached callflow") and "hung up by the caller" in detail
    assert await import_at_now(engine, cdrs, cut_windows=cut_windows) == []


async def test_a_loss_of_asterisk_learned_after_its_cdrs_were_read_still_imports_them(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    # Asterisk writes the CDRs of the calls it cuts as it stops; the daemon may read them
    # a pass before its events websocket reports the drop.
    now = [NOW - timedelta(minutes=1)]  # the daemon's start
    cdr_path = tmp_path / "callflow-cdr.json"
    stop = NOW - timedelta(seconds=2)
    cut = {"callflow_hangup": "pbx", "disposition": "FAILED"}
    cdr_path.write_text(
        cdr_line("cut", start=stop.timestamp() - 1, end=stop.timestamp(), **cut)
        + cdr_line("old", start=stop.timestamp() - 600, end=stop.timestamp() - 590, **cut)
    )
    part = reading(engine, tmp_path, cdr_path, clock=lambda: now[0])
    now[0] = NOW
    async with part.recorder:
        await part.run_once()  # Asterisk not known lost yet: nothing to import
        assert part.imported == 0 and await calls(engine) == {}
        part.pbx_lost()  # at NOW
        now[0] = NOW + timedelta(seconds=2)
        await part.run_once()  # still running down: the window runs to now
        assert set(await calls(engine)) == {"cut"}
        now[0] = NOW + timedelta(seconds=5)
        part.pbx_back()
        assert part.cut_windows(NOW + timedelta(hours=1)) == [
            (NOW - CUT_MARGIN, NOW + timedelta(seconds=5))
        ]
        # A CDR is held no longer than CUT_HOLD, which outlasts CUT_MARGIN: a loss known
        # after its expiry could not have cut it (its window starts after the call).
        with cdr_path.open("a") as f:
            late = NOW + timedelta(seconds=70)
            f.write(cdr_line("late", start=late.timestamp(), end=late.timestamp() + 1))
            taken = {"answer": late.timestamp(), "disposition": "ANSWERED"}
            f.write(cdr_line("taken", start=late.timestamp(), end=late.timestamp() + 1, **taken))
        now[0] = late + timedelta(seconds=2)
        await part.run_once()
        assert "late" in part._cdrs  # held for a loss not known yet
        assert "taken" not in part._cdrs  # answered: taken by a daemon, never a cut call
        now[0] = late + timedelta(seconds=2) + CUT_HOLD
        await part.run_once()
        assert "late" not in part._cdrs and CUT_HOLD > CUT_MARGIN
        assert set(await calls(engine)) == {"cut"} and part.imported == 1


async def test_no_window_reaches_back_before_the_daemon_started(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    # An earlier run's calls are that run's: in its log, or the lost window's at a crash.
    now = [NOW]
    part = reading(engine, tmp_path, tmp_path / "none.json", clock=lambda: now[0])
    now[0] = NOW + timedelta(seconds=10)
    part.pbx_lost()
    now[0] = NOW + timedelta(seconds=20)
    assert part.cut_windows(now[0]) == [(NOW, now[0])]  # not NOW + 10 s - CUT_MARGIN
    part.pbx_back()
    part.pbx_back()  # said twice: the outage ends once
    assert part.cut_windows(NOW + timedelta(hours=1)) == [(NOW, NOW + timedelta(seconds=20))]


async def test_a_purged_call_is_not_brought_back_by_its_cdr(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    # Found in review: the CDR file outlives the calls the retention purge deletes; read
    # again at a restart, a purged call's CDR logged it anew, number in clear, "abandoned".
    old = T0 - timedelta(days=400)
    rec = Recorder(engine, tmp_path / "spool")
    async with rec:
        rec.call_started(info("old", started=old))
        rec.call_ended(info("old", started=old), Outcome(OutcomeKind.ANSWERED, "desk"), old)
        rec.call_started(info("recent"))
        rec.call_ended(info("recent"), Outcome(OutcomeKind.ANSWERED, "desk"), T0)
    assert (await purge(engine, NOW, 365)).calls == 1
    over = {"fallback": "", "entered": True, "disposition": "ANSWERED"}
    cdrs = [
        fallback_cdr("old", start=old, end=old + timedelta(minutes=2), **over),
        fallback_cdr("old-fallback", start=old, end=old + timedelta(minutes=2)),
        fallback_cdr("recent", **over),
    ]
    privacy = CallerPrivacy()
    got = await import_fallback_calls(
        engine,
        cdrs,
        privacy=privacy,
        flow_of=flow_of,
        now=NOW,
        not_before=NOW - timedelta(days=365),
        lost_window=(NOW - timedelta(minutes=1), NOW),  # a run that ended just now
    )
    assert got == []
    assert set(await calls(engine)) == {"recent"}
    # Without the retention bound, the old fallback call would be imported; without the
    # window, the purged one too: each bound is what keeps it out.
    assert await import_fallback_calls(
        engine, cdrs, privacy=privacy, flow_of=flow_of, now=NOW, lost_window=(old, NOW)
    ) == ["old", "old-fallback"]


async def test_the_lost_window_comes_from_the_previous_runs_last_sign_of_life(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    alive = tmp_path / "last-alive"
    cdr_path = tmp_path / "callflow-cdr.json"
    # Two calls the daemon never logged, not through the fallback: one a second before the
    # previous run's last sign of life (lost at its crash), one a day before (purged).
    killed = NOW - timedelta(minutes=5)
    cdr_path.write_text(
        cdr_line("lost-at-kill", start=killed.timestamp() - 1, end=killed.timestamp() + 9)
        + cdr_line("a-day-old", start=killed.timestamp() - 86400, end=killed.timestamp() - 86390)
    )

    def part() -> AfterCrash:
        return reading(
            engine,
            tmp_path,
            cdr_path,
            clock=lambda: NOW,
            alive_file=alive,
            retention=timedelta(days=365),
        )

    first = part()  # the first start ever: no mark, no window
    async with first.recorder:
        await first.start()
        await first.run_once()
    assert first.lost_window is None and first.imported == 0
    alive.touch()
    os.utime(alive, (killed.timestamp(), killed.timestamp()))
    second = part()
    async with second.recorder:
        await second.start()
        await second.run_once()
    assert second.lost_window == (killed - LOST_MARGIN, NOW)
    assert set(await calls(engine)) == {"lost-at-kill"}


async def test_a_pseudonymised_log_imports_no_number_in_clear(engine: AsyncEngine) -> None:
    privacy = CallerPrivacy(b"k" * 32)
    await import_fallback_calls(
        engine, [fallback_cdr("p.1")], privacy=privacy, flow_of=flow_of, now=NOW
    )
    caller = (await calls(engine))["p.1"][3]
    assert caller.startswith("hmac:") and "0612345678" not in caller


class Channels:
    """Asterisk's live channels as the after-crash part sees them."""

    def __init__(self, alive: Collection[str] | None) -> None:
        self.alive = alive

    async def __call__(self) -> Collection[str] | None:
        return self.alive


def reading(engine: AsyncEngine, tmp_path: Path, cdr_path: Path, **kwargs: Any) -> AfterCrash:
    """An after-crash part reading ``cdr_path``, no channel alive."""
    return AfterCrash(
        engine,
        Recorder(engine, tmp_path / "spool"),
        Channels(set()),
        cdr_file=CdrFile(cdr_path),
        privacy=CallerPrivacy(),
        flow_of=flow_of,
        **kwargs,
    )


def cdr_line(uid: str, **fields: Any) -> str:
    base: dict[str, Any] = {
        "uniqueid": uid,
        "linkedid": uid,
        "start": T0.timestamp(),
        "answer": 0.0,
        "end": (T0 + timedelta(seconds=20)).timestamp(),
        "src": "0612345678",
        "dst": "s",
        "disposition": "NO ANSWER",
        "callflow_dialed": "100",
        "callflow_fallback": "",
        "callflow_hangup": "caller",
    }
    return json.dumps({**base, **fields}) + "\n"


async def test_after_a_crash_every_open_call_is_closed_once_and_fallback_calls_imported(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    # A first daemon, killed: five calls started, none ended (one had reached the desk).
    crashed = Recorder(engine, tmp_path / "spool-a")
    async with crashed:
        for cid in ("gave-up", "rescued", "died", "vanished", "talking", "still-up"):
            crashed.call_started(info(cid))
            crashed.step(step(cid, 1, step="menu", kind=StepKind.MENU))
        crashed.step(
            step(
                "talking",
                2,
                step="desk",
                kind=StepKind.DIAL,
                result=StepResult.ANSWERED,
                destination="secretariat",
                outcome=OutcomeKind.ANSWERED,
            )
        )
        crashed.call_answered(
            CallAnswered(
                "talking", "cabinet", T0 + timedelta(seconds=8), "desk", "secretariat", None, None
            )
        )
    cdr_path = tmp_path / "callflow-cdr.json"
    cdr_path.write_text(
        cdr_line("gave-up")
        + cdr_line("rescued", callflow_fallback="secretariat=ANSWER", disposition="ANSWERED")
        + cdr_line("died", callflow_hangup="pbx")
        + cdr_line("talking", callflow_hangup="peer", disposition="ANSWERED")
        + cdr_line("unseen", callflow_fallback="secretariat=NOANSWER outside=ANSWER")
        # An ARI leg never runs the entry's hangup handler: no number dialled is set.
        + cdr_line("a-leg-of-a-call", callflow_hangup="peer", callflow_dialed="")
    )
    clock = [NOW]
    rec = Recorder(engine, tmp_path / "spool-b")
    channels = Channels({"still-up"})
    part = AfterCrash(
        engine,
        rec,
        channels,
        cdr_file=CdrFile(cdr_path),
        privacy=CallerPrivacy(),
        flow_of=flow_of,
        settle=5.0,
        clock=lambda: clock[0],
    )
    async with rec:
        await part.run_once()
        got = await calls(engine)
        assert {k: v[0] for k, v in got.items()} == {
            "gave-up": "lost",  # the caller hung up in the dead daemon's silence
            "rescued": "recovered",
            "died": "lost",
            "talking": "answered",
            "vanished": None,  # gone without a CDR: its CDR may be on its way
            "still-up": None,  # its channel lives: the call service has it
            "unseen": "fallback",
        }
        assert "secretariat=ANSWER" in got["rescued"][4]
        clock[0] = NOW + timedelta(seconds=6)
        channels.alive = set()
        await part.run_once()
        assert (await calls(engine))["vanished"][0] == "lost"
        assert part.open_left == 1  # still-up: gone only now, within settle
        with cdr_path.open("a") as f:
            f.write(cdr_line("still-up", callflow_hangup="caller"))
        await part.run_once()
        assert part.open_left == 0
        before = await calls(engine)
        assert before["still-up"][0] == "lost"
        for _ in range(2):  # nothing is logged twice, whatever runs again
            await part.run_once()
        part2 = AfterCrash(
            engine,
            rec,
            Channels(set()),
            cdr_file=CdrFile(cdr_path),
            privacy=CallerPrivacy(),
            flow_of=flow_of,
            clock=lambda: clock[0] + timedelta(hours=1),
        )
        await part2.run_once()
    assert await calls(engine) == before
    assert part.closed == 6 and part.imported == 1 and part2.imported == part2.closed == 0
    assert await imports(engine) == 6  # 5 closed from a CDR, 1 imported; "vanished" had none
    assert all(v[0] is not None for v in before.values())


async def test_a_cdr_file_the_daemon_cannot_read_stops_no_call_from_being_closed(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """A daemon's user left out of Asterisk's group: the calls a crash left open are closed
    all the same (from Asterisk's live channels), and the CDRs are read once they can be."""
    crashed = Recorder(engine, tmp_path / "spool-a")
    async with crashed:
        crashed.call_started(info("vanished"))
    cdr_path = tmp_path / "callflow-cdr.json"
    cdr_path.mkdir()  # a path that cannot be read as a file, even by root
    clock = [NOW]
    part = reading(engine, tmp_path, cdr_path, settle=5.0, clock=lambda: clock[0])
    cdr_file = part.cdr_file
    assert cdr_file is not None
    async with part.recorder:
        await part.run_once()
        assert cdr_file.problem is not None and str(cdr_path) in cdr_file.problem
        clock[0] = NOW + timedelta(seconds=6)
        await part.run_once()
        assert (await calls(engine))["vanished"][0] == "lost"
        assert part.open_left == 0
        cdr_path.rmdir()
        cdr_path.write_text(cdr_line("unseen", callflow_fallback="secretariat dial=ANSWER"))
        await part.run_once()
        assert cdr_file.problem is None
        assert (await calls(engine))["unseen"][0] == "fallback"


async def test_a_call_open_in_the_journal_only_is_closed_after_the_journal_is_fed(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """The spool is rarely empty: the part feeds it to the database before it looks."""
    spool = tmp_path / "spool"
    # The first daemon's database never answered: its records are only in its journal.
    nowhere = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'calls.db'}")
    crashed = Recorder(nowhere, spool, write_timeout=2.0)
    async with crashed:
        crashed.call_started(info("in-journal"))
    await nowhere.dispose()
    assert await calls(engine) == {}
    cdr_path = tmp_path / "cdr.json"
    cdr_path.write_text(cdr_line("in-journal"))
    rec = Recorder(engine, spool, flush_interval=3600.0)
    part = AfterCrash(
        engine,
        rec,
        Channels(set()),
        cdr_file=CdrFile(cdr_path),
        privacy=CallerPrivacy(),
        flow_of=flow_of,
        clock=lambda: datetime.now(UTC),
    )
    async with rec, part:
        await wait_for(lambda: part.open_left == 0)
    assert (await calls(engine))["in-journal"][0] == "lost"


async def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls the part's own state
            await asyncio.sleep(0.01)


async def test_a_call_rescued_after_a_crash_keeps_its_start_and_every_step(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """The rescue reports the call again (its start, its steps from RESCUE_SEQ on)."""
    crashed = Recorder(engine, tmp_path / "spool-a")
    async with crashed:
        crashed.call_started(info("r1"))
        crashed.step(step("r1", 1, step="menu", kind=StepKind.MENU))
    later = T0 + timedelta(minutes=2)
    rec = Recorder(engine, tmp_path / "spool-b")
    async with rec:
        rec.call_started(info("r1", started=later))
        rec.step(step("r1", RESCUE_SEQ + 1, at=later, step="menu", kind=StepKind.FALLBACK))
        rec.call_ended(
            info("r1", started=later),
            Outcome(OutcomeKind.RECOVERED, "menu", "secretariat"),
            later + timedelta(seconds=20),
        )
    async with engine.connect() as conn:
        row = (await conn.execute(select(Call.started, Call.outcome))).one()
        seqs = (await conn.execute(select(CallStep.seq).order_by(CallStep.seq))).scalars().all()
    assert (row.started, row.outcome) == (T0, "recovered")
    assert list(seqs) == [1, RESCUE_SEQ + 1]


async def test_a_node_closes_only_its_own_open_calls(engine: AsyncEngine, tmp_path: Path) -> None:
    """Two daemons on one database: node b's restart must not close node a's calls, which
    run on a's Asterisk (b cannot see them: to b they look gone)."""
    for node in ("a", "b"):
        rec = Recorder(engine, tmp_path / f"spool-{node}", node=node)
        async with rec:
            rec.call_started(info(f"{node}-open"))
    legacy = Recorder(engine, tmp_path / "spool-legacy")  # logged before nodes were
    async with legacy:
        legacy.call_started(info("untagged"))
    async with engine.connect() as conn:
        nodes = {r.id: r.node for r in await conn.execute(select(Call.id, Call.node))}
    assert nodes == {"a-open": "a", "b-open": "b", "untagged": None}
    rec_b = Recorder(engine, tmp_path / "spool-b", node="b")
    part_b = AfterCrash(
        engine,
        rec_b,
        Channels(set()),  # b's Asterisk has none of these channels
        cdr_file=None,
        privacy=CallerPrivacy(),
        flow_of=flow_of,
        settle=0.0,
        clock=lambda: NOW,
        node="b",
    )
    async with rec_b:
        for _ in range(2):  # first seen gone, then closed (settle 0)
            await part_b.run_once()
    got = {k: v[0] for k, v in (await calls(engine)).items()}
    assert got == {"a-open": None, "b-open": "lost", "untagged": "lost"}
    assert part_b.open_left == 0 and part_b.closed == 2


async def test_a_fallback_call_is_tagged_with_the_node_that_imported_it(
    engine: AsyncEngine,
) -> None:
    await import_fallback_calls(
        engine, [fallback_cdr("n.1")], privacy=CallerPrivacy(), flow_of=flow_of, now=NOW, node="b"
    )
    async with engine.connect() as conn:
        assert (await conn.execute(select(Call.node))).scalar_one() == "b"


async def fallbacks(engine: AsyncEngine) -> dict[str, tuple[str | None, str | None]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(Call.id, Call.fallback, Call.fallback_fate))
        return {r.id: (r.fallback, r.fallback_fate) for r in rows}


async def test_a_call_the_daemon_let_go_gets_what_the_fallback_did_from_its_cdr_once(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    # The daemon shed one call and handed another to the fallback (it could not go on);
    # it served a third itself.  Asterisk's CDRs then say what the fallback did.
    for cid, kind in (
        ("shed", OutcomeKind.SHED),
        ("handed", OutcomeKind.FAILED),
        ("served", OutcomeKind.ANSWERED),
    ):
        await logged(engine, tmp_path, Outcome(kind, None), cid)
    cdr_path = tmp_path / "callflow-cdr.json"
    cdr_path.write_text(
        # The patient talked with the secretariat, then hung up: Dial() never returned.
        cdr_line("shed", callflow_fallback="secretariat dial=ANSWER", disposition="ANSWERED")
        + cdr_line("handed", callflow_fallback="secretariat=NOANSWER outside dial=CANCEL")
        + cdr_line("served", disposition="ANSWERED")
        # Never seen by the daemon: imported, its fate with it (Asterisk stopped mid-hold).
        + cdr_line("unseen", callflow_fallback="shed", callflow_hangup="pbx")
    )
    part = reading(engine, tmp_path, cdr_path, clock=lambda: NOW)
    async with part.recorder:
        await part.run_once()
    assert await fallbacks(engine) == {
        "shed": ("secretariat dial=ANSWER", "secretariat"),
        "handed": ("secretariat=NOANSWER outside dial=CANCEL", "abandoned"),
        "served": (None, None),
        "unseen": ("shed", "cut"),
    }
    assert (part.followed, part.imported) == (2, 1)
    assert part.fates == {"secretariat": 1, "abandoned": 1, "cut": 1}  # the metric's counts
    assert (await calls(engine))["shed"][0] == "shed"  # the daemon's outcome stays
    # The CDR read again, or by a second daemon, even with another trace: written once.
    again = [fallback_cdr(c, fallback="secretariat=NOANSWER outside") for c in ("shed", "unseen")]
    assert await follow_fallbacks(engine, again) == []
    assert (await fallbacks(engine))["shed"] == ("secretariat dial=ANSWER", "secretariat")
    # A trace of a dialplan of the site's own is kept, its fate not guessed.
    await logged(engine, tmp_path, Outcome(OutcomeKind.SHED, None), "own")
    assert await follow_fallbacks(engine, [fallback_cdr("own", fallback="reception=BUSY")]) == [
        "own"
    ]
    assert (await fallbacks(engine))["own"] == ("reception=BUSY", None)


async def test_two_daemons_following_the_same_cdrs_write_and_count_each_call_once(
    database: Database, engine: AsyncEngine, tmp_path: Path
) -> None:
    await logged(engine, tmp_path, Outcome(OutcomeKind.SHED, None), *(f"s.{i}" for i in range(30)))
    cdrs = [
        fallback_cdr(f"s.{i}", fallback="secretariat dial=ANSWER" if i % 2 else "shed")
        for i in range(30)
    ]
    other = database.engine()
    try:
        results = await asyncio.gather(
            follow_fallbacks(engine, cdrs), follow_fallbacks(other, cdrs)
        )
    finally:
        await other.dispose()
    written = [i for r in results for i in r]
    assert sorted(written) == sorted(f"s.{i}" for i in range(30))  # none counted twice
    fates = await fallbacks(engine)
    assert fates["s.1"] == ("secretariat dial=ANSWER", "secretariat")
    assert fates["s.2"] == ("shed", "abandoned")


async def test_an_older_dialplans_cdr_leaves_the_fate_empty_and_says_why_once(
    engine: AsyncEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await logged(engine, tmp_path, Outcome(OutcomeKind.SHED, None), "old.1", "old.2")
    cdr_path = tmp_path / "callflow-cdr.json"
    # The handler of before this release: no Dial() status after a stage that rang.
    cdr_path.write_text(
        cdr_line("old.1", callflow_fallback="secretariat", callflow_hangup="peer")
        + cdr_line("old.2", callflow_fallback="secretariat=NOANSWER outside")
    )
    part = reading(engine, tmp_path, cdr_path, clock=lambda: NOW)
    async with part.recorder:
        await part.run_once()
    assert await fallbacks(engine) == {
        "old.1": ("secretariat", None),
        "old.2": ("secretariat=NOANSWER outside", None),
    }
    assert part.fates == {"unknown": 2}
    told = [r for r in caplog.records if "wrote no Dial() status" in r.getMessage()]
    assert len(told) == 1 and "dialplan reload" in told[0].getMessage()


async def test_a_voicemail_that_took_no_message_is_logged_as_missed_once(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    # A flow's voicemail step: the daemon logs "voicemail" at the hand-over, before the
    # caller leaves a message or hangs up in the greeting.  The CDRs then tell which.
    for cid in ("left", "greeting", "short", "old"):
        await logged(engine, tmp_path, Outcome(OutcomeKind.VOICEMAIL, "vm"), cid)
    async with Recorder(engine, tmp_path / "spool") as rec:  # the step that ended one
        rec.step(
            step(
                "greeting",
                1,
                step="vm",
                kind=StepKind.VOICEMAIL,
                result=StepResult.LEFT,
                outcome=OutcomeKind.VOICEMAIL,
            )
        )
    await logged(engine, tmp_path, Outcome(OutcomeKind.ANSWERED, None), "served")
    cdr_path = tmp_path / "callflow-cdr.json"
    cdr_path.write_text(
        cdr_line("left", callflow_voicemail="SUCCESS", disposition="ANSWERED")
        + cdr_line("greeting", callflow_voicemail="FAILED", disposition="ANSWERED")
        # The voicemail ended it (a message under minsecs, then goodbye): not the caller.
        + cdr_line("short", callflow_voicemail="FAILED", callflow_hangup="pbx")
        + cdr_line("old")  # a dialplan that writes no status: nothing is guessed
        # Not a voicemail call in the log: never written to, whatever its CDR says.
        + cdr_line("served", callflow_voicemail="NONE", disposition="ANSWERED")
    )
    told: list[str] = []  # the flows told to the metrics
    part = reading(engine, tmp_path, cdr_path, clock=lambda: NOW, on_no_message=told.append)
    async with part.recorder:
        await part.run_once()
    log = await calls(engine)
    assert {c: row[0] for c, row in log.items()} == {
        "left": "voicemail",
        "greeting": "abandoned",
        "short": "failed",
        "old": "voicemail",
        "served": "answered",
    }
    assert log["greeting"][4] is not None and "no message left" in log["greeting"][4]
    assert "FAILED" in log["greeting"][4] and "caller hung up" in log["greeting"][4]
    assert part.no_message == 2 and told == [log["greeting"][1], log["short"][1]]
    async with engine.connect() as conn:  # the step that ended it says the same
        ended = await conn.execute(select(CallStep.outcome).where(CallStep.call_id == "greeting"))
        assert ended.scalar_one() == "abandoned"
    # The CDRs read again, or by a second daemon: nothing written or counted twice.
    again = [fallback_cdr(c, fallback="", voicemail="FAILED") for c in ("greeting", "short")]
    assert await follow_voicemails(engine, again) == []
    assert (await calls(engine))["greeting"] == log["greeting"]


async def test_two_daemons_mending_the_same_voicemails_write_each_call_once(
    database: Database, engine: AsyncEngine, tmp_path: Path
) -> None:
    ids = [f"v.{i}" for i in range(20)]
    await logged(engine, tmp_path, Outcome(OutcomeKind.VOICEMAIL, "vm"), *ids)
    cdrs = [fallback_cdr(i, fallback="", voicemail="FAILED") for i in ids]
    other = database.engine()
    try:
        results = await asyncio.gather(
            follow_voicemails(engine, cdrs), follow_voicemails(other, cdrs)
        )
    finally:
        await other.dispose()
    assert sorted(i for r in results for i, _ in r) == sorted(ids)  # none counted twice
    details = [row[4] for row in (await calls(engine)).values()]
    assert all(d is not None and d.count("no message left") == 1 for d in details), details


async def test_a_voicemail_cdr_read_before_the_call_is_logged_mends_it_later(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    # The caller hung up in the greeting while the daemon's hand-over request was slow to
    # answer: the CDR is read before the daemon logs "voicemail".  It is kept a while.
    cdr_path = tmp_path / "callflow-cdr.json"
    answered = (T0 + timedelta(seconds=2)).timestamp()  # the daemon answers what it takes
    cdr_path.write_text(
        cdr_line("late", callflow_voicemail="FAILED", answer=answered, disposition="ANSWERED")
    )
    now = [T0 + timedelta(seconds=25)]  # the CDR ended at T0 + 20 s
    part = reading(engine, tmp_path, cdr_path, clock=lambda: now[0])
    async with part.recorder:
        await part.run_once()
        assert part.no_message == 0  # no such call in the log yet
        # Logged by the daemon (its own recorder: the part's holds the spool).
        await logged(engine, tmp_path / "daemon", Outcome(OutcomeKind.VOICEMAIL, "vm"), "late")
        await part.run_once()
        assert (await calls(engine))["late"][0] == "abandoned"
        assert part.no_message == 1
        # Past CUT_HOLD the CDR is let go: a pass then has nothing left to mend.
        now[0] += CUT_HOLD + timedelta(seconds=30)
        await part.run_once()
    assert part._cdrs == {}


async def test_an_older_dialplans_voicemail_cdr_is_told_once(
    engine: AsyncEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await logged(engine, tmp_path, Outcome(OutcomeKind.VOICEMAIL, "vm"), "vm.1", "vm.2")
    cdr_path = tmp_path / "callflow-cdr.json"
    before = {"start": (T0 - timedelta(minutes=11)).timestamp()}
    before["end"] = (T0 - timedelta(minutes=10)).timestamp()
    cdr_path.write_text(  # reached the voicemail; no [callflow-voicemail-status] ran
        # Of before this run (the file is read from its start): an older dialplan's, fine.
        cdr_line("vm.0", dcontext="callflow-voicemail", **before)
        + cdr_line("vm.1", dcontext="callflow-voicemail")
        + cdr_line("vm.2", dcontext="callflow-voicemail")
    )
    now = [T0]  # the daemon started at T0
    part = reading(engine, tmp_path, cdr_path, clock=lambda: now[0])
    now[0] = NOW
    async with part.recorder:
        await part.run_once()
    assert {c: row[0] for c, row in (await calls(engine)).items()} == {
        "vm.1": "voicemail",  # nothing is guessed
        "vm.2": "voicemail",
    }
    told = [r for r in caplog.records if "[callflow-voicemail-status]" in r.getMessage()]
    assert len(told) == 1 and "vm.1" in told[0].getMessage()
