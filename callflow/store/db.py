"""Connecting to the call log, and its schema version (alembic migrations in ``store/migrations/``).

``[database] url`` names the database without its password: SQLite
(``sqlite+aiosqlite:///callflow.db``, a relative path is relative to ``[daemon] state_dir``)
or PostgreSQL (``postgresql+asyncpg://callflow@db.example/callflow``, production).  The
password comes from ``password_file`` or the environment variable ``password_env``, never
from the file.  SQLite connections use WAL (readers never block the writer), a busy timeout
(a second writer waits instead of failing at once) and enforce foreign keys.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ..errors import SettingsError, UserError
from ..settings import Settings, read_secret

# The migrations ship inside the package, so an installed wheel can create its schema.
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000


def database_url(settings: Settings, env: Mapping[str, str] | None = None) -> URL:
    """The SQLAlchemy URL of ``[database]``, with its password (from a secret) and, for
    SQLite, an absolute path."""
    db = settings.database
    try:
        url = make_url(db.url)
    except ArgumentError:
        raise SettingsError(f"[database] url: not a database URL: {db.url!r}") from None
    if url.password is not None:
        raise SettingsError(
            "[database] url: a password does not belong in the URL: "
            "set password_env (an environment variable) or password_file"
        )
    if url.get_backend_name() == "sqlite":
        if url.drivername != "sqlite+aiosqlite":
            raise SettingsError("[database] url: use sqlite+aiosqlite:///PATH for SQLite")
        path = url.database or ""
        if path and path != ":memory:" and not path.startswith("file:"):
            url = url.set(database=str(settings.state_path(path).absolute()))
        return url
    if url.get_backend_name() != "postgresql":
        raise SettingsError(
            "[database] url: the call log lives in SQLite (sqlite+aiosqlite:///PATH) or "
            f"PostgreSQL (postgresql+asyncpg://...), not {url.drivername}"
        )
    if url.get_backend_name() == "postgresql" and url.drivername != "postgresql+asyncpg":
        raise SettingsError("[database] url: use postgresql+asyncpg://... for PostgreSQL")
    if db.password_file:
        password = read_secret(
            None, db.password_file, "[database] password", settings.base_dir, env
        )
        return url.set(password=password)
    environ = os.environ if env is None else env
    if db.password_env and environ.get(db.password_env):
        return url.set(password=environ[db.password_env])
    return url  # no password: trust, peer or ~/.pgpass authentication


def create_engine(
    url: URL | str, *, write_timeout: float | None = None, **kwargs: Any
) -> AsyncEngine:
    """An async engine: SQLite with WAL, busy timeout and foreign keys; PostgreSQL with
    pinged connections, a connect timeout and (``write_timeout``) a statement timeout on
    the client side, so that a database that stops answering cannot hang the writer."""
    url = make_url(url)
    # A failed statement's message must not carry its parameters (caller numbers) into
    # logs and exceptions, nor may an engine's echo.
    kwargs.setdefault("hide_parameters", True)
    if url.get_backend_name() == "sqlite":
        path = url.database or ""
        if path and path != ":memory:" and not path.startswith("file:"):
            private_file(Path(path))
        # aiosqlite logs every statement with its parameters (caller numbers) at DEBUG:
        # a daemon run with log_level = "debug" must not write them out.
        logging.getLogger("aiosqlite").setLevel(max(logging.INFO, _level("aiosqlite")))
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    connect_args = kwargs.setdefault("connect_args", {})
    connect_args.setdefault("timeout", 10)
    if write_timeout is not None:
        connect_args.setdefault("command_timeout", write_timeout)
    return create_async_engine(url, **kwargs)


def _level(name: str) -> int:
    return logging.getLogger(name).level


def private_file(path: Path) -> None:
    """Create ``path`` (and its folder) readable by its owner only, or narrow an existing
    one to that: the call log holds patient numbers.  SQLite gives its -wal and -shm
    files the database file's mode."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable once checkpointed
        cursor.execute("PRAGMA foreign_keys=ON")
        # Deleted rows (purged calls, erased callback numbers) are overwritten, not left in
        # free pages where a copy of the file would still show them.
        cursor.execute("PRAGMA secure_delete=ON")
    finally:
        cursor.close()


# -- schema version (alembic) -------------------------------------------------------------


def alembic_config() -> Config:
    if not (MIGRATIONS / "env.py").is_file():
        raise UserError(f"callflow's migrations are missing: no {MIGRATIONS}/env.py")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1, f"several migration heads: {heads}"
    return heads[0]


def _current(conn: Connection) -> str | None:
    heads = MigrationContext.configure(conn).get_current_heads()
    return heads[0] if heads else None


async def current_revision(engine: AsyncEngine) -> str | None:
    """The database's schema revision; None for an empty database."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


async def check_schema(engine: AsyncEngine) -> None:
    """Refuse (``UserError``) a database whose schema is not this callflow's head revision."""
    current = await current_revision(engine)
    head = head_revision()
    if current == head:
        return
    script = ScriptDirectory.from_config(alembic_config())
    known = {rev.revision for rev in script.walk_revisions()}
    if current is not None and current not in known:
        raise UserError(
            f"database schema is at {current}, unknown to this callflow (it needs {head}): "
            "was it upgraded by a newer callflow?"
        )
    how = "run `callflow db upgrade`"
    if current is None and engine.dialect.name != "sqlite":
        # Only the embedded SQLite file gets its schema from the daemon; a server's schema
        # is the admin's to create, with the rights that needs.
        how = f"{engine.dialect.name}: the daemon does not create the schema, {how}"
    raise UserError(
        f"database schema is at {current or 'nothing (empty database)'}, this callflow needs "
        f"{head}: {how}"
    )


def missing_sqlite_file(url: URL) -> Path | None:
    """The SQLite file ``url`` names when it does not exist (connecting would create it)."""
    if url.get_backend_name() != "sqlite":
        return None
    path = url.database or ""
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return None if Path(path).exists() else Path(path)


async def ensure_schema(engine: AsyncEngine) -> bool:
    """The daemon's start: an empty SQLite database gets the newest schema (the embedded
    default needs no setup step); anything else must already be at head (``check_schema``).
    True when the schema was created."""
    created = False
    if engine.dialect.name == "sqlite" and await current_revision(engine) is None:
        await upgrade(engine, "head")
        created = True
    await check_schema(engine)
    return created


async def _migrate(engine: AsyncEngine, fn: Any, revision: str) -> None:
    cfg = alembic_config()

    def run(conn: Connection) -> None:
        cfg.attributes["connection"] = conn
        fn(cfg, revision)

    sqlite = engine.dialect.name == "sqlite"
    async with engine.connect() as conn:
        if sqlite:
            # Batch migrations re-create tables: with foreign keys on, dropping `calls`
            # would cascade to its steps.  (The pragma is a no-op inside a transaction.)
            await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        try:
            await conn.run_sync(run)
            await conn.commit()
        except BaseException:
            await conn.rollback()
            raise
        finally:
            if sqlite:  # outside any transaction again, where the pragma takes effect
                await conn.exec_driver_sql("PRAGMA foreign_keys=ON")


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    await _migrate(engine, command.upgrade, revision)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    await _migrate(engine, command.downgrade, revision)


__all__ = [
    "MIGRATIONS",
    "check_schema",
    "create_engine",
    "current_revision",
    "database_url",
    "downgrade",
    "ensure_schema",
    "head_revision",
    "upgrade",
]
