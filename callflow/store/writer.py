"""Writing records to the call log: idempotent upserts keyed by natural keys.

A *record* is a small JSON-ready dict (``{"t": "step", ...}``, times as ISO 8601 strings):
the form a record takes in memory, in the spool and in a replay.  ``write_records`` writes a
batch of them in one transaction, and writing the same batch twice (a replay after a crash
in the middle of a replay, a write that timed out but committed) leaves the database as
after the first time:

* a call is upserted by ``id``: its start fields are (re)set (but ``started`` keeps the
  earliest: a call rescued after a crash is reported again), its end fields are set when
  the record carries them and never cleared (``COALESCE``), so replaying a start after an
  end changes nothing;
* an answer sets the call's ``answered`` time unless one is there already (the first
  person to take the call);
* a step, a callback request, a trunk event, an admin action are inserted unless their
  natural key is already there (``ON CONFLICT DO NOTHING``): a callback marked done in
  the meantime stays done.

A step whose call row is missing (its start record was lost, e.g. a damaged spool line)
gets a placeholder call row (empty caller, version and number) that the call's end record
fills in, so one lost line never blocks the rest.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Dialect, Table, bindparam, case, func, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from .models import (
    OUTCOMES,
    AdminAction,
    Call,
    CallbackRequestRow,
    CallStep,
    TrunkEvent,
    UTCDateTime,
)

CALL_START = ("id", "flow", "flow_version", "dialed", "caller", "started", "driver", "node")
# Records journaled before the driver was recorded came from the only driver there was.
DEFAULT_DRIVER = "ari"
CALL_END = ("answered", "ended", "outcome", "tier", "destination", "trunk", "end_step", "detail")
STEP = ("call_id", "seq", "at", "step", "kind", "result", "detail", "next", "duration")
# A step's typed fields; optional, so that records spooled by an older version replay.
STEP_FIELDS = (
    "key",
    "attempt",
    "destination",
    "trunk",
    "tier",
    "dial_status",
    "outcome",
    "score",
    "scale",
)
CALLBACK = ("call_id", "flow", "queue", "priority", "tier", "caller", "created")
TRUNK = ("trunk", "state", "rtt_ms", "at", "node")
AUDIT = ("id", "at", "who", "action", "detail")
TIMES = frozenset({"started", "answered", "ended", "at", "created"})
KINDS = ("call", "answered", "end", "step", "callback", "trunk", "audit")


def _time(value: Any) -> datetime:
    if isinstance(value, datetime):
        t = value
    elif isinstance(value, str):
        t = datetime.fromisoformat(value)
    else:
        raise TypeError(f"not a time: {value!r}")
    if t.tzinfo is None:
        raise ValueError(f"time without a time zone: {value!r}")
    return t


#: How to read one kind of record: (field, is a time, may be missing) for each field.
_Spec = tuple[tuple[str, bool, bool], ...]
_MISSING = object()


def _spec(names: tuple[str, ...], optional: tuple[str, ...] = ()) -> _Spec:
    return tuple((name, name in TIMES, name in optional) for name in names)


def _fields(rec: dict[str, Any], spec: _Spec) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name, is_time, optional in spec:
        value = rec.get(name, _MISSING)
        if value is _MISSING:
            if optional:
                row[name] = None
                continue
            raise KeyError(f"record {rec.get('t')!r} lacks {name!r}")
        if is_time and value is not None:
            value = _time(value)
        row[name] = value
    return row


_START = _spec(CALL_START, optional=("driver", "node"))
_END = _spec(CALL_END, optional=("answered",))
_ANSWER = _spec(("id", "answered"))
_STEP = _spec(STEP + STEP_FIELDS, optional=STEP_FIELDS)
_CALLBACK = _spec(CALLBACK)
_TRUNK = _spec(TRUNK, optional=("node",))
_AUDIT = _spec(AUDIT)


def check_record(rec: dict[str, Any]) -> None:
    """Raise ``ValueError`` when ``rec`` cannot be written (unknown kind, missing field)."""
    try:
        _rows_of([rec])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from None


class _Rows:
    def __init__(self) -> None:
        self.calls: dict[str, dict[str, Any]] = {}
        self.answers: dict[str, datetime] = {}  # call → first answer
        self.placeholders: dict[str, dict[str, Any]] = {}
        self.steps: dict[tuple[str, int], dict[str, Any]] = {}
        self.callbacks: dict[tuple[str, datetime], dict[str, Any]] = {}
        self.trunks: dict[tuple[str, datetime, str], dict[str, Any]] = {}
        self.audits: dict[str, dict[str, Any]] = {}


def _rows_of(records: Iterable[dict[str, Any]], node: str | None = None) -> _Rows:
    rows = _Rows()
    for rec in records:
        kind = rec.get("t")
        if kind == "call" or kind == "end":
            start = _fields(rec, _START)
            start["driver"] = start["driver"] or DEFAULT_DRIVER
            start["node"] = start["node"] or node
            row = rows.calls.get(start["id"])
            if row is None:
                row = rows.calls[start["id"]] = dict.fromkeys(CALL_END)
            row.update(start)
            if kind == "end":
                # ``answered`` is its own record now; an older version's end carried it.
                end = _fields(rec, _END)
                if end["outcome"] not in OUTCOMES:
                    raise ValueError(f"unknown outcome {end['outcome']!r}")
                if end["answered"] is None:
                    del end["answered"]
                row.update(end)
        elif kind == "answered":
            ans = _fields(rec, _ANSWER)
            if ans["answered"] is None:
                raise ValueError("an answer without a time")
            rows.answers.setdefault(ans["id"], ans["answered"])
            if ans["id"] in rows.calls and rows.calls[ans["id"]]["answered"] is None:
                rows.calls[ans["id"]]["answered"] = ans["answered"]
        elif kind == "step":
            step = _fields(rec, _STEP)
            rows.steps[(step["call_id"], int(step["seq"]))] = step
            rows.placeholders.setdefault(
                step["call_id"],
                {
                    "id": step["call_id"],
                    "flow": str(rec.get("flow", "")),
                    "flow_version": "",
                    "dialed": "",
                    "caller": "",
                    "started": step["at"],
                    "driver": DEFAULT_DRIVER,  # until the call's own record says
                    "node": node,
                },
            )
        elif kind == "callback":
            cb = _fields(rec, _CALLBACK)
            rows.callbacks[(cb["call_id"], cb["created"])] = cb
        elif kind == "trunk":
            tr = _fields(rec, _TRUNK)
            tr["node"] = tr["node"] or node or ""
            rows.trunks[(tr["trunk"], tr["at"], tr["node"])] = tr
        elif kind == "audit":
            au = _fields(rec, _AUDIT)
            if not isinstance(au["detail"], dict):
                raise TypeError("audit detail must be an object")
            rows.audits[au["id"]] = au
        else:
            raise ValueError(f"unknown record kind {kind!r}")
    return rows


InsertFn = Callable[[Table], Any]

CALLS = cast(Table, Call.__table__)
STEPS = cast(Table, CallStep.__table__)
CALLBACKS = cast(Table, CallbackRequestRow.__table__)
TRUNK_EVENTS = cast(Table, TrunkEvent.__table__)
ADMIN_ACTIONS = cast(Table, AdminAction.__table__)


@dataclass(frozen=True)
class _Statements:
    """The upserts of one dialect, built once: building them (``excluded`` makes a proxy
    of every column) cost more than executing them for a batch of a few calls, and a
    statement used again keeps SQLAlchemy's cache key and compiled form."""

    call: Any
    answer: Any
    ignore: dict[str, Any]  # table name -> INSERT ... ON CONFLICT DO NOTHING


@functools.cache
def _statements(dialect: str) -> _Statements:
    insert: InsertFn
    if dialect == "postgresql":
        insert = postgresql.insert
    elif dialect == "sqlite":
        insert = sqlite.insert
    else:
        raise NotImplementedError(f"the call log supports SQLite and PostgreSQL, not {dialect}")
    table = CALLS
    call = insert(table)
    keep = {c: func.coalesce(call.excluded[c], table.c[c]) for c in CALL_END}
    fresh: dict[str, Any] = {c: call.excluded[c] for c in CALL_START if c != "id"}
    fresh["node"] = func.coalesce(call.excluded.node, table.c.node)
    # A call keeps its first start: a rescue after a crash reports the call again.
    fresh["started"] = case(
        (table.c.started < call.excluded.started, table.c.started),
        else_=call.excluded.started,
    )
    # The call's row is there: its start record is always queued before its answer.
    answer = (
        update(CALLS)
        .where(CALLS.c.id == bindparam("call_id"))
        # Typed: untyped, an answer in a later batch than its call was stored as the
        # driver's own text of an aware time ("...+00:00"), not as every other time.
        .values(answered=func.coalesce(CALLS.c.answered, bindparam("at", type_=UTCDateTime())))
    )
    return _Statements(
        call.on_conflict_do_update(index_elements=["id"], set_={**fresh, **keep}),
        answer,
        {
            t.name: insert(t).on_conflict_do_nothing()
            for t in (CALLS, STEPS, CALLBACKS, TRUNK_EVENTS, ADMIN_ACTIONS)
        },
    )


def _sqlite_time(value: datetime | None) -> str | None:
    """What SQLAlchemy's SQLite ``DATETIME`` stores for ``UTCDateTime`` (naive UTC,
    ``YYYY-MM-DD HH:MM:SS.ffffff``), in one C call instead of two Python layers."""
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _pg_time(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


@dataclass(frozen=True)
class _Prepared:
    """A hot statement compiled once for a connection's dialect, executed on the driver
    with rows as tuples: SQLAlchemy's per-row work (building each row's parameters and
    running ``UTCDateTime`` then the dialect's own datetime processor on each time) cost
    more than the database's own.  ``convert``: per parameter, None or what binds it."""

    sql: str
    keys: tuple[str, ...]
    convert: tuple[Callable[[Any], Any] | None, ...]

    def params(self, rows: Iterable[dict[str, Any]]) -> list[tuple[Any, ...]]:
        pairs = tuple(zip(self.keys, self.convert, strict=True))
        return [tuple([row[k] if c is None else c(row[k]) for k, c in pairs]) for row in rows]


def _prepare(stmt: Any, keys: Sequence[str], dialect: Dialect) -> _Prepared:
    compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
    names = tuple(compiled.positiontup or ())
    if set(names) != set(keys):  # the statement binds something else: not for this path
        raise AssertionError(f"statement binds {names}, rows have {tuple(keys)}")
    to_time = _sqlite_time if dialect.name == "sqlite" else _pg_time
    convert: list[Callable[[Any], Any] | None] = []
    for name in names:
        type_ = compiled.binds[name].type
        if isinstance(type_, UTCDateTime):
            convert.append(to_time)
        else:  # whatever SQLAlchemy would run on it (none for text and numbers)
            convert.append(type_.dialect_impl(dialect).bind_processor(dialect))
    return _Prepared(compiled.string, names, tuple(convert))


@dataclass(frozen=True)
class _Hot:
    call: _Prepared
    answer: _Prepared
    step: _Prepared


_HOT: weakref.WeakKeyDictionary[Dialect, _Hot] = weakref.WeakKeyDictionary()


def _hot(dialect: Dialect) -> _Hot:
    """The statements of every call (its row, its answer, its steps) for ``dialect``."""
    hot = _HOT.get(dialect)
    if hot is None:
        stmts = _statements(dialect.name)
        hot = _HOT[dialect] = _Hot(
            _prepare(stmts.call, CALL_START + CALL_END, dialect),
            _prepare(stmts.answer, ("call_id", "at"), dialect),
            _prepare(stmts.ignore[STEPS.name], STEP + STEP_FIELDS, dialect),
        )
    return hot


async def write_records(
    conn: AsyncConnection, records: Iterable[dict[str, Any]], *, node: str | None = None
) -> None:
    """Write ``records`` (in the caller's transaction); safe to repeat.  ``node``: the node
    of calls and trunk changes whose record does not say (journaled by an older version)."""
    rows = _rows_of(records, node)
    stmts = _statements(conn.dialect.name)
    hot = _hot(conn.dialect)
    if rows.calls:
        await conn.exec_driver_sql(hot.call.sql, hot.call.params(rows.calls.values()))
    if rows.answers:
        answers = [{"call_id": k, "at": v} for k, v in rows.answers.items()]
        await conn.exec_driver_sql(hot.answer.sql, hot.answer.params(answers))
    missing = [p for cid, p in rows.placeholders.items() if cid not in rows.calls]
    if missing:
        await conn.execute(stmts.ignore[CALLS.name], missing)
    if rows.steps:
        await conn.exec_driver_sql(hot.step.sql, hot.step.params(rows.steps.values()))
    for table_rows, table in (
        (list(rows.callbacks.values()), CALLBACKS),
        (list(rows.trunks.values()), TRUNK_EVENTS),
        (list(rows.audits.values()), ADMIN_ACTIONS),
    ):
        if table_rows:
            await conn.execute(stmts.ignore[table.name], table_rows)


__all__ = ["KINDS", "check_record", "write_records"]
