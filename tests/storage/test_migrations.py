"""The schema's migrations: exactly one head, and a database made before the branches were merged
(the seven 0002_* heads every feature added beside each other) upgrades to it with its data."""

from __future__ import annotations

from datetime import datetime, timezone

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import text

from ppcswitch.storage import db

# The heads `ppcswitch db upgrade` left a database at before 0004_limits merged them.
OLD_HEADS = ("0002_attribution", "0002_billing", "0002_fraud", "0002_publisher_codes", "0002_recovery",
             "0002_routing", "0002_web")


def test_exactly_one_head():
    heads = ScriptDirectory.from_config(db._alembic_config()).get_heads()
    assert len(heads) == 1, f"several migration heads: {sorted(heads)} (add a merge migration)"
    assert db.head_revision() == heads[0]


async def test_a_database_at_the_old_heads_upgrades_to_the_one_head_keeping_its_rows(db_url):
    engine = db.make_engine(db_url)
    try:
        def old_schema(connection):
            cfg = db._alembic_config()
            cfg.attributes["connection"] = connection
            for head in OLD_HEADS:
                command.upgrade(cfg, head)

        async with engine.begin() as conn:
            await conn.run_sync(old_schema)
            assert sorted((await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars()) == \
                sorted(OLD_HEADS)
            at = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)
            at = at.replace(tzinfo=None) if conn.dialect.name == "sqlite" else at  # as UTCDateTime stores it
            await conn.execute(text("INSERT INTO campaigns (name, paused, created_at) VALUES ('HVAC', false, :at)"),
                               {"at": at})
            await conn.execute(text("INSERT INTO buyers (name, destination, revenue_cents, ring_timeout, "
                                    "concurrency_cap, min_duration, paused, created_at) "
                                    "VALUES ('Cool Air', 'sip:+15550001111@203.0.113.10', 4000, 20, 0, 90, false, :at)"),
                               {"at": at})
    finally:
        await engine.dispose()

    assert await db.upgrade(db_url) == db.head_revision()

    engine = db.make_engine(db_url)
    try:
        async with engine.connect() as conn:
            assert list((await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars()) == \
                [db.head_revision()]
            assert list((await conn.execute(text("SELECT name FROM campaigns"))).scalars()) == ["HVAC"]
            row = (await conn.execute(text("SELECT name, revenue_cents FROM buyers"))).one()
            assert tuple(row) == ("Cool Air", 4000)
    finally:
        await engine.dispose()
