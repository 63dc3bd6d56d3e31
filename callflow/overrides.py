"""Calendar overrides shared by every node, kept in the call log's database.

"Closed until Monday 8:00", set through any node's admin API, must hold on every node, and
survive a restart.  ``SharedOverrides`` is the engine's ``OverrideStore`` (read in memory on
every call, never waiting on the database) mirroring the ``calendar_overrides`` table
(``store/calendar_overrides.py``):

* ``put`` / ``remove`` (the admin API) write the table first, then the mirror;
* on PostgreSQL the part ``LISTEN``s: each notification re-reads the whole table (a few
  rows), and so does every new session, so a notification missed while the connection was
  down cannot leave a node stale; the session is checked every ``check_interval`` and
  rebuilt with a growing delay when lost;
* on SQLite (one node) the table is read at start only.

The part's start also moves a ``state_dir/overrides.json`` of an older version into the
table, once (the file is renamed ``overrides.json.migrated``); an override already in the
table (set on another node) wins.

Each node keeps a copy of the mirror on its disk (``state_dir/overrides-copy.json``,
rewritten after every read of the table and every change made here): a daemon that starts
while the database is away applies the closures it last knew, instead of none, until the
table answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from .files import write_private
from .reconnect import Backoff
from .schedule import Override, OverrideStore
from .store.calendar_overrides import (
    delete_override,
    listen,
    load_overrides,
    save_override,
    shared,
)
from .tasks import BackgroundPart, Tasks

log = logging.getLogger("callflow.overrides")

OVERRIDES_FILE = "overrides.json"  # where an older version kept them (one node)
COPY_FILE = "overrides-copy.json"  # this node's copy of the mirror (the database away)
MIGRATED_SUFFIX = ".migrated"


class SharedOverrides(OverrideStore, BackgroundPart):
    """``async with``: loads the table (after moving a legacy file in), then keeps the
    mirror current (PostgreSQL: LISTEN/NOTIFY) until left."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        node: str,
        clock: Callable[[], datetime],
        legacy_file: Path | None = None,
        copy_file: Path | None = None,
        check_interval: float = 10.0,
        retry_min: float = 0.5,
        retry_max: float = 15.0,
        start_timeout: float = 10.0,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.node = node
        self.clock = clock
        self.legacy_file = legacy_file
        self.copy_file = copy_file
        self.check_interval = check_interval
        self._backoff = Backoff(retry_min, retry_max)
        self._wake = asyncio.Event()
        self._tasks = Tasks("calendar overrides", log)
        self.start_timeout = start_timeout
        self.started = False  # the legacy file moved, the table read once
        self.refreshes = 0  # whole-table reads done (tests and logs)
        self.listening = False  # a LISTEN session is up (PostgreSQL)
        self._outage = False  # the session was lost (or never made) and is not back yet

    # -- the admin API's writes ------------------------------------------------------------

    async def put(self, calendar_key: str, flow: str, override: Override) -> None:
        await save_override(
            self.engine, calendar_key, flow, override, node=self.node, now=self.clock()
        )
        self.set(calendar_key, override)
        self._save_copy()

    async def remove(self, key: str) -> None:
        await delete_override(self.engine, key)
        self.clear(key)
        self._save_copy()

    # -- the copy on disk -------------------------------------------------------------------

    def _save_copy(self) -> None:
        if self.copy_file is None:
            return
        data = {
            key: {
                "open": o.open,
                "until": o.until.isoformat(),
                "label": o.label,
                "set_by": o.set_by,
            }
            for key, o in self._items.items()
        }
        try:
            write_private(self.copy_file, json.dumps(data, indent=1, sort_keys=True))
        except OSError as exc:  # the mirror in memory is still right; the next save retries
            log.warning("calendar overrides: copy %s not written (%s)", self.copy_file, exc)

    def _load_copy(self) -> None:
        """The overrides in force from the last copy, until the table is read."""
        if self.copy_file is None or not self.copy_file.exists():
            return
        now = self.clock()
        self._items = {k: o for k, o in read_file(self.copy_file).items() if now < o.until}
        log.warning(
            "calendar overrides: the database not read yet; applying the last copy (%s): %s",
            self.copy_file,
            ", ".join(sorted(self._items)) or "none",
        )

    # -- reading the table -----------------------------------------------------------------

    async def refresh(self) -> None:
        """Replace the mirror with the table's overrides in force now."""
        items = await load_overrides(self.engine, self.clock())
        gone, new = set(self._items) - set(items), set(items) - set(self._items)
        self._items = items
        self.refreshes += 1
        self._save_copy()
        if gone or new:
            log.info("calendar overrides now: %s", ", ".join(sorted(items)) or "none")

    async def migrate_legacy(self) -> int:
        """Move the legacy file's overrides in force into the table, once; returns how many
        were written.  The file is renamed only after every one is in."""
        path = self.legacy_file
        if path is None or not path.exists():
            return 0
        now, moved = self.clock(), 0
        for key, override in read_file(path).items():
            if now < override.until:
                flow = key.partition("/")[0]
                written = await save_override(
                    self.engine, key, flow, override, node=self.node, now=now, only_new=True
                )
                moved += written
        log.info("calendar overrides: %d moved from %s into the database", moved, path)
        try:
            path.rename(path.with_name(path.name + MIGRATED_SUFFIX))
        except OSError as exc:  # moved again at the next start: the table's rows win then
            log.error("calendar overrides: cannot rename %s (%s)", path, exc)
        return moved

    # -- the part --------------------------------------------------------------------------

    async def start(self) -> None:
        # Calls start after this part: known overrides should apply to the first one.
        try:
            async with asyncio.timeout(self.start_timeout):
                await self._start()
        except Exception as exc:  # a database away at start: calls go on, retried behind
            log.warning("calendar overrides: not read at start (%s); retrying", exc)
            self._load_copy()

    async def run(self) -> None:
        if not self.started:
            await self._retrying("start", self._start)
        if not shared(self.engine):
            return  # SQLite: this node is the only writer
        self._tasks.spawn(self._refresher(), "overrides refresh")
        while True:
            try:
                await listen(
                    self.engine, self._wake.set, self._listening, check_interval=self.check_interval
                )
            except Exception as exc:  # the server, the network: listen again, re-read all
                # Logged once per outage (the attempts go on), not at every retry.
                level = logging.DEBUG if self._outage else logging.WARNING
                log.log(level, "calendar overrides: no LISTEN session (%s); reconnecting", exc)
                self._outage = True
            self.listening = False
            await asyncio.sleep(self._backoff.next_delay())

    async def _start(self) -> None:
        await self.migrate_legacy()
        await self.refresh()
        self.started = True

    async def _listening(self) -> None:
        await self.refresh()  # what was notified while nobody listened is in the table
        if self._outage:
            log.info("calendar overrides: LISTEN session back, table re-read")
            self._outage = False
        self.listening = True
        self._backoff.reset()

    async def _refresher(self) -> None:
        """Re-read the table after notifications (a burst is one read)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._retrying("refresh", self.refresh)

    async def _retrying(self, what: str, action: Callable[[], Awaitable[None]]) -> None:
        backoff = Backoff(self._backoff.initial, self._backoff.maximum)
        while True:
            try:
                await action()
                return
            except Exception as exc:  # the database is away: the mirror keeps what it has
                log.warning("calendar overrides: %s failed (%s); retrying", what, exc)
            await asyncio.sleep(backoff.next_delay())


def read_file(path: Path) -> dict[str, Override]:
    """The overrides of an older version's ``overrides.json`` (bad entries skipped, logged)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.error("calendar overrides in %s unreadable (%s): none restored", path, exc)
        return {}
    out: dict[str, Override] = {}
    for key, item in raw.items() if isinstance(raw, dict) else []:
        try:
            out[str(key)] = Override(
                open=bool(item["open"]),
                until=datetime.fromisoformat(item["until"]),
                label=item.get("label"),
                set_by=item.get("set_by"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            log.error("calendar override %r in %s skipped: %s", key, path, exc)
    return out


__all__ = ["COPY_FILE", "MIGRATED_SUFFIX", "OVERRIDES_FILE", "SharedOverrides", "read_file"]
