"""What every command group shares: `group` and `command` to register them, `run` an action against
the database, the `Context` it gets, `on_off` for switches, `call_to_json` for call records.

Bad input prints one clear line and exits 2; database trouble exits 1. Writes go through a Writer
like everywhere else, so a controller writing at the same time only makes a command wait, never fail.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from datetime import datetime
from typing import Any, Awaitable, Callable

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ppcswitch.config import Settings
from ppcswitch.storage.db import make_engine, make_sessionmaker, upgrade
from ppcswitch.storage.repo import UNSET
from ppcswitch.storage.validate import ValidationError
from ppcswitch.storage.writer import Writer


@dataclasses.dataclass
class Context:
    settings: Settings
    writer: Writer
    sessionmaker: async_sessionmaker[AsyncSession]


Action = Callable[[Context, argparse.Namespace], Awaitable[int]]


def run(settings: Settings, action: Action, args: argparse.Namespace, *, migrate: bool | None = None) -> int:
    async def main() -> int:
        url = settings.database.url
        if settings.database.auto_migrate if migrate is None else migrate:
            await upgrade(url)
        engine = make_engine(url)
        sessionmaker = make_sessionmaker(engine)
        # A command gives up after a while; only the controller's writer retries forever.
        writer = Writer(sessionmaker, max_queue=settings.database.write_queue_max, give_up_after=30.0)
        await writer.start()
        try:
            return await action(Context(settings, writer, sessionmaker), args)
        finally:
            await writer.stop()
            await engine.dispose()

    try:
        return asyncio.run(main())
    except ValidationError as exc:
        print(f"ppcswitch: {exc}", file=sys.stderr)
        return 2
    except (SQLAlchemyError, OSError) as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        print(f"ppcswitch: database error: {detail}", file=sys.stderr)
        return 1


def group(sub, name: str, help: str):
    """`ppcswitch NAME COMMAND ...`: a command group; returns where its commands are added."""
    return sub.add_parser(name, help=help).add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")


def command(group_sub, name: str, action: Action, help: str, **kw) -> argparse.ArgumentParser:
    """One command of a group, whose action runs against the database (`run`); returns its parser
    for the arguments."""
    parser = group_sub.add_parser(name, help=help)
    parser.set_defaults(func=lambda settings, args: run(settings, action, args, **kw))
    return parser


def on_off(value: str | None, field: str):
    if value is None:
        return UNSET
    v = value.strip().lower()
    if v in ("on", "yes", "true", "1"):
        return True
    if v in ("off", "no", "false", "0"):
        return False
    raise ValidationError(field, f"expected on or off, got {value!r}")


def call_to_json(record) -> dict[str, Any]:
    """A CallRecord as JSON-ready values: ISO 8601 times, money in integer cents."""
    def conv(value):
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, list):
            return [conv(x) for x in value]
        if isinstance(value, dict):
            return {k: conv(x) for k, x in value.items()}
        return value
    return conv(dataclasses.asdict(record))
