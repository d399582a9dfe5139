"""Storage: SQLite or PostgreSQL through SQLAlchemy, all writes through one Writer.

    engine = make_engine(url); await upgrade(url)
    writer = Writer(make_sessionmaker(engine), max_queue=settings.database.write_queue_max); await writer.start()
    await writer.run(lambda s: repo.save_call(s, record))
"""

from ppcswitch.storage.db import make_engine, make_sessionmaker, upgrade
from ppcswitch.storage.validate import ValidationError
from ppcswitch.storage.writer import SyncJob, Writer, WriterStopped, is_transient

__all__ = ["SyncJob", "make_engine", "make_sessionmaker", "upgrade", "ValidationError", "Writer", "WriterStopped",
           "is_transient"]
