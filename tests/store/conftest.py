"""The call-log tests run twice: on SQLite (always) and on PostgreSQL.

PostgreSQL comes from ``CALLFLOW_TEST_PG_URL`` (``export CALLFLOW_TEST_PG_URL="$(scripts/
postgres up)"``).  Without it the PostgreSQL runs are skipped locally, and FAIL when
``CI=true``: CI must never pass without having tested the production database.

Each test gets a database of its own: a fresh SQLite file, or a fresh PostgreSQL schema
(dropped afterwards) selected with ``search_path``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from callflow.store.db import create_engine, upgrade

PG_ENV = "CALLFLOW_TEST_PG_URL"
REPO = Path(__file__).resolve().parents[2]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def pg_url() -> str | None:
    url = os.environ.get(PG_ENV)
    if url:
        return url
    if in_ci():
        pytest.fail(
            f"{PG_ENV} is not set: CI must run the store tests on PostgreSQL too "
            '(export CALLFLOW_TEST_PG_URL="$(scripts/postgres up)")'
        )
    pytest.skip(f'PostgreSQL: set {PG_ENV} (e.g. export {PG_ENV}="$(scripts/postgres up)")')


@dataclass
class Database:
    """One test database; ``engine()`` makes engines on it (each one a 'daemon')."""

    backend: str
    url: str
    connect_args: dict[str, Any] = field(default_factory=dict)
    engines: list[AsyncEngine] = field(default_factory=list)

    def engine(self, **kwargs: Any) -> AsyncEngine:
        if self.connect_args:
            kwargs.setdefault("connect_args", {}).update(self.connect_args)
        engine = create_engine(self.url, **kwargs)
        self.engines.append(engine)
        return engine

    async def dispose(self) -> None:
        for e in self.engines:
            await e.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        db = Database("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")
        yield db
        await db.dispose()
        return
    url = pg_url()
    assert url is not None
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url)
    async with admin.begin() as conn:
        await conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    db = Database("postgresql", url, {"server_settings": {"search_path": schema}})
    try:
        yield db
    finally:
        await db.dispose()
        async with admin.begin() as conn:
            await conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        await admin.dispose()


@pytest.fixture
async def engine(database: Database) -> AsyncEngine:
    """An engine on an upgraded (head) database."""
    e = database.engine()
    await upgrade(e)
    return e
