"""Asterisk's call records into the call log, each exactly once.

* ``import_fallback_calls``: a call the dialplan fallback handled while the daemon never saw
  it (its CDR carries ``callflow_fallback``, its uniqueid is not in ``calls``) becomes a
  call with outcome ``fallback`` and what the dialplan did.  The call row is keyed by the
  uniqueid and ``cdr_imports`` by the same: reading the file again, a restart, or a second
  daemon on the same database, import nothing twice.
  An incoming call that did not go through the fallback, is over (its hangup handler
  ran) and is not in ``calls`` either was the daemon's, whose records a kill caught before
  they reached the journal (the last ``commit_interval``): it is logged from its CDR as
  ``lost`` (whoever hung up, the daemon was dead: nobody served it), so that no call is
  missing.  One that started around a time the daemon lost Asterisk (``cut_windows``:
  Asterisk stopped or restarted, or the events websocket dropped) was cut by the PBX before
  the daemon took it (Asterisk ends an unanswered channel in Stasis at its stop, and the
  event announcing it may never reach the daemon): it is logged ``failed``, saying so.
* ``follow_fallbacks``: a call the daemon logged and then let go to the dialplan fallback
  (shed, or handed over when the daemon could not go on) gets what the fallback did and
  where it left the call (``calls.fallback``, ``calls.fallback_fate``) from its CDR, once:
  only a call without them is written to.
* ``follow_voicemails``: a call the daemon logged ``voicemail`` (a flow's voicemail step
  handed it to the dialplan's voicemail) whose CDR says no message was left becomes
  ``abandoned`` (the caller hung up in the greeting) or ``failed`` (the voicemail ended it
  without a message), once: only a call still ``voicemail`` is written to.
* ``open_calls`` / ``close_calls``: the calls a crash left open, and their closing
  (``reconcile.py``), written only to a call still open, so nothing is closed twice.

Call these only after the journal was fed to the database (``Recorder.flush``): a call the
daemon logged must be in ``calls`` before its CDR is looked at.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from enum import Enum
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, and_, bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..flow.events import OutcomeKind
from .cdr import CdrCall
from .models import Call, CallStep, CdrImport
from .privacy import CallerPrivacy
from .reconcile import Closing, OpenCall

CALLS = cast(Table, Call.__table__)
STEPS = cast(Table, CallStep.__table__)
IMPORTS = cast(Table, CdrImport.__table__)
_CHUNK = 500  # ids per IN (...) query

#: The flow a dialled number enters (the daemon's flow set), "" for none.
FlowOf = Callable[[str], str]


def _insert(conn: AsyncConnection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


async def known_calls(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, str | None]:
    """The outcome (None: open) of each of ``ids`` that is in the call log."""
    out: dict[str, str | None] = {}
    for chunk in _chunks(ids):
        rows = await conn.execute(select(Call.id, Call.outcome).where(Call.id.in_(chunk)))
        out.update({r.id: r.outcome for r in rows})
    return out


async def import_fallback_calls(
    engine: AsyncEngine,
    cdrs: Iterable[CdrCall],
    *,
    privacy: CallerPrivacy,
    flow_of: FlowOf,
    now: datetime,
    node: str | None = None,
    not_before: datetime | None = None,
    lost_window: tuple[datetime, datetime] | None = None,
    cut_windows: Sequence[tuple[datetime, datetime]] = (),
) -> list[str]:
    """Log every call of ``cdrs`` missing from the call log: with outcome ``fallback`` when
    it went through the dialplan fallback, else (an incoming call that is over) as the
    daemon's crash left it (``lost``); returns the ids logged by this call.

    No call that started before ``not_before`` (the retention cutoff: the purge removed
    the calls older than that, and a CDR file outlives them) is imported.  A call without
    the fallback is imported only when it started within ``lost_window`` (the moments
    around the previous run's end, when a crash could lose its records; None: none is):
    any other such call missing from the log was logged by the daemon and purged since,
    or the database was restored from a backup, and its CDR alone would log it falsely.
    Likewise one never answered that started within one of ``cut_windows`` (the moments
    around a loss of Asterisk: the PBX cut it before the daemon could take it) is imported
    ``failed``."""

    def why(c: CdrCall) -> _Why | None:
        if not_before is not None and c.start < not_before:
            return None
        if c.went_to_fallback:
            return _Why.FALLBACK
        if not c.over:
            return None
        if lost_window is not None and lost_window[0] <= c.start <= lost_window[1]:
            return _Why.CRASH
        # Never answered: the daemon answers the calls it takes, so one that was answered
        # was taken (and logged) by a daemon, maybe another's on the same Asterisk.
        if c.answer is None and any(lo <= c.start <= hi for lo, hi in cut_windows):
            return _Why.CUT
        return None

    # One pass: ``cdrs`` may be an iterator.
    whys: dict[str, _Why] = {}
    picked: dict[str, CdrCall] = {}
    for c in cdrs:
        if (w := why(c)) is not None:
            whys[c.uniqueid], picked[c.uniqueid] = w, c
    if not picked:
        return []
    async with engine.begin() as conn:
        ids = sorted(picked)
        known = await known_calls(conn, ids)
        taken: set[str] = set()
        for chunk in _chunks(ids):
            rows = await conn.execute(
                select(CdrImport.uniqueid).where(CdrImport.uniqueid.in_(chunk))
            )
            taken.update(r.uniqueid for r in rows)
        new = [picked[i] for i in ids if i not in known and i not in taken]
        if not new:
            return []
        insert = _insert(conn)
        # Claim the CDRs first: of two daemons importing at once, the second waits for the
        # first's commit, then claims nothing (RETURNING gives only the rows inserted here).
        claimed = await conn.execute(
            insert(IMPORTS).on_conflict_do_nothing().returning(IMPORTS.c.uniqueid),
            [_import_row(c, "imported", now) for c in new],
        )
        mine = {r.uniqueid for r in claimed}
        new = [c for c in new if c.uniqueid in mine]
        if not new:
            return []
        calls = [
            {
                "id": c.uniqueid,
                "flow": flow_of(c.dialed),
                "flow_version": "",
                "dialed": c.dialed,
                "caller": privacy.protect(c.caller),
                "started": c.start,
                "answered": c.answer if c.disposition == "ANSWERED" else None,
                "ended": c.end,
                "outcome": str(whys[c.uniqueid].value),
                "end_step": None,
                "detail": _detail(c, whys[c.uniqueid]),
                "node": node,  # the node whose Asterisk wrote the CDR
                **_fallback_of(c),
            }
            for c in new
        ]
        await conn.execute(insert(CALLS).on_conflict_do_nothing(), calls)
    return [c.uniqueid for c in new]


def _fallback_of(c: CdrCall) -> dict[str, str | None]:
    """The call log's fallback columns for ``c`` (both None: it did not go there)."""
    fate = c.fate
    return {
        "fallback": c.fallback or None,
        "fallback_fate": None if fate is None else str(fate),
    }


async def follow_fallbacks(engine: AsyncEngine, cdrs: Iterable[CdrCall]) -> list[str]:
    """Write what the dialplan fallback did to each call of the log that went there and
    has nothing of it yet (the daemon shed it, or handed it over); returns the ids written.

    Only a call without a trace is written to, and only the rows this call changed are
    returned: reading a CDR again, or another daemon on the same database doing the same
    at the same time, writes and counts nothing twice."""
    went: dict[tuple[str | None, str | None], list[str]] = defaultdict(list)
    for c in cdrs:
        if c.went_to_fallback:
            cols = _fallback_of(c)
            went[(cols["fallback"], cols["fallback_fate"])].append(c.uniqueid)
    written: list[str] = []
    if not went:
        return written
    async with engine.begin() as conn:
        for (trace, fate), ids in went.items():
            for chunk in _chunks(sorted(ids)):
                rows = await conn.execute(
                    update(CALLS)
                    .where(CALLS.c.id.in_(chunk), CALLS.c.fallback.is_(None))
                    .values(fallback=trace, fallback_fate=fate)
                    .returning(CALLS.c.id)
                )
                written += [r.id for r in rows]
    return written


VOICEMAIL = str(OutcomeKind.VOICEMAIL)
_HUNG_UP = {
    "caller": "the caller hung up",
    "pbx": "ended by the PBX",
    "peer": "ended by the PBX",
    "": "who hung up is not recorded",
}


def _no_message(c: CdrCall) -> tuple[str, str]:
    """The outcome and the words of a call whose voicemail took no message: a caller who
    left (or, unrecorded, most likely did) abandoned it; the PBX ending it, failed."""
    ended = c.hangup_by in ("pbx", "peer")
    kind = OutcomeKind.FAILED if ended else OutcomeKind.ABANDONED
    who = _HUNG_UP.get(c.hangup_by, _HUNG_UP[""])
    return str(kind), f"no message left in the voicemail ({c.voicemail}; {who}; from its CDR)"


class Mended(NamedTuple):
    """A call ``follow_voicemails`` wrote to, and its flow (for the metrics)."""

    call_id: str
    flow: str


async def follow_voicemails(engine: AsyncEngine, cdrs: Iterable[CdrCall]) -> list[Mended]:
    """Mend the calls of the log that ended ``voicemail`` but left no message, as their
    CDRs say (``CdrCall.message_left``); returns the calls written.  The step that ended
    the call says the same outcome (``call_steps.outcome``).

    The daemon logs ``voicemail`` when it hands the caller over, before the caller either
    leaves a message or hangs up in the greeting: the second reached nobody and counts as
    missed.  Only a call still ``voicemail`` is written to (its detail gets the reason): a
    CDR read again, or by another daemon on the same database, changes nothing twice."""
    by_end: dict[tuple[str, str], list[str]] = defaultdict(list)
    for c in cdrs:
        if c.message_left is False:
            by_end[_no_message(c)].append(c.uniqueid)
    written: list[Mended] = []
    if not by_end:
        return written
    async with engine.begin() as conn:
        for (outcome, why), ids in by_end.items():
            detail = func.coalesce(CALLS.c.detail + "; ", "") + why
            for chunk in _chunks(sorted(ids)):
                rows = await conn.execute(
                    update(CALLS)
                    .where(CALLS.c.id.in_(chunk), CALLS.c.outcome == VOICEMAIL)
                    .values(outcome=outcome, detail=detail)
                    .returning(CALLS.c.id, CALLS.c.flow)
                )
                mine = [Mended(r.id, r.flow) for r in rows]
                if mine:  # the rows this transaction changed, and their ending steps
                    await conn.execute(
                        update(STEPS)
                        .where(
                            STEPS.c.call_id.in_([m.call_id for m in mine]),
                            STEPS.c.outcome == VOICEMAIL,
                        )
                        .values(outcome=outcome)
                    )
                written += mine
    return written


class _Why(Enum):
    """Why a call missing from the log is imported from its CDR; its value, the outcome."""

    FALLBACK = OutcomeKind.FALLBACK  # the dialplan fallback handled it alone
    CRASH = OutcomeKind.LOST  # taken, then the daemon died: whoever hung up, nobody served it
    CUT = OutcomeKind.FAILED  # Asterisk ended it before the daemon took it: never a hangup


def _detail(c: CdrCall, why: _Why) -> str:
    if why is _Why.FALLBACK:
        return f"the daemon never saw this call; {c.fallback_detail()}"
    cdr = f"from Asterisk's CDR: hung up by the {c.hangup_by} ({c.disposition or '?'})"
    if why is _Why.CRASH:
        return f"not in the daemon's log (its records were lost at a crash); {cdr}"
    # The PBX hung it up (Asterisk stopping); a caller who hung up first was not cut, but
    # was not served either: the daemon never had the call.
    what = (
        "cut by the PBX before callflow took it"
        if c.hangup_by == "pbx"
        else "never reached callflow"
    )
    return (
        f"{what} (while callflow had lost Asterisk: it stopped or restarted, or the "
        f"connection dropped); {cdr}"
    )


def _import_row(c: CdrCall, action: str, now: datetime) -> dict[str, Any]:
    return {
        "uniqueid": c.uniqueid,
        "linkedid": c.linkedid,
        "call_id": c.uniqueid,
        "action": action,
        "at": now,
    }


async def open_calls(
    engine: AsyncEngine,
    started_before: datetime,
    node: str | None = None,
    *,
    untagged: bool = True,
) -> list[OpenCall]:
    """The calls without an end that started before ``started_before`` (this daemon's
    start: later ones are its own, running now), with what their steps had reached.

    With ``node``, only that node's calls (and, unless ``untagged`` is False, untagged ones,
    logged before nodes were): another node's open call is running on that node's Asterisk,
    which this daemon cannot see, and is that node's to close."""
    query = select(Call.id, Call.started, Call.answered).where(
        Call.outcome.is_(None), Call.started < started_before
    )
    if node is not None:
        mine = Call.node == node
        query = query.where(or_(mine, Call.node.is_(None)) if untagged else mine)
    async with engine.connect() as conn:
        calls = (await conn.execute(query)).all()
        ids = [c.id for c in calls]
        last_step: dict[str, str] = {}
        reached: dict[str, tuple[str, str | None]] = {}
        for chunk in _chunks(ids):
            rows = await conn.execute(
                select(CallStep.call_id, CallStep.step, CallStep.outcome, CallStep.destination)
                .where(CallStep.call_id.in_(chunk))
                .order_by(CallStep.call_id, CallStep.seq)
            )
            for r in rows:
                last_step[r.call_id] = r.step
                if r.outcome is not None and r.outcome in _REACHED:
                    reached[r.call_id] = (r.outcome, r.destination)
    out = []
    for c in calls:
        kind, dest = reached.get(c.id, (None, None))
        out.append(
            OpenCall(
                id=c.id,
                started=c.started,
                step=last_step.get(c.id),
                answered=c.answered,
                reached=None if kind is None else OutcomeKind(kind),
                destination=dest,
            )
        )
    return out


# A step's outcome that means someone of the practice had taken the call.
_REACHED = frozenset(
    str(k) for k in (OutcomeKind.ANSWERED, OutcomeKind.FORWARDED, OutcomeKind.EMERGENCY)
)


async def close_calls(
    engine: AsyncEngine, closings: Sequence[Closing], cdrs: dict[str, CdrCall], now: datetime
) -> list[str]:
    """Write each closing to its call if the call is still open; returns the ids closed."""
    if not closings:
        return []
    closed: list[str] = []
    stmt = (
        update(CALLS)
        .where(and_(CALLS.c.id == bindparam("call_id"), CALLS.c.outcome.is_(None)))
        .values(
            outcome=bindparam("outcome"),
            ended=bindparam("ended"),
            detail=bindparam("detail"),
            answered=func.coalesce(CALLS.c.answered, bindparam("answered")),
            destination=func.coalesce(CALLS.c.destination, bindparam("destination")),
            end_step=func.coalesce(CALLS.c.end_step, bindparam("step")),
        )
    )
    async with engine.begin() as conn:
        insert = _insert(conn)
        for c in closings:
            params = {
                "call_id": c.call_id,
                "outcome": str(c.outcome),
                "ended": c.ended,
                "detail": c.detail,
                "answered": c.answered,
                "destination": c.destination,
                "step": c.step,
            }
            result = await conn.execute(stmt, params)
            if result.rowcount != 1:
                continue  # closed meanwhile (its own end came): not ours to close
            closed.append(c.call_id)
            cdr = cdrs.get(c.call_id)
            if cdr is not None:
                await conn.execute(
                    insert(IMPORTS).on_conflict_do_nothing(), [_import_row(cdr, "closed", now)]
                )
    return closed


__all__ = [
    "FlowOf",
    "close_calls",
    "follow_fallbacks",
    "import_fallback_calls",
    "known_calls",
    "open_calls",
]
