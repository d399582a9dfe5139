"""`ppcswitch` command line: serve, sandbox, db, network objects, dev."""

from __future__ import annotations

import argparse
import logging
import sys

from ppcswitch.config import ConfigError, load_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppcswitch", description=__doc__)
    parser.add_argument("--config", help="TOML configuration file (default: $PPCSWITCH_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    # Each area registers its own commands; see the add_cli functions.
    from ppcswitch import app, sandbox
    from ppcswitch.storage import cli as storage_cli

    app.add_cli(sub)
    sandbox.add_cli(sub)
    storage_cli.add_cli(sub)
    from ppcswitch.billing.cli import add_cli as add_billing_cli  # report, ledger, rule, rerate
    add_billing_cli(sub)
    from ppcswitch.web import cli as web_cli

    web_cli.add_cli(sub)
    from ppcswitch.attribution import cli as attribution_cli  # pool, postback, attribution

    attribution_cli.add_cli(sub)
    from ppcswitch.attribution import codes as codes_cli  # IVR publisher codes

    codes_cli.add_cli(sub)
    from ppcswitch.intelligence import cli as intelligence_cli  # transcripts, phrase rules

    intelligence_cli.add_cli(sub)
    from ppcswitch import cluster  # edge and node configuration for several nodes

    cluster.add_top_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"ppcswitch: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.func(settings, args) or 0)
    except ConfigError as exc:
        print(f"ppcswitch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
