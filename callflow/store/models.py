"""The call log's tables (SQLAlchemy 2).  The migrations in ``store/migrations/`` create them.

Every time is stored in UTC.  PostgreSQL keeps ``timestamptz``; SQLite has no time zone type
and gives back naive values: ``UTCDateTime`` writes UTC and reads back aware UTC datetimes on
both.

Natural keys make every write an idempotent upsert, so that a replay (of the spool, after a
crash in the middle of a replay) never duplicates a row: a call is keyed by the engine's
``call_id``, a step by ``(call_id, seq)``, a callback request by ``(call_id, created)``, a
trunk state change by ``(trunk, at, node)``, an admin action by an id chosen when it is recorded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ..drills import DrillMode
from ..flow.events import OutcomeKind
from .cdr import FallbackFate

OUTCOMES: tuple[str, ...] = tuple(k.value for k in OutcomeKind)
FALLBACK_FATES: tuple[str, ...] = tuple(f.value for f in FallbackFate)
CALLBACK_STATUSES: tuple[str, ...] = ("pending", "done", "cancelled")


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime, stored in UTC; naive values read back (SQLite) are UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # a raw SQLite value (e.g. from a text() query)
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Call(Base):
    """One call: who called what, how the flow handled it, how it ended."""

    __tablename__ = "calls"

    id: Mapped[str] = mapped_column(String, primary_key=True)  # the engine's call_id
    flow: Mapped[str] = mapped_column(String)
    flow_version: Mapped[str] = mapped_column(String)
    dialed: Mapped[str] = mapped_column(String)
    # The caller's number in clear, or "hmac:<hex>" when pseudonymised ([privacy]).
    caller: Mapped[str] = mapped_column(String)
    started: Mapped[datetime] = mapped_column(UTCDateTime)
    answered: Mapped[datetime | None] = mapped_column(UTCDateTime)  # put through to a person
    ended: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String)  # None: no end recorded (yet)
    tier: Mapped[int | None] = mapped_column(Integer)
    destination: Mapped[str | None] = mapped_column(String)
    trunk: Mapped[str | None] = mapped_column(String)
    end_step: Mapped[str | None] = mapped_column(String)
    detail: Mapped[str | None] = mapped_column(Text)
    # How the call reached the daemon: "ari" (Stasis) or "agi" (FastAGI).
    driver: Mapped[str] = mapped_column(String, server_default="ari")
    # The node ([node] name) whose daemon took the call; None: logged before nodes were.
    node: Mapped[str | None] = mapped_column(String)
    # A call that went to the dialplan fallback (shed, handed over, or never seen by the
    # daemon): what the fallback did, from Asterisk's CDR (``callflow_fallback``), and where
    # it left the call (``FallbackFate``; NULL for a trace of a dialplan of the site's own).
    # Both NULL until the CDR is read, and for calls that never went there.
    fallback: Mapped[str | None] = mapped_column(String)
    fallback_fate: Mapped[str | None] = mapped_column(String)

    __table_args__ = (
        CheckConstraint(_in("outcome", OUTCOMES), name="outcome"),
        CheckConstraint(_in("fallback_fate", FALLBACK_FATES), name="fallback_fate"),
        Index(None, "started"),
        Index(None, "flow", "started"),
        Index(None, "caller"),
        Index(None, "node", "outcome"),  # the after-crash pass: this node's open calls
    )


class CallStep(Base):
    """One step of a call (or one attempt inside a step), in the order taken."""

    __tablename__ = "call_steps"

    call_id: Mapped[str] = mapped_column(
        String, ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)  # when the step ended
    step: Mapped[str] = mapped_column(String)
    kind: Mapped[str] = mapped_column(String)
    result: Mapped[str] = mapped_column(String)
    detail: Mapped[str] = mapped_column(Text)  # for people; the facts are the columns below
    next: Mapped[str | None] = mapped_column(String)
    duration: Mapped[float] = mapped_column(Float)  # seconds spent in the step
    key: Mapped[str | None] = mapped_column(String)  # the menu key chosen
    attempt: Mapped[int | None] = mapped_column(Integer)  # menu attempt, or rank of a ring
    destination: Mapped[str | None] = mapped_column(String)
    trunk: Mapped[str | None] = mapped_column(String)
    tier: Mapped[int | None] = mapped_column(Integer)
    dial_status: Mapped[str | None] = mapped_column(String)  # Asterisk's DIALSTATUS words
    outcome: Mapped[str | None] = mapped_column(String)  # set on the step that ended the call
    score: Mapped[int | None] = mapped_column(Integer)  # survey: the caller's rating, 1..scale
    scale: Mapped[int | None] = mapped_column(Integer)  # survey: its highest rating


class CallbackRequestRow(Base):
    """A request to call a patient back.  ``caller`` is in clear: it is the number to call."""

    __tablename__ = "callbacks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String)  # no foreign key: outlives the purged call
    flow: Mapped[str] = mapped_column(String)
    queue: Mapped[str] = mapped_column(String)
    priority: Mapped[str] = mapped_column(String)
    tier: Mapped[int | None] = mapped_column(Integer)
    caller: Mapped[str | None] = mapped_column(String)  # None once anonymised (retention)
    status: Mapped[str] = mapped_column(String, default="pending")
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    completed: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_by: Mapped[str | None] = mapped_column(String)

    __table_args__ = (
        UniqueConstraint("call_id", "created"),
        CheckConstraint(_in("status", CALLBACK_STATUSES), name="status"),
        Index(None, "created"),
        Index(None, "status", "created"),
        Index(None, "caller"),
    )


class TrunkEvent(Base):
    """A change of a trunk's state (qualify or circuit breaker)."""

    __tablename__ = "trunk_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trunk: Mapped[str] = mapped_column(String)
    state: Mapped[str] = mapped_column(String)
    rtt_ms: Mapped[float | None] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The node whose Asterisk saw the change: each node has its own view of the same trunk.
    node: Mapped[str] = mapped_column(String, server_default="")

    __table_args__ = (UniqueConstraint("trunk", "at", "node"), Index(None, "at"))


class AdminAction(Base):
    """The audit trail: who did what, when (overrides, callbacks done, purges, exports)."""

    __tablename__ = "admin_actions"

    id: Mapped[str] = mapped_column(String, primary_key=True)  # a uuid, chosen when recorded
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    who: Mapped[str] = mapped_column(String)
    action: Mapped[str] = mapped_column(String)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (Index(None, "at"),)


class CalendarOverride(Base):
    """A calendar override in force ("closed until Monday 8:00"), shared by every node: set
    through any node's API, applied by all (``callflow.overrides``)."""

    __tablename__ = "calendar_overrides"

    key: Mapped[str] = mapped_column(String, primary_key=True)  # "flow/calendar"
    flow: Mapped[str] = mapped_column(String)  # the practice: scoped accounts see their own
    open: Mapped[bool] = mapped_column(Boolean)
    until: Mapped[datetime] = mapped_column(UTCDateTime)
    label: Mapped[str | None] = mapped_column(String)
    set_by: Mapped[str | None] = mapped_column(String)
    set_at: Mapped[datetime] = mapped_column(UTCDateTime)
    node: Mapped[str] = mapped_column(String)  # the node whose API took it

    __table_args__ = (Index(None, "flow"),)


CDR_ACTIONS: tuple[str, ...] = ("imported", "closed")
DRILL_MODES: tuple[str, ...] = tuple(m.value for m in DrillMode)


class CdrImport(Base):
    """A call Asterisk recorded (its CDRs, by the caller channel's uniqueid) that the call log
    took once: ``imported`` (never seen by the daemon) or ``closed`` (left open by a crash)."""

    __tablename__ = "cdr_imports"

    uniqueid: Mapped[str] = mapped_column(String, primary_key=True)
    linkedid: Mapped[str] = mapped_column(String)
    call_id: Mapped[str] = mapped_column(String)  # no foreign key: outlives the purged call
    action: Mapped[str] = mapped_column(String)
    at: Mapped[datetime] = mapped_column(UTCDateTime)  # when the call log took it

    __table_args__ = (CheckConstraint(_in("action", CDR_ACTIONS), name="action"), Index(None, "at"))


class DrillRow(Base):
    """One leg of a forwarding drill: a destination over one trunk (no patient data)."""

    __tablename__ = "drills"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # The node ([node] name) that drilled: each node drills over its own trunks.
    node: Mapped[str] = mapped_column(String)
    flow: Mapped[str] = mapped_column(String)
    destination: Mapped[str] = mapped_column(String)
    trunk: Mapped[str] = mapped_column(String)
    mode: Mapped[str] = mapped_column(String)  # call, or health (an emergency route)
    passed: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    answer_delay: Mapped[float | None] = mapped_column(Float)  # seconds, when answered

    __table_args__ = (
        CheckConstraint(_in("mode", DRILL_MODES), name="mode"),
        Index(None, "node", "flow", "destination", "trunk", "at"),
        Index(None, "at"),
    )


__all__ = [
    "CALLBACK_STATUSES",
    "CDR_ACTIONS",
    "DRILL_MODES",
    "FALLBACK_FATES",
    "OUTCOMES",
    "AdminAction",
    "Base",
    "CalendarOverride",
    "Call",
    "CallStep",
    "CallbackRequestRow",
    "CdrImport",
    "DrillRow",
    "TrunkEvent",
    "UTCDateTime",
]
