"""The recorder: every call, step, callback request, trunk change and admin action, in the
database, without ever making a call wait, and without losing any to a crash or an outage.

The engine calls the ``Observer`` and ``CallbackSink`` methods synchronously: they only
append to an in-memory queue.  One writer task (``run``, or the recorder as an async
context manager) does the rest, in two stages:

1. **The journal (write-ahead).**  At most ``commit_interval`` seconds (50 ms by default)
   after a record is queued, it is appended to the spool (``spool.Spool``: JSON lines, in
   segments) together with every record queued meanwhile: one group commit, a ``write``
   to the kernel from the event loop.  From then on the record survives a kill of the
   daemon.  Every ``sync_interval`` (1 s by default) what was written is fsync'd, in a
   worker thread: a power loss loses at most the records of the last ``sync_interval``.
   (A thread wake-up per group commit, 20 a second, was the call log's largest fixed CPU
   cost; the fsyncs now wake one once a second.)  No call ever waits on the disk: the
   writes run in the writer task, off the engine's path.
2. **The database is fed from the journal**: every ``flush_interval`` (or as soon as
   ``batch_size`` records wait), the spool is replayed segment by segment, oldest first, in
   transactions of ``batch_size`` records (``writer.write_records``: idempotent upserts), and
   each segment written is deleted.  A replay interrupted (a crash, the database failing) and
   started again duplicates nothing; a daemon (re)started replays what its journal holds.

When a write fails or takes longer than ``write_timeout`` (database down, unreachable or
slow), records simply stay in the journal; the writer retries the database with a growing
delay (``retry_min`` .. ``retry_max``).

When the spool cannot be written (disk full, read-only), records are held in memory, oldest
first, the error is logged (again every minute), the spool is retried, and the held
records are written to the database directly.  Memory is bounded: past ``memory_limit``
records in memory, new records are dropped and counted (``dropped``) with an error in the
log.  Nothing ever raises into a call.

A record that the database refuses for what it is (a constraint, bad data), not for being
unreachable, would block everything behind it forever: such a batch is written record by
record, and a refused record is appended to ``<spool_dir>/rejected.jsonl`` with the error
(and logged), never silently dropped.

Two daemons may share one database: call ids are unique (Asterisk channel ids; give each
PBX its own ``systemname`` so they stay unique across PBXs), every write is an upsert on
a natural key, so concurrent writers neither duplicate nor lose rows.  Each daemon needs
its own ``spool_dir`` (the spool is locked), and its own ``node``: its calls and trunk
changes carry it (records journaled by an older version get it when replayed: a spool is
one daemon's).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from ..flow.events import CallAnswered, CallInfo, Outcome, StepRecord
from ..flow.services import CallbackRequest
from ..reconnect import Backoff
from ..tasks import Tasks
from .leftovers import REJECTED
from .privacy import CallerPrivacy
from .spool import Spool
from .writer import write_records

log = logging.getLogger("callflow.store")

Record = dict[str, Any]
_LOG_EVERY = 60.0  # seconds between repeated error logs of one ongoing trouble


def _iso(t: datetime) -> str:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.isoformat()


def _opt(value: object | None) -> str | None:
    return None if value is None else str(value)


def _bad_data(exc: BaseException) -> bool:
    """The database refused the data itself: writing it again will not help.

    Anything else (connection lost, timeout, server shutting down, a missing table before
    `callflow db upgrade`...) is an outage: the records wait in the spool."""
    if isinstance(exc, IntegrityError | DataError):
        return True
    if isinstance(exc, DBAPIError):
        # PostgreSQL SQLSTATE classes 22 (data exception) and 23 (integrity constraint).
        state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return isinstance(state, str) and state[:2] in ("22", "23")
    if isinstance(exc, StatementError):
        return True  # a value could not be bound (a malformed record)
    return isinstance(exc, KeyError | TypeError | ValueError)


def _no_nul(rec: Record) -> Record:
    """PostgreSQL text cannot hold NUL (a junk caller ID might): make it visible instead."""
    for k, v in rec.items():
        if isinstance(v, str) and "\x00" in v:
            rec[k] = v.replace("\x00", "\ufffd")
    return rec


@dataclass(frozen=True)
class CallEnded:
    info: CallInfo
    outcome: Outcome
    at: datetime


@dataclass(frozen=True)
class TrunkChange:
    trunk: str
    state: str
    rtt_ms: float | None
    at: datetime


@dataclass(frozen=True)
class AuditEntry:
    id: str
    at: datetime
    who: str
    action: str
    detail: dict[str, Any]  # JSON-ready


#: What the recorder queues: typed events, turned into records only when written.
Event = (
    CallInfo | StepRecord | CallAnswered | CallEnded | CallbackRequest | TrunkChange | AuditEntry
)


class Recorder:
    """The engine's ``Observer`` and ``CallbackSink``, writing to the call log."""

    def __init__(
        self,
        engine: AsyncEngine,
        spool_dir: Path,
        *,
        privacy: CallerPrivacy | None = None,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        commit_interval: float = 0.05,
        sync_interval: float = 1.0,
        write_timeout: float = 10.0,
        memory_limit: int = 100_000,
        retry_min: float = 1.0,
        retry_max: float = 30.0,
        segment_records: int = 10_000,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        node: str | None = None,
    ) -> None:
        self.engine = engine
        # The node ([node] name) every call and trunk change is tagged with; None: untagged.
        self.node = node
        self.privacy = privacy or CallerPrivacy()
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.commit_interval = commit_interval
        self.sync_interval = sync_interval
        self.write_timeout = write_timeout
        self.memory_limit = memory_limit
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.clock = clock
        self.spool = Spool(spool_dir, segment_records=segment_records)
        self.rejected_file = spool_dir / REJECTED
        self._queue: deque[Event] = deque()  # typed events, newest last
        self._held: deque[Record] = deque()  # records the spool could not take (disk full)
        self._wake = asyncio.Event()
        self._first_queued = 0.0  # time.monotonic() when the oldest queued record came
        self._unsynced_since: float | None = None  # the first spool write not yet fsync'd
        self._syncing: asyncio.Future[None] | None = None  # the fsync job in its thread
        self._last_sync_log = 0.0
        self._feed_at = 0.0  # time.monotonic() of the next scheduled database feed
        self._opened = False
        self._running = False
        self._closing = False
        self._stopped = asyncio.Event()
        self._writer = Tasks("call log", log)  # the writer task, when used with async with
        self._lock = asyncio.Lock()
        self._flush_waiters: list[asyncio.Future[None]] = []
        # Outage bookkeeping.
        self._db_down_since: float | None = None
        # The same doubling policy as the ARI/AMI reconnections, without jitter: one writer.
        self._db_retry = Backoff(retry_min, retry_max)
        self._retry_at = 0.0
        self._disk_failing = False
        self._disk_retry_at = 0.0
        self._last_disk_log = 0.0
        self._last_drop_log = 0.0
        self.dropped = 0  # records lost because memory was full (logged)
        self.rejected = 0  # records the database refused (kept in rejected.jsonl)
        self.written = 0  # records written to the database (direct or replayed)

    # -- metrics -------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Records in memory, waiting for the database or the spool."""
        return len(self._queue) + len(self._held)

    @property
    def spool_size(self) -> int:
        """Records in the spool, waiting for the database."""
        return self.spool.size

    @property
    def database_up(self) -> bool:
        return self._db_down_since is None

    # -- the engine's side: never blocks, never raises -------------------------------------

    def _put(self, event: Event) -> None:
        try:
            if len(self._queue) + len(self._held) >= self.memory_limit:
                self.dropped += 1
                now = time.monotonic()
                if now - self._last_drop_log >= _LOG_EVERY or self.dropped == 1:
                    self._last_drop_log = now
                    log.error(
                        "call log: memory full (%d records): neither the database nor the "
                        "spool takes records; %d records LOST so far",
                        self.memory_limit,
                        self.dropped,
                    )
                return
            if not self._queue:
                # The group commit's clock starts; the writer re-times its wait to it.
                self._first_queued = time.monotonic()
                self._wake.set()
            self._queue.append(event)
            if len(self._queue) >= self.batch_size:
                self._wake.set()
        except Exception:  # pragma: no cover - a recorder bug must not touch the call
            log.exception("call log: cannot queue a record")

    def call_started(self, info: CallInfo) -> None:
        self._put(info)

    def step(self, record: StepRecord) -> None:
        self._put(record)

    def call_answered(self, event: CallAnswered) -> None:
        self._put(event)

    def call_ended(self, info: CallInfo, outcome: Outcome, at: datetime) -> None:
        self._put(CallEnded(info, outcome, at))

    def submit(self, request: CallbackRequest) -> None:
        self._put(request)

    def trunk_changed(
        self, trunk: str, state: str, rtt_ms: float | None = None, at: datetime | None = None
    ) -> None:
        """A trunk's state changed (e.g. from ``TrunkHealth.subscribe``)."""
        self._put(TrunkChange(trunk, str(state), rtt_ms, at or self.clock()))

    def audit(
        self,
        who: str,
        action: str,
        detail: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> None:
        """An admin action for the audit trail (``detail``: a JSON object; values JSON cannot
        hold, e.g. datetimes, are stored as strings)."""
        try:  # JSON-ready from here on, whatever the caller passed
            clean = json.loads(json.dumps(dict(detail or {}), default=str))
        except (TypeError, ValueError):
            clean = {"detail": repr(detail)}
        self._put(AuditEntry(str(uuid.uuid4()), at or self.clock(), who, action, clean))

    # -- events → records ----------------------------------------------------------------

    def _record(self, event: Event) -> Record:
        match event:
            case CallInfo():
                return {"t": "call", **self._call_start(event)}
            case StepRecord():
                return {
                    "t": "step",
                    "call_id": event.call_id,
                    "flow": event.flow,
                    "seq": event.seq,
                    "at": _iso(event.at),
                    "step": event.step,
                    "kind": str(event.kind),
                    "result": str(event.result),
                    "detail": event.detail,
                    "next": event.next,
                    "duration": event.duration,
                    "key": event.key,
                    "attempt": event.attempt,
                    "destination": event.destination,
                    "trunk": event.trunk,
                    "tier": event.tier,
                    "dial_status": _opt(event.dial_status),
                    "outcome": _opt(event.outcome),
                    "score": event.score,
                    "scale": event.scale,
                }
            case CallAnswered():
                return {"t": "answered", "id": event.call_id, "answered": _iso(event.at)}
            case CallEnded(info=info, outcome=outcome, at=at):
                return {
                    "t": "end",
                    **self._call_start(info),
                    "ended": _iso(at),
                    "outcome": str(outcome.kind),
                    "tier": outcome.tier,
                    "destination": outcome.destination,
                    "trunk": outcome.trunk,
                    "end_step": outcome.step,
                    "detail": outcome.detail,
                }
            case CallbackRequest():
                return {
                    "t": "callback",
                    "call_id": event.call_id,
                    "flow": event.flow,
                    "queue": event.queue,
                    "priority": event.priority,
                    "tier": event.tier,
                    # The number to call back: in clear in the database (its purpose), but
                    # sealed (encrypted) in the spool when numbers are pseudonymised.
                    "caller": self.privacy.seal(event.caller),
                    "created": _iso(event.at),
                }
            case TrunkChange():
                return {
                    "t": "trunk",
                    "trunk": event.trunk,
                    "state": event.state,
                    "rtt_ms": event.rtt_ms,
                    "at": _iso(event.at),
                    "node": self.node,
                }
            case AuditEntry():
                return {
                    "t": "audit",
                    "id": event.id,
                    "at": _iso(event.at),
                    "who": event.who,
                    "action": event.action,
                    "detail": event.detail,
                }

    def _call_start(self, info: CallInfo) -> Record:
        return {
            "id": info.call_id,
            "flow": info.flow,
            "flow_version": info.version,
            "dialed": info.dialed,
            "caller": self.privacy.protect(info.caller),
            "started": _iso(info.started),
            "driver": info.driver.value,
            "node": self.node,
        }

    def _take(self, n: int) -> list[Record]:
        out: list[Record] = []
        while self._queue and len(out) < n:
            event = self._queue.popleft()
            try:
                out.append(_no_nul(self._record(event)))
            except Exception:  # pragma: no cover - a bug in the conversion
                log.exception("call log: cannot convert %s; record LOST", type(event).__name__)
                self.dropped += 1
        return out

    def _take_all(self) -> list[Record]:
        return self._take(len(self._queue))

    # -- the writer task -----------------------------------------------------------------

    def open(self) -> None:
        """Lock the spool and find what a previous run left in it (``run`` does it too);
        raises ``UserError`` when the spool is unusable or used by another process."""
        if not self._opened:
            self.spool.open()
            self._opened = True

    async def run(self) -> None:
        """Write until ``close``; replays the spool first.  Run it as one task (or use the
        recorder as an async context manager, which owns that task)."""
        self._start_writer()
        await self._write_loop()

    async def __aenter__(self) -> Self:
        """Open the spool and start the writer task."""
        if self._writer.closed:
            # Its writer's task group is closed: it would start no writer, and a flush or
            # a close would then wait for one forever.
            raise RuntimeError("a Recorder runs once: make a new one")
        self._start_writer()
        self._writer.spawn(self._write_loop(), "recorder")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Write (or spool) everything queued, then stop the writer."""
        try:
            await self.close()
        finally:
            await self._writer.aclose()  # a writer that did not stop is cancelled here

    def _start_writer(self) -> None:
        # Marked running before the task starts: a close() that comes first then waits for
        # the writer to write everything, instead of doing it beside it.
        if self._running:
            raise RuntimeError("Recorder.run is already running")
        self.open()
        self._running = True

    async def _write_loop(self) -> None:
        try:
            while not self._closing:
                timeout = self._wait_time(time.monotonic())
                if not self._flush_waiters and timeout > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(timeout):
                            await self._wake.wait()
                self._wake.clear()
                if self._closing:
                    break
                waiters, self._flush_waiters = self._flush_waiters, []
                try:
                    await self._cycle(force=bool(waiters))
                except Exception:  # pragma: no cover - keep writing whatever happens
                    log.exception("call log: writer error; retrying")
                    await asyncio.sleep(self.retry_min)
                for w in waiters:
                    if not w.done():
                        w.set_result(None)
            await self._final()
        finally:
            self._running = False
            for w in self._flush_waiters:
                if not w.done():
                    w.set_result(None)
            self._flush_waiters = []
            await self._sync_finished()
            self.spool.close()
            self._opened = False
            self._stopped.set()

    async def flush(self) -> None:
        """Write (or spool) everything queued so far, trying the database now."""
        if not self._running:
            self.open()
            await self._cycle(force=True)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_waiters.append(fut)
        self._wake.set()
        await fut

    async def close(self) -> None:
        """Stop the writer after writing (or spooling) everything; idempotent."""
        self._closing = True
        self._wake.set()
        if self._running:
            await self._stopped.wait()
        elif self._opened or self._queue or self._held:
            self.open()
            try:
                await self._final()
            finally:
                await self._sync_finished()
                self.spool.close()
                self._opened = False

    async def _final(self) -> None:
        async with self._lock:
            await self._final_locked()

    async def _final_locked(self) -> None:
        await self._cycle_locked(force=True)
        if self._queue:
            await self._stash(self._take_all(), force=True)
        await self._sync()  # in a thread, as always: the spool's close then has no fsync to do
        if self._held:
            log.critical(
                "call log: stopping with %d records neither in the database nor in the "
                "spool: they are LOST",
                len(self._held),
            )
            self.dropped += len(self._held)
            self._held.clear()

    # -- one writing cycle ---------------------------------------------------------------

    def _pending_old(self) -> bool:
        return not self.spool.empty or bool(self._held)

    def _commit_due(self, now: float) -> bool:
        return bool(self._queue) and (
            len(self._queue) >= self.batch_size or now >= self._first_queued + self.commit_interval
        )

    def _feed_due(self, now: float) -> bool:
        if not self._pending_old() or now < self._retry_at:
            return False
        return now >= self._feed_at or self.spool.size >= self.batch_size

    def _sync_due(self, now: float) -> bool:
        return self._unsynced_since is not None and now >= self._unsynced_since + self.sync_interval

    def _wait_time(self, now: float) -> float:
        """How long the writer may sleep before the next group commit, fsync or feed."""
        wait = self.flush_interval
        if self._queue:
            wait = min(wait, self._first_queued + self.commit_interval - now)
        if self._unsynced_since is not None:
            wait = min(wait, self._unsynced_since + self.sync_interval - now)
        if self._pending_old():
            wait = min(wait, max(self._feed_at, self._retry_at) - now)
        return max(0.0, wait)

    async def _cycle(self, *, force: bool = False) -> None:
        async with self._lock:  # one writer: run(), or flush()/close() without run()
            await self._cycle_locked(force=force)

    async def _cycle_locked(self, *, force: bool) -> None:
        now = time.monotonic()
        if force or self._commit_due(now):
            await self._stash(self._take_all(), force=force)  # the journal: one group commit
        if force or self._sync_due(now):
            await self._sync()
        if force or self._feed_due(now):
            self._feed_at = now + self.flush_interval
            await self._replay()

    async def _replay(self) -> bool:
        """Write the spool, then the held records, oldest first; False on a failure.

        Spool files are read and deleted in a worker thread, and fsync'd there (``_sync``):
        a disk wait must not hold up the event loop that runs the calls."""
        replayed = 0
        while (seg := self.spool.oldest()) is not None:
            await self._stash(self._take_all())  # newer records go behind; memory stays small
            while True:
                # What this process journaled is replayed from memory, on the loop; a
                # segment found at start is read (and checked) from its file, off the loop.
                batch = self.spool.memo_batch(seg, self.batch_size)
                if batch is None:
                    batch = await asyncio.to_thread(self.spool.read_batch, seg, self.batch_size)
                if not await self._write(batch.records):
                    return False
                self.spool.advance(seg, batch)
                replayed += len(batch.records)
                if self._sync_due(time.monotonic()):  # a long replay keeps the fsyncs' pace
                    await self._sync()
                if batch.last:
                    break
            await asyncio.to_thread(self.spool.done, seg)
        while self._held:
            chunk = [self._held[i] for i in range(min(self.batch_size, len(self._held)))]
            if not await self._write(chunk):
                return False
            for _ in chunk:
                self._held.popleft()
            replayed += len(chunk)
        if replayed:
            log.info("call log: %d spooled records written to the database", replayed)
        return True

    async def _write(self, records: list[Record]) -> bool:
        """Write ``records`` in one transaction; False when the database failed us."""
        if not records:
            return True
        try:
            await self._journal_while(self._transaction(records))
        except Exception as exc:
            if not _bad_data(exc):
                self._db_failed(exc)
                return False
            return await self._write_one_by_one(records)
        self._db_ok()
        self.written += len(records)
        return True

    async def _journal_while(self, write: Coroutine[Any, Any, None]) -> None:
        """Await a database write (up to ``write_timeout``: a locked, slow or failing
        database) while keeping the journal's promise: the records reported meanwhile are
        still appended every ``commit_interval``, not held in memory where a kill of the
        daemon would lose them (issue #12's fault matrix found this after a restart)."""
        task = asyncio.ensure_future(write)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.commit_interval)
                if done:
                    return task.result()
                # Held records are being written back (or are behind the failing disk):
                # new ones go behind them at the next cycle instead.
                if self._queue and not self._held:
                    await self._stash(self._take_all())
                if self._sync_due(time.monotonic()):
                    await self._sync()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _transaction(self, records: list[Record]) -> None:
        opened = [self._unsealed(r) for r in records]
        async with asyncio.timeout(self.write_timeout), self.engine.begin() as conn:
            await write_records(conn, opened, node=self.node)

    def _unsealed(self, rec: Record) -> Record:
        if rec.get("t") == "callback" and isinstance(rec.get("caller"), str):
            try:
                return {**rec, "caller": self.privacy.unseal(rec["caller"])}
            except ValueError as exc:  # kept sealed rather than lost: the key may come back
                log.error("call log: callback of call %s: %s", rec.get("call_id"), exc)
        return rec

    async def _write_one_by_one(self, records: list[Record]) -> bool:
        # Up to a batch of transactions in a row: new records keep reaching the journal
        # meanwhile (review: they waited in memory for the whole retry, lost at a kill).
        for rec in records:
            try:
                await self._journal_while(self._transaction([rec]))
            except Exception as exc:
                if not _bad_data(exc):
                    self._db_failed(exc)
                    return False
                self._reject(rec, exc)
            else:
                self.written += 1
        self._db_ok()
        return True

    def _reject(self, rec: Record, exc: BaseException) -> None:
        self.rejected += 1
        error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        at = datetime.now(UTC).isoformat()  # for the retention purge (leftovers.py)
        entry = {"at": at, "error": error, "rec": rec}
        line = json.dumps(entry, ensure_ascii=False, default=str) + "\n"
        try:
            fd = os.open(self.rejected_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            where = str(self.rejected_file)
        except OSError as os_exc:
            # The record itself is not logged: it may hold a caller's number.
            where = f"nowhere ({os_exc.strerror}): the record is LOST"
        log.error(
            "call log: the database refused a %s record (%s): kept in %s",
            rec.get("t"),
            error,
            where,
        )

    # -- outage bookkeeping ----------------------------------------------------------------

    def _db_failed(self, exc: BaseException) -> None:
        what = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        if isinstance(exc, TimeoutError):
            what = f"no answer within {self.write_timeout:g}s"
        if self._db_down_since is None:
            self._db_down_since = time.monotonic()
            self._db_retry.reset()
            delay = self._db_retry.next_delay()
            log.warning(
                "call log: database unavailable (%s); records wait in the journal %s",
                what,
                self.spool.dir,
            )
        else:
            delay = self._db_retry.next_delay()
            log.info("call log: database still unavailable (%s); next try in %gs", what, delay)
        self._retry_at = time.monotonic() + delay

    def _db_ok(self) -> None:
        if self._db_down_since is not None:
            down = time.monotonic() - self._db_down_since
            log.warning("call log: database back after %.0fs", down)
            self._db_down_since = None
            self._db_retry.reset()
            self._retry_at = 0.0

    async def _stash(self, records: list[Record], *, force: bool = False) -> None:
        """Records for the journal: to the spool, else held in memory."""
        if not records and not self._held:
            return
        now = time.monotonic()
        if self._disk_failing and not force and now < self._disk_retry_at:
            self._held.extend(records)
            return
        pending = [*self._held, *records]
        self._held.clear()
        try:
            # A group commit is a write to the kernel, on the loop (the fsync is ``_sync``'s,
            # in a thread); a backlog (records held while the disk was full, up to
            # ``memory_limit``) is encoded and written in a thread.
            if len(pending) <= self.batch_size:
                self.spool.write(pending)
            else:
                await asyncio.to_thread(self.spool.write, pending)
            if self._unsynced_since is None:
                self._unsynced_since = now
        except Exception as exc:  # OSError: disk full, read-only...; anything else: a bug
            self._held = deque(pending)
            self._disk_retry_at = now + self.retry_min
            if not self._disk_failing or now - self._last_disk_log >= _LOG_EVERY:
                self._last_disk_log = now
                log.error(
                    "call log: CANNOT WRITE THE SPOOL %s (%s): %d records held in memory "
                    "(at most %d, then new records are lost)",
                    self.spool.dir,
                    getattr(exc, "strerror", None) or exc,
                    len(self._held),
                    self.memory_limit,
                )
            self._disk_failing = True
            return
        self._held.clear()
        if self._disk_failing:
            self._disk_failing = False
            log.warning("call log: the spool %s is writable again", self.spool.dir)

    async def _sync(self) -> None:
        """Make what the journal wrote survive a power loss: its fsyncs, in a thread."""
        self._unsynced_since = None
        job = self.spool.take_sync()
        if job is None:
            return
        self._syncing = asyncio.ensure_future(asyncio.to_thread(job.run))
        try:
            await self._syncing
        except OSError as exc:
            # The records are written (a kill of the daemon loses none) and go on to the
            # database from memory; only a power loss before then could lose them.
            now = time.monotonic()
            if now - self._last_sync_log >= _LOG_EVERY or not self._last_sync_log:
                self._last_sync_log = now
                log.error(
                    "call log: the spool %s could not be fsync'd (%s): records not yet in "
                    "the database would not survive a power loss",
                    self.spool.dir,
                    exc.strerror or exc,
                )

    async def _sync_finished(self) -> None:
        """Wait for a fsync job still running in its thread (the writer was cancelled
        while awaiting it): the spool's files are closed only after it."""
        job, self._syncing = self._syncing, None
        if job is not None and not job.done():
            with contextlib.suppress(BaseException):
                await asyncio.shield(job)


__all__ = ["Recorder"]
