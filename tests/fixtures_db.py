"""Database fixtures (SQLite and PostgreSQL).

`db_url` runs a test on both backends: a fresh SQLite file, and a PostgreSQL
database created once per test session (schema reset before every test).
PostgreSQL: $PPCSWITCH_TEST_POSTGRES (default postgresql://postgres@127.0.0.1:5432/test)
is the admin connection used to create and drop the test database. When it is
unreachable the postgresql cases are skipped, or fail with
PPCSWITCH_REQUIRE_SERVICES=1 (CI).

On top: `engine` (migrated to head), `sessionmaker`, `session`, `writer` (started).
"""

from __future__ import annotations

import asyncio
import os

import asyncpg
import pytest

from ppcswitch.storage.db import make_engine, make_sessionmaker, make_sync_sessionmaker, make_writer_engine, upgrade
from ppcswitch.storage.writer import Writer

__all__ = ["pg_admin_dsn", "pg_database", "postgres_url", "sqlite_url", "db_url",
           "engine", "sessionmaker", "session", "writer"]

PG_ADMIN_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


def _require_services() -> bool:
    return os.environ.get("PPCSWITCH_REQUIRE_SERVICES") == "1"


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    return os.environ.get("PPCSWITCH_TEST_POSTGRES", PG_ADMIN_DEFAULT)


@pytest.fixture(scope="session")
def pg_database(pg_admin_dsn):
    """(asyncpg DSN of a fresh per-session database, None) or (None, why it is unavailable)."""
    name = f"ppcswitch_test_{os.getpid()}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(pg_admin_dsn, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}"'))
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
        yield None, f"PostgreSQL unreachable at {pg_admin_dsn}: {exc.__class__.__name__}: {exc}"
        return
    base, _, _ = pg_admin_dsn.rpartition("/")
    yield f"{base}/{name}", None
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def postgres_url(pg_database) -> str:
    """SQLAlchemy URL of the session's PostgreSQL test database, emptied for this test."""
    dsn, why = pg_database
    if dsn is None:
        if _require_services():
            pytest.fail(f"{why} (PPCSWITCH_REQUIRE_SERVICES=1)")
        pytest.skip(why)

    async def reset() -> None:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        finally:
            await conn.close()

    asyncio.run(reset())
    return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/db/ppcswitch.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request) -> str:
    """An empty database (not migrated), on each backend in turn."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")


@pytest.fixture
async def engine(db_url):
    await upgrade(db_url)
    eng = make_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def sessionmaker(engine):
    return make_sessionmaker(engine)


@pytest.fixture
async def session(sessionmaker):
    async with sessionmaker() as s:
        yield s


@pytest.fixture
async def writer(sessionmaker, db_url):
    """As the controller has it: with SQLite, SyncJobs run on the writer's own thread and connection."""
    sync_engine = make_writer_engine(db_url)
    w = Writer(sessionmaker, max_queue=100, retry_min=0.01, retry_max=0.2,
               sync_sessionmaker=make_sync_sessionmaker(sync_engine) if sync_engine else None)
    await w.start()
    yield w
    await w.stop(timeout=30)
    if sync_engine is not None:
        sync_engine.dispose()
