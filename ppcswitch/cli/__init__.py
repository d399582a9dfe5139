"""`ppcswitch` command line: serve, sandbox, db, network objects, dev."""

from __future__ import annotations

import argparse
import logging
import sys

from ppcswitch import cluster, sandbox
from ppcswitch.cli import attribution as attribution_cli
from ppcswitch.cli import billing as billing_cli
from ppcswitch.cli import codes as codes_cli
from ppcswitch.cli import intelligence as intelligence_cli
from ppcswitch.cli import network as network_cli
from ppcswitch.cli import serve as serve_cli
from ppcswitch.cli import users as users_cli
from ppcswitch.config import ConfigError, load_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppcswitch", description=__doc__)
    parser.add_argument("--config", help="TOML configuration file (default: $PPCSWITCH_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    # One module per command group (ppcswitch/cli/), each with its add_cli; the sandbox and the
    # cluster topology are dev tooling with their own.
    serve_cli.add_cli(sub)  # serve, dev
    cluster.add_cli(sandbox.add_cli(sub))  # sandbox ..., sandbox cluster ...
    network_cli.add_cli(sub)  # db, campaign, publisher, buyer, number, calls, demo (+ routing and fraud commands)
    billing_cli.add_cli(sub)  # report, ledger, rule, rerate
    users_cli.add_cli(sub)  # user
    attribution_cli.add_cli(sub)  # pool, postback, attribution
    codes_cli.add_cli(sub)  # IVR publisher codes
    intelligence_cli.add_cli(sub)  # transcripts, phrase rules
    cluster.add_top_cli(sub)  # edge and node configuration for several nodes
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
