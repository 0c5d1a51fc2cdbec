"""`bytewax-speechmatics run`: prepare topics and recovery, then hand over to `python -m bytewax.run`.

Everything Bytewax's own runner accepts still applies (its BYTEWAX_* variables are passed through untouched), so
the flow runs the same under this command, under `python -m bytewax.run bytewax.speechmatics.flows.microbatch:flow`,
and under the Bytewax Helm chart.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..connectors.env import env_flag, env_int
from ..connectors.kafka_topics import TopicError, ensure_topics
from .settings import FlowSettings

FLOW_IMPORT = "bytewax.speechmatics.flows.microbatch:flow"


def prepare_recovery(directory: Path, partitions: int) -> bool:
    """Create the recovery partitions once; True when they were created now."""
    from bytewax.recovery import init_db_dir

    if directory.is_dir() and any(directory.glob("part-*.sqlite3")):
        return False
    directory.mkdir(parents=True, exist_ok=True)
    init_db_dir(directory, partitions)
    return True


def bytewax_argv(args: argparse.Namespace) -> list[str]:
    """The `python -m bytewax.run` command line for these options."""
    argv = [sys.executable, "-m", "bytewax.run", FLOW_IMPORT]
    if args.workers:
        argv += ["-w", str(args.workers)]
    if args.process_id is not None:
        argv += ["-i", str(args.process_id), "-a", args.addresses]
    if args.recovery_dir:
        argv += ["-r", str(args.recovery_dir), "-s", str(args.snapshot_interval), "-b", str(args.backup_interval)]
    return argv


def _command(args: argparse.Namespace) -> int:
    if (args.process_id is None) != (args.addresses is None):
        print("run: --process-id and --addresses go together (a cluster needs both)", file=sys.stderr)
        return 2
    settings = FlowSettings.from_env()
    try:
        created = ensure_topics(settings.topics(), settings.topic_partitions, create=args.create_topics)
    except TopicError as exc:
        print(f"run: {exc}", file=sys.stderr)
        return 2
    if created:
        print(f"run: created topics {', '.join(created)} ({settings.topic_partitions} partitions)", flush=True)
    if not args.recovery_dir:
        print("run: WARNING: no --recovery-dir: a restart re-reads the audio topic from its start and transcribes "
              "(and pays for) the retained audio again; production flows should run with recovery", file=sys.stderr)
    else:
        recovery = Path(args.recovery_dir)
        if prepare_recovery(recovery, args.recovery_partitions):
            print(f"run: initialised {args.recovery_partitions} recovery partitions in {recovery}", flush=True)
        os.environ.setdefault("BWSM_JOURNAL_DIR", str(recovery / "journal"))
    argv = bytewax_argv(args)
    print(f"run: {' '.join(argv[1:])}", flush=True)
    os.execv(argv[0], argv)
    return 0  # not reached


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    env = os.environ.get
    parser = subparsers.add_parser("run", help="run the micro-batch flow (prepares topics and recovery first)")
    parser.add_argument("-w", "--workers", type=int, default=env_int(os.environ, "BWSM_WORKERS", None),
                        help="workers in this process (BWSM_WORKERS; default 1)")
    parser.add_argument("-i", "--process-id", type=int, default=None, help="this process's id in a cluster")
    parser.add_argument("-a", "--addresses", default=None, help='cluster addresses, "host1:2101;host2:2101"')
    parser.add_argument("--create-topics", action="store_true",
                        default=env_flag(os.environ, "BWSM_CREATE_TOPICS", False),
                        help="create missing topics (BWSM_CREATE_TOPICS=1) instead of failing")
    parser.add_argument("--recovery-dir", default=env("BWSM_RECOVERY_DIR"),
                        help="run with recovery, state kept here (BWSM_RECOVERY_DIR); created when missing")
    parser.add_argument("--recovery-partitions", type=int, default=env_int(os.environ, "BWSM_RECOVERY_PARTITIONS", 4),
                        help="recovery partitions to create: fixed forever, >= the most workers you will run")
    parser.add_argument("--snapshot-interval", type=int, default=env_int(os.environ, "BWSM_SNAPSHOT_SECONDS", 5),
                        help="seconds between state snapshots (BWSM_SNAPSHOT_SECONDS)")
    parser.add_argument("--backup-interval", type=int, default=env_int(os.environ, "BWSM_BACKUP_SECONDS", 0, low=0),
                        help="seconds of extra snapshots to keep for backups (BWSM_BACKUP_SECONDS)")
    parser.set_defaults(func=_command)
