"""The daemon's first start: a new SQLite file gets its schema; PostgreSQL's is the admin's."""

from __future__ import annotations

from pathlib import Path

import pytest

from callflow.errors import UserError
from callflow.settings import load_settings
from callflow.store import Store
from callflow.store.db import current_revision, ensure_schema, head_revision

from .conftest import Database


async def test_an_empty_database_gets_a_schema_only_when_it_is_sqlite(database: Database) -> None:
    engine = database.engine()
    if database.backend == "sqlite":
        assert await ensure_schema(engine) is True
        assert await current_revision(engine) == head_revision()
        assert await ensure_schema(engine) is False  # the second start finds it
        return
    with pytest.raises(UserError, match=r"postgresql: the daemon does not create the schema"):
        await ensure_schema(engine)
    assert await current_revision(engine) is None  # nothing was created behind the admin


async def test_the_daemons_call_log_creates_a_new_sqlite_file_with_its_schema(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "callflow.toml"
    cfg.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n')
    store = Store.from_settings(load_settings(cfg, env={}), env={})
    async with store:
        assert await current_revision(store.engine) == head_revision()
    assert (tmp_path / "state" / "callflow.db").is_file()
    assert (tmp_path / "state" / "spool").is_dir()
