"""The `bytewax-speechmatics` command: one subcommand per module that registers itself below."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Each module exposes `add_parser(subparsers)`; the parser it adds sets `func(args) -> int`.
SUBCOMMAND_MODULES = [
    "bytewax.speechmatics.connectors.local_kafka",
    "bytewax.speechmatics.connectors.publish",
    "bytewax.speechmatics.connectors.tail",
    "bytewax.speechmatics.connectors.worker_cli",
    "bytewax.speechmatics.flows.runner",
    "bytewax.speechmatics.connectors.demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bytewax-speechmatics",
        description="Live call audio on Kafka -> micro-batched Speechmatics transcripts.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
