"""The flow process that `bytewax-speechmatics run` supervises: `python -m bytewax.run`, stopped quietly.

`run` keeps its own process so that a stop (Ctrl-C, `docker stop`, Kubernetes) is one clean line and exit 0. Here
SIGINT and SIGTERM end the running dataflow at once with STOPPED_EXIT (see `_on_stop_signal` for why not through
Bytewax's own interrupt): the state is the last snapshot's, and the supervisor can tell "stopped as asked" from a
failure.

Bytewax stops cleanly on an interrupt raised while its main thread waits for worker threads; that is how it runs any
cluster, and `python -m bytewax.run` with more than one worker. With one worker it runs the worker on the main
thread instead, so the interrupt lands inside a step's Python code and Bytewax reports a worker panic (a Rust
backtrace on stderr), sometimes seconds later. So the flow always starts as a cluster (process id 0 of a cluster
without other addresses when none are given): the same workers, recovery and dataflow API, no sockets opened, and
the worker is a thread.

On Linux the process also stops when its supervisor dies, even by SIGKILL, so a restarted `run` never meets an
orphaned flow writing the same recovery store.

In a cluster, Bytewax 0.21 cannot survive the loss of a process: the survivors' network threads panic ("Send thread
panic") within a second, and a restarted process cannot rejoin processes that are still running. So a survivor
ends with one line saying the cluster lost a peer and must be restarted as a whole, and exit code PEER_LOST_EXIT
(75, EX_TEMPFAIL: try again), which a supervisor (Kubernetes, systemd) answers by restarting it; the cluster then
resumes from the recovery store.

Usage: python -m bytewax.speechmatics.connectors.cli.flow_process <the arguments of python -m bytewax.run>
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from bytewax.speechmatics.schemas.errors import SettingsError

STOPPED_EXIT = 130  # the shell's code for "ended by SIGINT"
PEER_LOST_EXIT = 75  # EX_TEMPFAIL: the cluster lost a process; restart all of them (see the module doc)
PEER_LOST_EXIT_SECONDS = 10.0  # a survivor still alive this long after the loss (a stuck thread) is ended anyway
SUPERVISOR_ENV = "BWSM_SUPERVISOR"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: What Bytewax 0.21.1 (timely's networking) raises when a connection to another process of the cluster breaks.
PEER_LOST_MARKERS = ("Send thread panic", "Recv thread panic", "timely communication error")


_stop_requested = False  # set by SIGINT/SIGTERM: a peer lost after it is part of the stop, not a node loss


_flow_running = False  # set just before Bytewax takes over: from then on a stop ends the process at once


def _on_stop_signal(signum: int, frame: Any) -> None:
    """Record the request; before the dataflow runs, interrupt as Python's default SIGINT handler does; once it
    runs, end the process at once with STOPPED_EXIT.

    Why not Bytewax's own interrupt: in 0.21.1 it sometimes ends in a worker panic (about 1 stop in 30 here), a
    traceback and exit 1 instead of a stop. Ending the process leaves exactly what a stop promises: the state of the
    last snapshot (what recovery resumes from), a durable journal, and a transcript topic that a resumed run
    continues with byte-identical repeats at most.
    """
    global _stop_requested  # noqa: PLW0603 - one flag per process, set from a signal handler
    _stop_requested = True
    if _flow_running:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(STOPPED_EXIT)
    signal.default_int_handler(signum, frame)


def _interrupted(exc: BaseException | None) -> bool:
    """True when the exception is, or was caused by, the stop request."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _peer_lost(exc: BaseException | None) -> bool:
    """True when the exception is, or was caused by, a broken connection to another process of the cluster."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if any(marker in str(exc) for marker in PEER_LOST_MARKERS):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def peer_lost_message(process_id: int, processes: int) -> str:
    """The one line a survivor prints (the lost peer itself is not known: timely only reports a broken connection)."""
    return (f"run: the cluster lost a peer (this is process {process_id} of {processes}); restart the whole cluster "
            f"(all processes) from the recovery store")


def _join_supervisor() -> None:
    """Tell the supervisor that stop requests are handled now (it holds them back until then), and on Linux get
    SIGTERM (a stop request) when it dies; exit at once if it already has.

    SUPERVISOR_ENV is "<supervisor pid>:<fd of a pipe to it>"; without it (run by hand) there is nothing to do.
    """
    pid, _, fd = os.environ.pop(SUPERVISOR_ENV, "").partition(":")
    if not (pid.isdigit() and fd.isdigit()):
        return
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    os.write(int(fd), b"1")
    os.close(int(fd))
    if os.getppid() != int(pid):  # the supervisor was gone before prctl took effect
        sys.exit(STOPPED_EXIT)


def cli_kwargs(argv: list[str], env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`cli_main`'s arguments for a `python -m bytewax.run` command line, read by Bytewax's own parser
    (flows/run_args.py: its options and BYTEWAX_* variables mean exactly the same) and converted as bytewax.run's
    `__main__` does, but always as a cluster (see the module docstring)."""
    from bytewax import run as bytewax_run
    from bytewax.recovery import RecoveryConfig

    from bytewax.speechmatics.flows.run_args import parse_run_args

    args = parse_run_args(argv, os.environ if env is None else env)
    recovery = None
    epoch_interval = timedelta(seconds=args.snapshot_seconds or 10)
    if args.recovery_directory is not None:
        if args.snapshot_seconds is None or args.backup_seconds is None:
            raise SettingsError("bytewax.run command line: with -r/--recovery-directory, -s/--snapshot-interval "
                                "and -b/--backup-interval must be set")
        epoch_interval = timedelta(seconds=args.snapshot_seconds)
        recovery = RecoveryConfig(str(args.recovery_directory), timedelta(seconds=args.backup_seconds))
    assert args.import_str is not None
    module, attribute = bytewax_run._prepare_import(args.import_str)  # noqa: SLF001
    return {
        "flow": bytewax_run._locate_dataflow(module, attribute),  # noqa: SLF001
        "workers_per_process": args.workers_per_process,
        "process_id": args.process_id,
        "addresses": list(args.addresses),
        "epoch_interval": epoch_interval,
        "recovery_config": recovery,
    }


def main(argv: list[str]) -> int:
    """Run the flow of a `python -m bytewax.run` command line; STOPPED_EXIT when SIGINT/SIGTERM stopped it."""
    for sig in STOP_SIGNALS:  # SIGINT too: a process started in the background may inherit it ignored
        signal.signal(sig, _on_stop_signal)
    kwargs: dict[str, Any] = {}
    try:
        _join_supervisor()
        kwargs = cli_kwargs(argv)
        from bytewax.run import cli_main

        from bytewax.speechmatics.connectors.cli.operations import start as start_operations
        from bytewax.speechmatics.flows.microbatch import tune_runtime
        from bytewax.speechmatics.flows.settings import Settings

        settings = Settings.from_env(argv=argv)
        tune_runtime(settings.run)  # this process is the flow's: the entry point tunes it
        try:
            start_operations(settings)  # health thread; /live, /ready, /status with BWSM_ADMIN_PORT
        except OSError as exc:
            print(f"flow: cannot serve the admin endpoint (BWSM_ADMIN_PORT): {exc}", file=sys.stderr, flush=True)
            return 2

        global _flow_running  # noqa: PLW0603 - read by the signal handler
        _flow_running = True
        cli_main(kwargs.pop("flow"), **kwargs)
    except SettingsError as exc:  # a command line Bytewax would refuse: one line
        print(f"bytewax-speechmatics: {exc}", file=sys.stderr, flush=True)
        return 2
    except BaseException as exc:
        # A whole cluster asked to stop: a peer that stops first looks lost to the others, and that is the stop too.
        if _interrupted(exc) or (_stop_requested and _peer_lost(exc)):
            for sig in STOP_SIGNALS:  # stopping already: exit handlers run uninterrupted
                signal.signal(sig, signal.SIG_IGN)
            return STOPPED_EXIT
        processes = len(kwargs.get("addresses", []))
        if processes > 1 and _peer_lost(exc):
            print(peer_lost_message(kwargs["process_id"], processes), file=sys.stderr, flush=True)
            # Exit handlers still run (the journal and the recovery store are durable already), but a thread that
            # keeps the interpreter alive must not keep the cluster down.
            watchdog = threading.Timer(PEER_LOST_EXIT_SECONDS, os._exit, (PEER_LOST_EXIT,))
            watchdog.daemon = True
            watchdog.start()
            return PEER_LOST_EXIT
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
