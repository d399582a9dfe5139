"""The routing snapshot: everything routing needs, read from the database as frozen values.

Composes the readers of each part (buyers, campaigns and numbers in repo.py; rules, RTB and
campaign options in repo_routing.py; IVR publisher codes in attribution/codes.py), so that none of
them has to know the others.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from ppcswitch.attribution import codes
from ppcswitch.config import RoutingSettings
from ppcswitch.routing import model as m
from ppcswitch.storage import repo, repo_routing


async def load_network(session: AsyncSession, routing: RoutingSettings) -> m.Network:
    """Everything routing needs, as frozen values, from one consistent state of the configuration."""
    # The reads below are separate statements (READ COMMITTED, SQLite autocommit reads), so a
    # write could land between them. Every write bumps the version: unchanged around the reads
    # means nothing changed during them. A torn read is retried; the last resort keeps the older
    # version number, so the controller's next poll reloads anyway.
    for _ in range(5):
        version = await repo.config_version(session)
        network = await repo.read_network(session, routing, version)
        network = await repo_routing.with_routing(session, network)
        network = await codes.with_codes(session, network)
        if await repo.config_version(session) == version:
            break
    return network
