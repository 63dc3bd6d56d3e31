"""Schema migrations up and down, on SQLite and PostgreSQL; the daemon's schema check."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import IntegrityError

from callflow.errors import UserError
from callflow.store.db import check_schema, current_revision, downgrade, head_revision, upgrade
from callflow.store.models import FALLBACK_FATES, Base

from .conftest import Database

TABLES = {
    "cdr_imports",
    "calls",
    "call_steps",
    "callbacks",
    "trunk_events",
    "admin_actions",
    "calendar_overrides",
    "drills",
}


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names()) - {"alembic_version"}


def _diff(conn: Connection) -> list[object]:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(ctx, Base.metadata))


async def test_upgrade_downgrade_upgrade(database: Database) -> None:
    engine = database.engine()
    assert await current_revision(engine) is None
    await upgrade(engine)
    assert await current_revision(engine) == head_revision()
    async with engine.connect() as conn:
        assert await conn.run_sync(_tables) == TABLES
        # The migrations build exactly what the models describe.
        assert await conn.run_sync(_diff) == []
    await downgrade(engine, "base")
    assert await current_revision(engine) is None
    async with engine.connect() as conn:
        assert await conn.run_sync(_tables) == set()
    await upgrade(engine)
    await upgrade(engine)  # idempotent
    assert await current_revision(engine) == head_revision()


async def test_check_schema_refuses_an_empty_or_older_schema(database: Database) -> None:
    engine = database.engine()
    with pytest.raises(UserError) as err:
        await check_schema(engine)
    # PostgreSQL's schema is the admin's to create: the message says the daemon will not.
    server = "postgresql: the daemon does not create the schema, " * (database.backend != "sqlite")
    assert str(err.value) == (
        f"database schema is at nothing (empty database), this callflow needs "
        f"{head_revision()}: {server}run `callflow db upgrade`"
    )
    await upgrade(engine)
    await check_schema(engine)


async def test_check_schema_refuses_an_unknown_revision(database: Database) -> None:
    engine = database.engine()
    await upgrade(engine)
    async with engine.begin() as conn:
        await conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999_future'")
    with pytest.raises(UserError, match="at 9999_future, unknown to this callflow"):
        await check_schema(engine)


async def test_the_migrated_schema_takes_every_fallback_fate_and_nothing_else(
    database: Database,
) -> None:
    engine = database.engine()
    await upgrade(engine)
    insert = (
        "INSERT INTO calls (id, flow, flow_version, dialed, caller, started, driver, "
        "fallback_fate) VALUES (:id, 'f', '', '100', '', '2026-12-04 10:00:00', 'ari', :fate)"
    )
    async with engine.begin() as conn:
        for fate in (*FALLBACK_FATES, None):
            await conn.execute(text(insert), {"id": f"c-{fate}", "fate": fate})
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(text(insert), {"id": "c-bad", "fate": "served"})
