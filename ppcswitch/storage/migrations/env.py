"""Alembic environment, driven only from ppcswitch.storage.db.upgrade().

upgrade() opens an async connection and calls us through connection.run_sync,
so here the connection is a plain synchronous one handed over in
config.attributes; no alembic.ini and no engine of our own.
"""

from alembic import context

from ppcswitch.storage.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with ppcswitch.storage.db.upgrade() (or `ppcswitch db upgrade`)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
)
with context.begin_transaction():
    context.run_migrations()
