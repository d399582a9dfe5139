"""`ppcswitch dev`: the whole switch on one machine, for a first look.

Sandbox Asterisk (built once), embedded SQLite, the demo network (campaign
HVAC, tracking number +18005550100, buyers A and B played by SIPp), and the
controller in the foreground. Ctrl-C stops the controller and the demo buyers;
Asterisk keeps running until `ppcswitch sandbox down`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys

from ppcswitch.config import Settings
from ppcswitch.sandbox import Sandbox, SandboxError
from ppcswitch.cli import network as network_cli
from ppcswitch.storage import db

DEMO_BUYER_PORTS = (5071, 5072)  # cli.network.DEMO_BUYERS dial these


async def _prepare_database(settings: Settings) -> tuple[list[str], str | None]:
    """(what the demo seed created, the new admin's password when the first admin was just made)."""
    from ppcswitch.cli.users import ensure_first_admin

    await db.upgrade(settings.database.url)
    engine = db.make_engine(settings.database.url)
    try:
        async with db.make_sessionmaker(engine)() as session, session.begin():
            created = await network_cli.seed_demo(session, settings.routing.default_region)
            return created, await ensure_first_admin(session, "admin")
    finally:
        await engine.dispose()


def run(settings: Settings) -> int:
    from ppcswitch.app import serve

    box = Sandbox(settings.sandbox)
    try:
        box.check_can_run()
        box.build()
        if not box.is_running():
            box.start()
        settings = dataclasses.replace(settings, ami=dataclasses.replace(settings.ami, **dataclasses.asdict(box.ami_settings())))
        # Asterisk writes its own CDRs inside the sandbox root: recover missed calls from there.
        cdr_file = str(box.root / settings.recovery.cdr_file.lstrip("/"))
        settings = dataclasses.replace(settings, recovery=dataclasses.replace(settings.recovery, cdr_file=cdr_file))
        created, admin_password = asyncio.run(_prepare_database(settings))
        buyers = [box.start_sipp_uas("answer", port=port) for port in DEMO_BUYER_PORTS]
    except SandboxError as exc:
        print(f"ppcswitch dev: {exc}", file=sys.stderr)
        return 2
    print(f"database {settings.database.url}: " + (", ".join(created) + " created" if created else "demo network in place"))
    login = (f"user admin, password {admin_password}" if admin_password
             else "log in with your user; `ppcswitch user add NAME --role admin` makes another")
    message = f"""
ppcswitch is running.
  Asterisk (sandbox):  SIP 127.0.0.1:5060, trunk = calls from 127.0.0.2, AMI 127.0.0.1:5038
  Demo buyers (SIPp):  127.0.0.1:{DEMO_BUYER_PORTS[0]} (Buyer A), 127.0.0.1:{DEMO_BUYER_PORTS[1]} (Buyer B)
  Admin panel:         http://{settings.http.host}:{settings.http.port}/  ({login})
  Health:              http://{settings.http.host}:{settings.http.port}/healthz
  Metrics:             http://{settings.http.host}:{settings.http.port}/metrics

Place a test call from another terminal (70 s: billable against the 60 s minimum):
  ppcswitch sandbox call +18005550100 --seconds 70
and see it recorded:
  ppcswitch calls list
Ctrl-C stops the controller and the demo buyers; `ppcswitch sandbox down` stops Asterisk.
"""
    try:
        return serve(settings, ready_message=message)
    finally:
        for proc in buyers:
            box.stop_sipp(proc)
