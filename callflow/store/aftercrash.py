"""The daemon's part that keeps the call log whole across crashes (see ``cdr_import.py`` and
``reconcile.py`` for the rules).

Every ``poll_interval`` seconds it reads the CDRs Asterisk appended, has the recorder feed
its journal to the database (``Recorder.flush``: a call the daemon logged is then in the
database before its CDR is looked at), then

1. logs the calls the dialplan fallback handled alone (outcome ``fallback``), once each,
   and the calls missing from the log that a crash, or a loss of Asterisk, cut (``lost``,
   ``failed``): the daemon tells it when it loses Asterisk and gets it back
   (``pbx_lost``, ``pbx_back``);
2. writes what the fallback did to the calls the daemon logged and then let go there
   (shed, or handed over): ``calls.fallback`` and ``calls.fallback_fate``; and logs the
   calls a flow sent to voicemail that left no message as such (not ``voicemail``);
3. until none is left, closes the calls a crash left open (those of its own node that
   started before this daemon did), from Asterisk's live channels and the CDRs.  Another
   node's open calls are never touched: they may be running on that node's Asterisk.

While the database is away it waits (records stay in the journal); while ARI is away the
open calls wait for it (a call whose channel lives is never closed).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from ..tasks import BackgroundPart, Tasks
from .cdr import CdrCall, CdrFile, merge_calls, older_handler
from .cdr_import import (
    FlowOf,
    close_calls,
    follow_fallbacks,
    follow_voicemails,
    import_fallback_calls,
    open_calls,
)
from .privacy import CallerPrivacy
from .reconcile import reconcile
from .recorder import Recorder

log = logging.getLogger("callflow.store")

#: Asterisk's channel ids now; None while ARI is not connected.
Channels = Callable[[], Awaitable[Collection[str] | None]]

#: How long before the previous run's last sign of life a call it lost at a crash may have
#: started (its records not journaled yet; the mark is touched every ``poll_interval``, and
#: a loop that hung before a watchdog kill touched it last up to 30 s before the kill).
LOST_MARGIN = timedelta(seconds=60)
#: How long before the daemon lost Asterisk a call it never saw may have started: a channel
#: in the dialplan on its way to Stasis, or in Stasis with its event not read yet.
CUT_MARGIN = timedelta(seconds=30)
#: How long a call's CDR is kept for a later pass after it was read: the daemon may learn it
#: lost Asterisk after Asterisk wrote the CDRs of the calls it cut (one poll or more later).
CUT_HOLD = timedelta(seconds=60)
OUTAGES_KEPT = 16  # the last losses of Asterisk whose calls may still be imported
ALIVE_FILE = "last-alive"  # in the state folder


class AfterCrash(BackgroundPart):
    """``async with AfterCrash(...)``: runs the CDR import and the closing of open calls."""

    def __init__(
        self,
        engine: AsyncEngine,
        recorder: Recorder,
        channels: Channels,
        *,
        cdr_file: CdrFile | None,
        privacy: CallerPrivacy,
        flow_of: FlowOf,
        poll_interval: float = 2.0,
        settle: float = 5.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        node: str | None = None,
        alive_file: Path | None = None,
        retention: timedelta | None = None,
        noticed_within: timedelta = timedelta(0),
        on_no_message: Callable[[str], None] = lambda flow: None,
    ) -> None:
        self.engine = engine
        # This daemon's node: the only calls it may close (and import) are its own.
        self.node = node
        self.recorder = recorder
        self.channels = channels
        self.cdr_file = cdr_file
        self.privacy = privacy
        self.flow_of = flow_of
        self.poll_interval = poll_interval
        self.settle = settle
        self.clock = clock
        self.started = clock()  # calls open and older than this were left by a crash
        self.open_left: int | None = None  # None: not looked yet; 0: none left
        self.imported = 0
        self.followed = 0  # calls of the log given their fallback's fate
        # Where the fallback left the calls read so far (imported or followed), by fate
        # ("unknown": a trace that does not tell, see ``fallback_fate``), for the metrics.
        self.fates: Counter[str] = Counter()
        self._older_handler_told = False  # an older dialplan's CDR: told once a run
        self._older_voicemail_told = False  # the same, for the voicemail's status
        # Calls logged voicemail that left none, mended from their CDR: counted, and told
        # (the flow's) to the metrics, whose counters counted them voicemail.
        self.no_message = 0
        self.on_no_message = on_no_message
        self.closed = 0
        self._cdrs: dict[str, CdrCall] = {}
        self._gone_since: dict[str, datetime] = {}
        self._tasks = Tasks("after crash", log)
        self._failing = False
        # A file touched at every pass: at the next start, its time is when this run was
        # last alive, around which calls lost at a crash started (see LOST_MARGIN).
        self.alive_file = alive_file
        self.retention = retention  # no call older than this is imported (the purge's)
        self.lost_window: tuple[datetime, datetime] | None = None  # None: no previous run
        # How late a loss of Asterisk may be noticed (a silent peer: the websocket's
        # heartbeat): the calls it cut started up to this much earlier again.
        self.noticed_within = noticed_within
        # When this run lost Asterisk, and got it back (None: not yet).
        self._outages: deque[tuple[datetime, datetime | None]] = deque(maxlen=OUTAGES_KEPT)

    def pbx_lost(self) -> None:
        """The daemon lost Asterisk now (the events websocket dropped)."""
        if not self._outages or self._outages[-1][1] is not None:
            self._outages.append((self.clock(), None))

    def pbx_back(self) -> None:
        """The daemon has Asterisk again (connected) from now."""
        if self._outages and self._outages[-1][1] is None:
            self._outages[-1] = (self._outages[-1][0], self.clock())

    def cut_windows(self, now: datetime) -> list[tuple[datetime, datetime]]:
        """When the calls started that a loss of Asterisk may have cut unseen (none before
        this run: an earlier run's calls are the lost window's, or that run's log's)."""
        late = self.noticed_within
        return [
            (max(lost - CUT_MARGIN - late, self.started), now if back is None else back)
            for lost, back in self._outages
        ]

    async def start(self) -> None:
        self._read_last_alive()

    def _read_last_alive(self) -> None:
        if self.alive_file is None:
            return
        try:
            mtime = self.alive_file.stat().st_mtime
        except FileNotFoundError:
            return  # the first start (or the first of this release): no run to have crashed
        last = datetime.fromtimestamp(mtime, UTC)
        self.lost_window = (last - LOST_MARGIN, self.started)

    def _mark_alive(self) -> None:
        if self.alive_file is None:
            return
        try:
            self.alive_file.touch()  # its time is now (created owner-only: umask 077)
        except OSError as exc:  # a full or read-only disk: only the next start's window
            log.debug("after crash: %s not touched: %s", self.alive_file, exc)

    async def stop(self) -> None:
        self._mark_alive()

    async def run(self) -> None:
        while True:
            self._mark_alive()
            try:
                await self.run_once()
            except Exception as exc:  # the database or ARI failed us: the next pass retries
                if not self._failing:
                    log.warning("after crash: pass failed (%s); retrying", exc)
                self._failing = True
            else:
                if self._failing:
                    log.info("after crash: passes work again")
                self._failing = False
            await asyncio.sleep(self.poll_interval)

    async def run_once(self) -> None:
        """One pass: read new CDRs, feed the journal, import, close what can be closed."""
        if self.cdr_file is not None:
            new = await asyncio.to_thread(self.cdr_file.read_new)
            # Only calls of this run: a file read again from its start holds CDRs of
            # before an upgrade, whose dialplan said less.
            self._tell_older_voicemail([c for c in new if c.end >= self.started])
            merge_calls(new, self._cdrs)
        if not self.recorder.database_up:
            return  # the recorder retries the database at its own pace: no forced feed
        await self.recorder.flush()
        if not self.recorder.database_up:
            return  # the journal was not fed: the database lacks calls the daemon logged
        now = self.clock()
        imported = await import_fallback_calls(
            self.engine,
            self._cdrs.values(),
            privacy=self.privacy,
            flow_of=self.flow_of,
            now=now,
            node=self.node,
            not_before=None if self.retention is None else now - self.retention,
            lost_window=self.lost_window,
            cut_windows=self.cut_windows(now),
        )
        if imported:
            self.imported += len(imported)
            log.info(
                "call log: %d call(s) from Asterisk's CDRs (the fallback's, or lost at a "
                "crash or a loss of Asterisk)",
                len(imported),
            )
        self._count_fates(imported)  # committed: counted before anything else may fail
        followed = await follow_fallbacks(self.engine, self._cdrs.values())
        self.followed += len(followed)
        self._count_fates(followed)
        if followed:
            log.info("call log: what the fallback did with %d call(s), from CDRs", len(followed))
        mended = await follow_voicemails(self.engine, self._cdrs.values())
        self.no_message += len(mended)
        for m in mended:
            self.on_no_message(m.flow)
        if mended:
            log.info(
                "call log: %d call(s) sent to voicemail left no message (from CDRs): "
                "logged abandoned or failed, not voicemail",
                len(mended),
            )
        keep: set[str] = set()
        if self.open_left != 0:
            keep = await self._close_open(now)
        # What is not an open call's is done with: imported, logged by the daemon, or a leg;
        # but a call never answered that ended lately may yet prove cut by a loss of
        # Asterisk not known yet (answered ones, every call the daemon took, never can).
        self._cdrs = {k: v for k, v in self._cdrs.items() if k in keep or self._held(v, now)}

    def _count_fates(self, ids: list[str]) -> None:
        for i in ids:
            c = self._cdrs[i]
            if c.went_to_fallback:
                fate = c.fate  # parsed from the trace at each read
                self.fates[str(fate) if fate is not None else "unknown"] += 1
            if not self._older_handler_told and older_handler(c.fallback):
                self._older_handler_told = True
                log.warning(
                    "CDR of call %s: the fallback's hangup handler wrote no Dial() status, so "
                    "whether the secretariat answered is not known (its fate stays empty). "
                    "A CDR of before this release says so; if new calls do too, Asterisk "
                    "runs an older extensions_callflow.conf: install this release's, then "
                    "'dialplan reload'",
                    i,
                )

    def _tell_older_voicemail(self, cdrs: list[CdrCall]) -> None:
        if self._older_voicemail_told:
            return
        for c in cdrs:
            if c.older_voicemail_handler:
                self._older_voicemail_told = True
                log.warning(
                    "CDR of call %s: it reached a voicemail and no handler wrote whether a "
                    "message was left, so a caller who left none stays logged 'voicemail'. "
                    "Asterisk runs an older extensions_callflow.conf (join.sh keeps yours): "
                    "merge this release's [callflow-voicemail-status] and its pushes, and "
                    "add callflow_voicemail(uservar) to cdr_custom_callflow.conf, then "
                    "restart Asterisk",
                    c.uniqueid,
                )
                return

    def _held(self, c: CdrCall, now: datetime) -> bool:
        # Kept longer by as much as a loss may be noticed late (a silent Asterisk).
        since = now - CUT_HOLD - self.noticed_within
        if c.message_left is False and c.end >= now - CUT_HOLD:
            # The daemon may log the hand-over to voicemail after the CDR is read (a slow
            # answer to its request while the caller hung up): mended at a later pass.
            return True
        return c.over and not c.went_to_fallback and c.answer is None and c.end >= since

    async def _close_open(self, now: datetime) -> set[str]:
        calls = await open_calls(self.engine, self.started, self.node)
        if not calls:
            if self.open_left is None or self.open_left > 0:
                log.info("after crash: no call left without an outcome")
            self.open_left = 0
            return set()
        alive = await self.channels()
        if alive is None:
            self.open_left = len(calls)
            return {c.id for c in calls}
        for c in calls:
            if c.id not in alive:
                self._gone_since.setdefault(c.id, now)
        closings = reconcile(calls, alive, self._cdrs, self._gone_since, now, self.settle)
        closed = await close_calls(self.engine, closings, self._cdrs, now)
        for closing in closings:
            if closing.call_id in closed:
                log.warning(
                    "after crash: call=%s closed as %s: %s",
                    closing.call_id,
                    closing.outcome,
                    closing.detail,
                )
        self.closed += len(closed)
        left = {c.id for c in calls} - set(closed)
        self.open_left = len(left)
        return left


__all__ = ["ALIVE_FILE", "CUT_HOLD", "CUT_MARGIN", "LOST_MARGIN", "AfterCrash", "Channels"]
