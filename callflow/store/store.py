"""The call log's facade for the composition root: see ``callflow.store``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import Self

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from ..errors import CallflowError
from ..settings import Settings
from . import db
from .leftovers import purge_leftovers
from .maintenance import PurgeResult, purge
from .privacy import CallerPrivacy
from .recorder import Recorder

log = logging.getLogger("callflow.store")


class StoreUnavailable(CallflowError):
    """The database did not answer."""


class Store:
    """The call log for the daemon.  As an async context manager it is the daemon's first
    part and its last: entering it locks the spool, checks the schema and starts the
    recorder's writer; leaving it writes (or spools) every record still queued, stops the
    writer and closes the database connections."""

    def __init__(
        self,
        engine: AsyncEngine,
        recorder: Recorder,
        *,
        privacy: CallerPrivacy,
        retention_days: int = 365,
        callback_erase_days: int | None = None,
    ) -> None:
        self.engine = engine
        self.recorder = recorder
        self.privacy = privacy
        self.retention_days = retention_days
        self.callback_erase_days = callback_erase_days

    @classmethod
    def from_settings(cls, settings: Settings, env: Mapping[str, str] | None = None) -> Store:
        """Build the store; reads secrets (password, HMAC key) but opens no connection."""
        privacy = CallerPrivacy.from_settings(settings)
        d = settings.database
        engine = db.create_engine(db.database_url(settings, env), write_timeout=d.write_timeout)
        recorder = Recorder(
            engine,
            settings.state_path(d.spool_dir),
            privacy=privacy,
            batch_size=d.batch_size,
            flush_interval=d.flush_interval,
            commit_interval=d.commit_interval,
            sync_interval=d.sync_interval,
            write_timeout=d.write_timeout,
            memory_limit=d.memory_limit,
            node=settings.node.resolved,
        )
        return cls(
            engine,
            recorder,
            privacy=privacy,
            retention_days=settings.privacy.retention_days,
            callback_erase_days=settings.privacy.callback_erase_days,
        )

    async def __aenter__(self) -> Self:
        self.recorder.open()  # refuses a spool already used by another daemon
        try:
            await self.ensure_schema()  # a schema behind: refuse to start, say what to run
        except StoreUnavailable as exc:
            # Calls matter more than the log: start, and spool until the database is back.
            log.warning("database unavailable at start (%s): recording to the spool", exc)
        await self.recorder.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.recorder.__aexit__(exc_type, exc, tb)
        finally:
            await self.dispose()

    async def ensure_schema(self, timeout: float = 15.0) -> None:
        """Create the schema of a new SQLite file; refuse any other schema not at head."""
        try:
            async with asyncio.timeout(timeout):
                if await db.ensure_schema(self.engine):
                    log.info("new call log: schema %s created", db.head_revision())
        except (OSError, DBAPIError) as exc:
            raise StoreUnavailable(f"database unavailable: {exc}".splitlines()[0]) from exc

    async def check_schema(self, timeout: float = 15.0) -> None:
        try:
            async with asyncio.timeout(timeout):
                await db.check_schema(self.engine)
        except (OSError, DBAPIError) as exc:
            raise StoreUnavailable(f"database unavailable: {exc}".splitlines()[0]) from exc

    async def purge(self, now: datetime) -> PurgeResult:
        """The retention purge: the database, then the journal's leftovers (off the loop)."""
        result = await purge(
            self.engine, now, self.retention_days, callback_erase_days=self.callback_erase_days
        )
        await asyncio.to_thread(purge_leftovers, self.recorder.spool.dir, result.cutoff)
        return result

    async def dispose(self) -> None:
        await self.engine.dispose()


__all__ = ["Store", "StoreUnavailable"]
