"""Several daemons on one database: calendar overrides shared by every node (the table,
PostgreSQL LISTEN/NOTIFY), and a callback request completed by one node only."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from callflow.overrides import SharedOverrides
from callflow.schedule import Override
from callflow.store.db import create_engine, upgrade
from callflow.store.maintenance import complete_callback
from callflow.store.models import AdminAction, CalendarOverride, CallbackRequestRow
from tests.support.polling import wait_until

from .conftest import Database
from .support import T0

log = logging.getLogger("tests.cluster")

NOW = T0
CLOSED = Override(open=False, until=NOW + timedelta(days=3), label="grippe", set_by="marie")


def node(
    engine: AsyncEngine, name: str, *, legacy_file: Path | None = None, check: float = 10.0
) -> SharedOverrides:
    return SharedOverrides(
        engine,
        node=name,
        clock=lambda: NOW,
        legacy_file=legacy_file,
        check_interval=check,
        retry_min=0.05,
        retry_max=0.5,
    )


async def rows(engine: AsyncEngine) -> dict[str, tuple[bool, str]]:
    async with engine.connect() as conn:
        got = await conn.execute(select(CalendarOverride))
        return {r.key: (r.open, r.node) for r in got}


async def test_an_override_survives_a_restart_and_still_reverts(engine: AsyncEngine) -> None:
    async with node(engine, "a") as a:
        await a.put("cabinet/office", "cabinet", CLOSED)
        short = Override(open=True, until=NOW + timedelta(hours=1))
        await a.put("cabinet/short", "cabinet", short)
        assert a.get("cabinet/office", NOW) == CLOSED
    later = NOW + timedelta(hours=2)
    again = SharedOverrides(engine, node="a", clock=lambda: later)
    async with again:  # the daemon restarted
        assert again.get("cabinet/office", later) == CLOSED
        assert again.get("cabinet/short", later) is None  # expired meanwhile
        await again.remove("cabinet/office")
        assert again.get("cabinet/office", later) is None
    async with node(engine, "a") as third:
        assert third.active(NOW) == {"cabinet/short": short}  # only the cancelled one went


async def test_a_legacy_overrides_file_is_moved_into_the_database_once(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    legacy = tmp_path / "overrides.json"
    legacy.write_text(
        json.dumps(
            {
                "cabinet/office": {
                    "open": False,
                    "until": (NOW + timedelta(days=1)).isoformat(),
                    "label": "formation",
                    "set_by": "admin",
                },
                "cabinet/old": {"open": True, "until": (NOW - timedelta(days=1)).isoformat()},
                "cabinet/broken": {"open": True},
                "cabinet/desk": {"open": True, "until": (NOW + timedelta(days=1)).isoformat()},
            }
        )
    )
    # Another node had set the desk's override already: the table's wins.
    async with node(engine, "b") as b:
        await b.put("cabinet/desk", "cabinet", CLOSED)
    async with node(engine, "a", legacy_file=legacy) as a:
        assert a.get("cabinet/office", NOW) == Override(
            open=False, until=NOW + timedelta(days=1), label="formation", set_by="admin"
        )
        assert a.get("cabinet/desk", NOW) == CLOSED
        assert set(a.active(NOW)) == {"cabinet/office", "cabinet/desk"}
    assert not legacy.exists() and (tmp_path / "overrides.json.migrated").exists()
    assert await rows(engine) == {"cabinet/office": (False, "a"), "cabinet/desk": (False, "b")}
    async with node(engine, "a", legacy_file=legacy) as again:  # nothing moved twice
        assert set(again.active(NOW)) == {"cabinet/office", "cabinet/desk"}


@pytest.fixture
async def pg(database: Database) -> AsyncIterator[Database]:
    if database.backend != "postgresql":
        pytest.skip("LISTEN/NOTIFY: PostgreSQL only (SQLite is one node)")
    yield database


async def _two_nodes(
    stack: AsyncExitStack, database: Database, check: float = 10.0
) -> tuple[SharedOverrides, SharedOverrides]:
    first = database.engine()
    await upgrade(first)
    a = await stack.enter_async_context(node(first, "pbx-1", check=check))
    b = await stack.enter_async_context(node(database.engine(), "pbx-2", check=check))
    await wait_until(lambda: a.listening and b.listening, timeout=30.0)
    return a, b


async def test_an_override_set_on_one_node_holds_on_the_other(pg: Database) -> None:
    async with AsyncExitStack() as stack:
        a, b = await _two_nodes(stack, pg)
        started = time.monotonic()
        await a.put("cabinet/office", "cabinet", CLOSED)
        # The bound is 1 s; a test polls generously and logs what it took
        # (benchmarks/overrides.py measures it).
        await wait_until(lambda: b.get("cabinet/office", NOW) == CLOSED, timeout=10.0)
        log.info("override seen by the other node after %.3f s", time.monotonic() - started)
        await b.remove("cabinet/office")
        await wait_until(lambda: a.get("cabinet/office", NOW) is None, timeout=10.0)
        assert a.active(NOW) == b.active(NOW) == {}


async def test_a_lost_listen_session_is_rebuilt_and_rereads_the_whole_table(
    pg: Database,
) -> None:
    """A notification sent while a node was not listening is not lost: the new session
    re-reads the table.  Here the row is written with no NOTIFY at all, so only that
    re-read can bring it."""
    async with AsyncExitStack() as stack:
        _, b = await _two_nodes(stack, pg, check=3600.0)
        engine = pg.engines[0]
        async with engine.begin() as conn:
            await conn.execute(
                insert(CalendarOverride).values(
                    key="cabinet/office",
                    flow="cabinet",
                    open=False,
                    until=CLOSED.until,
                    label=None,
                    set_by="marie",
                    set_at=NOW,
                    node="pbx-1",
                )
            )
        assert b.get("cabinet/office", NOW) is None  # nobody was told
        before = b.refreshes
        admin = create_engine(pg.url)
        try:
            async with admin.begin() as conn:
                killed = await conn.scalar(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                        "AND query ILIKE 'LISTEN%'"
                    )
                )
        finally:
            await admin.dispose()
        assert killed and killed >= 1
        await wait_until(lambda: b.get("cabinet/office", NOW) is not None, timeout=30.0)
        await wait_until(lambda: b.listening, timeout=30.0)
        assert b.refreshes > before


async def test_a_callback_request_is_completed_by_one_node_only(database: Database) -> None:
    """Two daemons' staff press "done" on the same request at once: one wins, one is told
    it is no longer pending, and the audit has one entry."""
    engines = [database.engine(), database.engine()]
    await upgrade(engines[0])
    async with engines[0].begin() as conn:
        for i in range(20):
            await conn.execute(
                insert(CallbackRequestRow).values(
                    call_id=f"c{i}",
                    flow="cabinet",
                    queue="same-day",
                    priority="high",
                    caller="0612345678",
                    status="pending",
                    created=NOW,
                )
            )
        ids = list((await conn.execute(select(CallbackRequestRow.id))).scalars())
    for cid in ids:
        results = await asyncio.gather(
            *(complete_callback(e, cid, by=f"staff-{n}", at=NOW) for n, e in enumerate(engines * 2))
        )
        assert sorted(results) == [False, False, False, True], cid
    async with engines[1].connect() as conn:
        done = (await conn.execute(select(CallbackRequestRow.status))).scalars().all()
        audits = (await conn.execute(select(AdminAction.action))).scalars().all()
    assert done == ["done"] * len(ids)
    assert audits == ["callback done"] * len(ids)


async def test_a_start_with_the_database_away_applies_the_last_copy_of_the_overrides(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    # Found in review: with the overrides only in the database, a daemon restarted while it
    # was away ignored "closed until Monday" and rang the empty desk.
    copy = tmp_path / "overrides-copy.json"
    short = Override(open=True, until=NOW + timedelta(hours=1))
    async with SharedOverrides(engine, node="a", clock=lambda: NOW, copy_file=copy) as a:
        await a.put("cabinet/office", "cabinet", CLOSED)
        await a.put("cabinet/short", "cabinet", short)
    assert copy.stat().st_mode & 0o777 == 0o600
    later = NOW + timedelta(hours=2)
    away = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'calls.db'}")
    restarted = SharedOverrides(
        away, node="a", clock=lambda: later, copy_file=copy, start_timeout=2.0, retry_max=0.5
    )
    try:
        async with restarted:
            assert not restarted.started  # the table was not read
            assert restarted.active(later) == {"cabinet/office": CLOSED}  # short expired
    finally:
        await away.dispose()
    # The table read again replaces the copy's view (an override removed meanwhile goes).
    async with SharedOverrides(engine, node="b", clock=lambda: later, copy_file=copy) as b:
        await b.remove("cabinet/office")
    assert json.loads(copy.read_text()) == {}
