"""`bytewax-speechmatics run`: prepare topics and recovery, then run `python -m bytewax.run` as a supervised child.

Everything Bytewax's own runner accepts still applies (its BYTEWAX_* variables are passed through untouched), so
the flow runs the same under this command, under `python -m bytewax.run bytewax.speechmatics.flows.microbatch:flow`,
and under the Bytewax Helm chart. The child (flows/flow_process.py) keeps this terminal's stdout/stderr for its logs;
SIGINT/SIGTERM here ask it to stop, and a stop is one "run: stopped" line and exit 0 (a second signal, or a child
still running STOP_GRACE_SECONDS later, kills it: the state is then the last snapshot's, as after any crash).
In a cluster, a process whose peer was lost ends with one line saying so and exit code 75 (PEER_LOST_EXIT): Bytewax
cannot rejoin a running cluster, so every process is restarted and the cluster resumes from the recovery store.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bytewax.speechmatics.connectors.cli.arguments import COUNT, INDEX, WholeNumber
from bytewax.speechmatics.connectors.cli.flow_process import PEER_LOST_EXIT, STOPPED_EXIT, SUPERVISOR_ENV
from bytewax.speechmatics.connectors.kafka.topics import TopicError, ensure_topics, probe_brokers
from bytewax.speechmatics.flows.settings import Settings
from bytewax.speechmatics.schemas.errors import SettingsError

FLOW_IMPORT = "bytewax.speechmatics.flows.microbatch:flow"
FLOW_PROCESS = "bytewax.speechmatics.connectors.cli.flow_process"
STOP_GRACE_SECONDS = 30.0  # Kubernetes' default grace period: a stuck stop is ended before SIGKILL comes anyway
RECOVERY_LOCK = ".bwsm-init.lock"  # in the recovery directory: held while one process creates the partitions
#: Bytewax takes its intervals in whole seconds; an epoch needs at least one (BWSM_SNAPSHOT_SECONDS alike).
WHOLE_SECONDS = WholeNumber(1, noun="a whole number of seconds")
WHOLE_SECONDS_OR_ZERO = WholeNumber(0, noun="a whole number of seconds")


def prepare_recovery(directory: Path, partitions: int) -> bool:
    """Create the recovery partitions once; True when this process created them now.

    Why a lock: every process of a cluster runs this, often at the same moment against a new shared directory, and
    two `init_db_dir` calls on one directory fail (SQLite "database is locked"), or a process starts Bytewax on
    partitions another one is still creating. So the partitions are made under an exclusive lock on a file in the
    directory (flock; NFS emulates it with POSIX locks), in a staging directory whose files are then renamed into
    place; the other processes wait for the lock and find them complete.
    """
    from bytewax.recovery import init_db_dir

    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / RECOVERY_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed, or when the process dies
        if any(directory.glob("part-*.sqlite3")):
            return False
        staging = Path(tempfile.mkdtemp(prefix=".bwsm-init-", dir=directory))
        try:
            init_db_dir(staging, partitions)
            for part in sorted(staging.iterdir()):  # the partitions (and any SQLite side file) into place
                part.rename(directory / part.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
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


def flow_process_argv(bytewax: list[str]) -> list[str]:
    """The supervised child's command line: the same arguments, run by flow_process instead of bytewax.run."""
    assert bytewax[1:3] == ["-m", "bytewax.run"], bytewax
    return [bytewax[0], "-m", FLOW_PROCESS, *bytewax[3:]]


class Supervisor:
    """Turns SIGINT/SIGTERM into one orderly stop: while `run` prepares (so topic creation and recovery set-up are
    never cut in half) and then for the flow process it starts."""

    def __init__(self, grace: float = STOP_GRACE_SECONDS) -> None:
        self.grace = grace
        self.child: subprocess.Popen | None = None
        self.signals = 0  # stop requests received
        self.forwarded = 0  # of which passed on to the child
        self.stop_asked_at: float | None = None
        self.ready = False  # the child handles stop requests (before that, a signal would kill it with a traceback)
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Supervisor:
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            if handler is not None:  # None: a handler not set from Python, which cannot be put back
                signal.signal(sig, handler)

    @property
    def stop_asked(self) -> bool:
        return self.stop_asked_at is not None

    def _on_signal(self, _signum: int, _frame: object) -> None:
        self.signals += 1
        if self.stop_asked_at is None:
            self.stop_asked_at = time.monotonic()
        self._tell_child()

    def _tell_child(self) -> None:
        """Pass on each request once: the first as SIGINT (a clean stop), any further one as SIGKILL (the user
        insists)."""
        if self.child is None or not self.ready or self.child.poll() is not None:
            return
        while self.forwarded < self.signals:
            self.forwarded += 1
            with contextlib.suppress(ProcessLookupError):
                self.child.send_signal(signal.SIGINT if self.forwarded == 1 else signal.SIGKILL)

    def run(self, argv: list[str], extra_env: Mapping[str, str] | None = None) -> int:
        """Run the flow process (unless a stop came first) with `extra_env` added to its environment, wait for it,
        and return `run`'s exit code."""
        if self.stop_asked:
            return self._outcome(0)
        ready, ready_w = os.pipe()
        env = {**os.environ, **(extra_env or {}), SUPERVISOR_ENV: f"{os.getpid()}:{ready_w}"}
        try:
            # Its own session: a terminal's Ctrl-C reaches this process only, which passes it on exactly once.
            self.child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                                          pass_fds=(ready_w,))
        finally:
            os.close(ready_w)
        try:
            while True:
                if ready >= 0 and select.select([ready], [], [], 0.25)[0]:
                    # The child can take a stop request now (or it is gone): pass on what came meanwhile.
                    os.close(ready)
                    ready = -1
                    self.ready = True
                    self._tell_child()
                code = self.child.poll() if ready >= 0 else self._wait_briefly()
                if code is not None:
                    return self._outcome(code)
                if self.stop_asked_at is not None and time.monotonic() - self.stop_asked_at > self.grace:
                    self.child.kill()
        finally:
            if ready >= 0:
                os.close(ready)

    def _wait_briefly(self) -> int | None:
        assert self.child is not None
        try:
            return self.child.wait(timeout=0.25)
        except subprocess.TimeoutExpired:
            return None

    def _outcome(self, code: int) -> int:
        # PEER_LOST_EXIT too: when the whole cluster stops, a peer may stop before this process got the request.
        stopped_codes = (0, STOPPED_EXIT, PEER_LOST_EXIT, -signal.SIGINT, -signal.SIGTERM, -signal.SIGKILL)
        if (self.stop_asked and code in stopped_codes) or code == STOPPED_EXIT:
            print("run: stopped", flush=True)
            return 0
        if code in (0, PEER_LOST_EXIT):  # the flow process said why already (peer lost: one line, see flow_process)
            return code
        if code < 0:
            print(f"run: the flow process was killed by {signal.Signals(-code).name}", file=sys.stderr, flush=True)
            return 128 - code
        print(f"run: the flow process exited with code {code}", file=sys.stderr, flush=True)
        return code


def _command(args: argparse.Namespace) -> int:
    if (args.process_id is None) != (args.addresses is None):
        print("run: --process-id and --addresses go together (a cluster needs both)", file=sys.stderr)
        return 2
    with Supervisor() as supervisor:
        try:
            settings = Settings.from_env()
            client = settings.kafka.client_config()
            probe_brokers(client)  # an unreachable broker is one line within seconds, before anything is prepared
            topics = settings.topics
            created = ensure_topics(topics.names(settings.realtime.enabled), topics.partitions,
                                    create=args.create_topics, config=client)
        except (TopicError, SettingsError) as exc:
            print(f"run: {exc}", file=sys.stderr)
            return 2
        if created:
            print(f"run: created topics {', '.join(created)} ({topics.partitions} partitions)", flush=True)
        child_env: dict[str, str] = {}
        if not args.recovery_dir:
            print("run: WARNING: no --recovery-dir: a restart re-reads the audio topic from its start and "
                  "transcribes (and pays for) the retained audio again; production flows should run with recovery",
                  file=sys.stderr)
        else:
            recovery = Path(args.recovery_dir)
            if prepare_recovery(recovery, args.recovery_partitions):
                print(f"run: initialised {args.recovery_partitions} recovery partitions in {recovery}", flush=True)
            if not os.environ.get("BWSM_JOURNAL_DIR"):  # the journal lives beside the recovery partitions
                child_env["BWSM_JOURNAL_DIR"] = str(recovery / "journal")
        argv = bytewax_argv(args)
        print(f"run: {' '.join(argv[1:])}", flush=True)
        return supervisor.run(flow_process_argv(argv), child_env)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    settings = Settings.from_env()  # a bad BWSM_* value is one line from the command line (SettingsError)
    defaults = settings.run
    parser = subparsers.add_parser("run", help="run the micro-batch flow (prepares topics and recovery first)")
    parser.add_argument("-w", "--workers", type=COUNT, default=defaults.workers,
                        help="workers in this process (BWSM_WORKERS; default 1)")
    parser.add_argument("-i", "--process-id", type=INDEX, default=None, help="this process's id in a cluster")
    parser.add_argument("-a", "--addresses", default=None, help='cluster addresses, "host1:2101;host2:2101"')
    parser.add_argument("--create-topics", action="store_true",
                        default=settings.topics.create,
                        help="create missing topics (BWSM_CREATE_TOPICS=1) instead of failing")
    parser.add_argument("--recovery-dir", default=defaults.recovery_dir,
                        help="run with recovery, state kept here (BWSM_RECOVERY_DIR); created when missing")
    parser.add_argument("--recovery-partitions", type=COUNT, default=defaults.recovery_partitions,
                        help="recovery partitions to create: fixed forever, >= the most workers you will run")
    parser.add_argument("--snapshot-interval", type=WHOLE_SECONDS, default=defaults.snapshot_seconds,
                        help="seconds between state snapshots (BWSM_SNAPSHOT_SECONDS)")
    parser.add_argument("--backup-interval", type=WHOLE_SECONDS_OR_ZERO, default=defaults.backup_seconds,
                        help="seconds of extra snapshots to keep for backups (BWSM_BACKUP_SECONDS)")
    parser.set_defaults(func=_command)
