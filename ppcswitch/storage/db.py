"""Engines, sessions and migrations for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("migrations")


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, *, sqlite_busy_timeout_ms: int = 5000, **kwargs) -> AsyncEngine:
    """Async engine; SQLite files get their directory created and WAL/foreign keys on every connection."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # pre_ping: connections dropped by a PostgreSQL restart are replaced, not handed out.
        kwargs.setdefault("pool_pre_ping", True)
        return create_async_engine(url, **kwargs)
    db = parsed.database or ""
    if db and db != ":memory:" and not db.startswith("file:"):
        Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, **kwargs)
    _sqlite_pragmas(engine.sync_engine, sqlite_busy_timeout_ms)
    return engine


def _sqlite_pragmas(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                       f"busy_timeout={int(busy_timeout_ms)}"):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()


def make_writer_engine(url: str, *, sqlite_busy_timeout_ms: int = 5000) -> Engine | None:
    """For an SQLite file: a plain (pysqlite) engine on the same file, for the writer's own thread
    (storage.writer); None for PostgreSQL and in-memory databases, whose writes stay on the async engine."""
    parsed = make_url(url)
    db = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or not db or db == ":memory:" or db.startswith("file:") \
            or parsed.query.get("mode") == "memory":
        return None
    Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
    # One connection, used only by the writer's thread (jobs run one group at a time).
    engine = create_engine(parsed.set(drivername="sqlite+pysqlite"), pool_size=1, max_overflow=0)
    _sqlite_pragmas(engine, sqlite_busy_timeout_ms)
    return engine


def make_sync_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: objects returned by writer jobs stay readable after their commit.
    return async_sessionmaker(engine, expire_on_commit=False)


# alembic is imported only when migrating: it doubles the import time of every CLI command.

def _alembic_config():
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str | None:
    """The schema revision(s) of this code, e.g. "0001" or "0002_billing+0002_routing"."""
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(_alembic_config()).get_heads()
    return "+".join(sorted(heads)) or None


def _current(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return "+".join(sorted(MigrationContext.configure(connection).get_current_heads())) or None


def _upgrade_sync(connection: Connection) -> tuple[str | None, str | None]:
    # Features add their own migration branches off 0001; "heads" applies them all.
    from alembic import command

    before = _current(connection)
    if before == head_revision():
        return before, before
    cfg = _alembic_config()
    cfg.attributes["connection"] = connection  # env.py runs on this connection
    command.upgrade(cfg, "heads")
    return before, _current(connection)


async def upgrade(url: str) -> str | None:
    """Migrate the database at `url` to the newest schema; returns the revision now current."""
    alembic_log = logging.getLogger("alembic")
    if alembic_log.level == logging.NOTSET:
        alembic_log.setLevel(logging.WARNING)  # its INFO chatter would print on every CLI command
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            before, after = await conn.run_sync(_upgrade_sync)
    finally:
        await engine.dispose()
    if before != after:
        log.info("database migrated from %s to %s", before or "empty", after)
    return after
