"""The `bytewax-speechmatics` command: one subcommand per module that registers itself below."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from bytewax.speechmatics.connectors.kafka.config import show_client_logs
from bytewax.speechmatics.schemas.errors import SettingsError

# Each module exposes `add_parser(subparsers)`; the parser it adds sets `func(args) -> int`.
SUBCOMMAND_MODULES = [
    "bytewax.speechmatics.connectors.cli.kafka",
    "bytewax.speechmatics.connectors.cli.publish",
    "bytewax.speechmatics.connectors.cli.tail",
    "bytewax.speechmatics.connectors.cli.dlq",
    "bytewax.speechmatics.connectors.cli.export",
    "bytewax.speechmatics.connectors.cli.worker",
    "bytewax.speechmatics.connectors.cli.run",
    "bytewax.speechmatics.connectors.cli.demo",
    "bytewax.speechmatics.connectors.cli.ingress",
    "bytewax.speechmatics.connectors.cli.status",
    "bytewax.speechmatics.connectors.cli.realtime",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bytewax-speechmatics",
        description="Live call audio on Kafka -> micro-batched Speechmatics transcripts.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, librdkafka's own logs included")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a bad setting is one line naming the variable (exit 2), not a traceback."""
    try:
        parser = build_parser()  # option defaults come from BWSM_* variables
    except SettingsError as exc:
        print(f"bytewax-speechmatics: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    show_client_logs(args.verbose)
    try:
        return int(args.func(args) or 0)
    except SettingsError as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

