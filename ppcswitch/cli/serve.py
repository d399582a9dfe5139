"""`ppcswitch serve` (the controller) and `ppcswitch dev` (everything locally)."""

from __future__ import annotations

from ppcswitch.config import Settings


def add_cli(sub) -> None:
    p = sub.add_parser("serve", help="run the controller (FastAGI, AMI, HTTP)")
    p.set_defaults(func=lambda settings, args: serve(settings))
    p = sub.add_parser("dev", help="run everything locally: sandbox Asterisk, demo network and buyers, controller")
    p.set_defaults(func=lambda settings, args: dev(settings))


def serve(settings: Settings) -> int:
    from ppcswitch import app  # the controller's imports load only for the commands that run it

    return app.serve(settings)


def dev(settings: Settings) -> int:
    from ppcswitch import devrun

    return devrun.run(settings)
