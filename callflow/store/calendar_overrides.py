"""Calendar overrides in the call log's database, shared by every node on it.

An override ("closed until Monday 8:00") set through any node's admin API is one row of
``calendar_overrides`` (by calendar key, ``flow/calendar``).  On PostgreSQL the write and a
``NOTIFY callflow_overrides`` commit together; every daemon ``LISTEN``s (``listen``) and
re-reads the table when told, so the override applies on every node within the notify's
round trip.  SQLite is one node's file: the same rows, no notification.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..schedule import Override
from .models import CalendarOverride

log = logging.getLogger("callflow.store")

CHANNEL = "callflow_overrides"  # the NOTIFY channel every daemon listens to


def shared(engine: AsyncEngine) -> bool:
    """True when other nodes may share this database (PostgreSQL): they must be told."""
    return engine.dialect.name == "postgresql"


async def _notify(conn: AsyncConnection, key: str) -> None:
    if conn.dialect.name == "postgresql":  # delivered at commit, with the row
        await conn.execute(
            text("SELECT pg_notify(:channel, :key)"), {"channel": CHANNEL, "key": key}
        )


async def load_overrides(engine: AsyncEngine, now: datetime) -> dict[str, Override]:
    """Every override still in force at ``now``, by calendar key."""
    async with engine.connect() as conn:
        rows = await conn.execute(select(CalendarOverride).where(CalendarOverride.until > now))
        return {
            r.key: Override(open=r.open, until=r.until, label=r.label, set_by=r.set_by)
            for r in rows
        }


async def save_override(
    engine: AsyncEngine,
    key: str,
    flow: str,
    override: Override,
    *,
    node: str,
    now: datetime,
    only_new: bool = False,
) -> bool:
    """Write ``override`` for ``key`` (replacing one there, unless ``only_new``) and tell
    the other nodes; expired rows are dropped on the way.  False: ``only_new`` and a row
    was there."""
    row = {
        "key": key,
        "flow": flow,
        "open": override.open,
        "until": override.until,
        "label": override.label,
        "set_by": override.set_by,
        "set_at": now,
        "node": node,
    }
    insert: Any = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(CalendarOverride).values(row)
    if only_new:
        stmt = stmt.on_conflict_do_nothing(index_elements=["key"])
    else:
        fields = ("flow", "open", "until", "label", "set_by", "set_at", "node")
        stmt = stmt.on_conflict_do_update(
            index_elements=["key"], set_={f: stmt.excluded[f] for f in fields}
        )
    async with engine.begin() as conn:
        await conn.execute(delete(CalendarOverride).where(CalendarOverride.until <= now))
        written = (await conn.execute(stmt)).rowcount == 1
        if written:
            await _notify(conn, key)
    return written


async def delete_override(engine: AsyncEngine, key: str) -> bool:
    """Cancel the override of ``key`` everywhere; False when there was none."""
    async with engine.begin() as conn:
        result = await conn.execute(delete(CalendarOverride).where(CalendarOverride.key == key))
        if result.rowcount:
            await _notify(conn, key)
    return bool(result.rowcount)


async def listen(
    engine: AsyncEngine,
    on_notify: Callable[[], None],
    on_connected: Callable[[], Awaitable[None]],
    *,
    check_interval: float,
    check_timeout: float = 5.0,
) -> None:
    """One PostgreSQL ``LISTEN`` session: calls ``on_notify`` for each notification, and
    ``on_connected`` once listening (the caller re-reads the table then: whatever was
    notified while no session listened is in it).  Returns when the session is lost (the
    server closed it, or ``SELECT 1`` failed or took ``check_timeout``; a silent network
    is found within ``check_interval``), raising what broke it.  Cancel to end it."""
    lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def notified(*_: Any) -> None:
        on_notify()

    def terminated(*_: Any) -> None:
        if not lost.done():
            lost.set_result(None)

    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection  # asyncpg's connection
        assert raw is not None
        await raw.add_listener(CHANNEL, notified)
        raw.add_termination_listener(terminated)
        try:
            await on_connected()
            while not lost.done():
                await asyncio.wait({lost}, timeout=check_interval)
                if not lost.done():
                    async with asyncio.timeout(check_timeout):
                        await raw.fetchval("SELECT 1")
        finally:
            await conn.invalidate()  # closed, never back to the pool with a listener on it
    raise ConnectionError("the LISTEN session was closed by the server")


__all__ = [
    "CHANNEL",
    "delete_override",
    "listen",
    "load_overrides",
    "save_override",
    "shared",
]
