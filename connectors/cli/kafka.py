"""`bytewax-speechmatics kafka up|down|status`: a local single-node Apache Kafka broker (no Docker needed)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from bytewax.speechmatics.connectors.cli.arguments import TCP_PORT, from_env
from bytewax.speechmatics.connectors.kafka.local_broker import (
    DEFAULT_VERSION,
    BrokerError,
    LocalKafka,
    broker_answers,
    down,
    up,
)

#: The variables this command reads (listed in the README's table with the flow's own).
VARIABLES = ("BWSM_KAFKA_VERSION", "BWSM_KAFKA_PORT", "BWSM_KAFKA_CONTROLLER_PORT", "BWSM_CACHE_DIR",
             "BWSM_KAFKA_HEAP", "BWSM_MAVEN_REPO")


def cache_dir(env: Mapping[str, str]) -> Path:
    """BWSM_CACHE_DIR, else ~/.cache/bytewax-speechmatics: where the dev tools keep jars, models and samples."""
    raw = env.get("BWSM_CACHE_DIR", "").strip()
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "bytewax-speechmatics"


def local_kafka(env: Mapping[str, str] | None = None) -> LocalKafka:
    """The local broker these variables describe (the environment unless `env` is given)."""
    env = os.environ if env is None else env
    port = from_env(env, "BWSM_KAFKA_PORT", TCP_PORT, 9092)
    return LocalKafka(
        version=env.get("BWSM_KAFKA_VERSION", "").strip() or DEFAULT_VERSION,
        port=port,
        controller_port=from_env(env, "BWSM_KAFKA_CONTROLLER_PORT", TCP_PORT, port + 1),
        cache=cache_dir(env),
        heap=env.get("BWSM_KAFKA_HEAP", "").strip() or "1g",
        maven_repo=env.get("BWSM_MAVEN_REPO", "").strip() or None,
    )


def _command(args: argparse.Namespace) -> int:
    kafka = local_kafka()
    try:
        if args.action == "up":
            up(kafka)
        elif args.action == "down":
            down(kafka)
        else:
            answers = broker_answers(kafka.bootstrap)
            print(f"kafka: {kafka.bootstrap} {'answers' if answers else 'does not answer'}")
            return 0 if answers else 1
    except BrokerError as exc:
        print(f"kafka: {exc}", file=sys.stderr)
        return 1
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("kafka", help="start/stop a local single-node Apache Kafka broker (no Docker)")
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.set_defaults(func=_command)
