"""The flow process that `bytewax-speechmatics run` supervises: `python -m bytewax.run`, stopped quietly.

`run` keeps its own process so that a stop (Ctrl-C, `docker stop`, Kubernetes) is one clean line and exit 0. Here
SIGINT and SIGTERM both ask Bytewax to stop (with recovery, the state is then the last snapshot's), and the process
ends with STOPPED_EXIT instead of a traceback, so the supervisor can tell "stopped as asked" from a failure.

Bytewax stops cleanly on an interrupt raised while its main thread waits for worker threads; that is how it runs any
cluster, and `python -m bytewax.run` with more than one worker. With one worker it runs the worker on the main
thread instead, so the interrupt lands inside a step's Python code and Bytewax reports a worker panic (a Rust
backtrace on stderr), sometimes seconds later. So the flow always starts as a cluster (process id 0 of a cluster
without other addresses when none are given): the same workers, recovery and dataflow API, no sockets opened, and
the worker is a thread.

On Linux the process also stops when its supervisor dies, even by SIGKILL, so a restarted `run` never meets an
orphaned flow writing the same recovery store.

Usage: python -m bytewax.speechmatics.connectors.cli.flow_process <the arguments of python -m bytewax.run>
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import timedelta
from typing import Any

STOPPED_EXIT = 130  # the shell's code for "ended by SIGINT"
SUPERVISOR_ENV = "BWSM_SUPERVISOR"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _interrupted(exc: BaseException | None) -> bool:
    """True when the exception is, or was caused by, the stop request."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


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


def cli_kwargs(argv: list[str]) -> dict[str, Any]:
    """`cli_main`'s arguments for a `python -m bytewax.run` command line, read by Bytewax's own parser (so its
    options and BYTEWAX_* variables mean exactly the same) and converted as bytewax.run's `__main__` does, but
    always as a cluster (see the module docstring)."""
    from bytewax import run as bytewax_run
    from bytewax.recovery import RecoveryConfig

    saved = sys.argv
    sys.argv = ["python -m bytewax.run", *argv]
    try:
        args = bytewax_run._parse_args()  # noqa: SLF001 - the parser of `python -m bytewax.run`
    finally:
        sys.argv = saved
    recovery = None
    epoch_interval = args.snapshot_interval or timedelta(seconds=10)
    if args.recovery_directory is not None:
        epoch_interval = args.snapshot_interval
        recovery = RecoveryConfig(args.recovery_directory, args.backup_interval)
    module, attribute = bytewax_run._prepare_import(args.import_str)  # noqa: SLF001
    return {
        "flow": bytewax_run._locate_dataflow(module, attribute),  # noqa: SLF001
        "workers_per_process": args.workers_per_process or 1,
        "process_id": args.process_id or 0,
        "addresses": args.addresses.split(";") if args.addresses else [],
        "epoch_interval": epoch_interval,
        "recovery_config": recovery,
    }


def main(argv: list[str]) -> int:
    """Run the flow of a `python -m bytewax.run` command line; STOPPED_EXIT when SIGINT/SIGTERM stopped it."""
    for sig in STOP_SIGNALS:  # SIGINT too: a process started in the background may inherit it ignored
        signal.signal(sig, signal.default_int_handler)
    try:
        _join_supervisor()
        kwargs = cli_kwargs(argv)
        from bytewax.run import cli_main

        cli_main(kwargs.pop("flow"), **kwargs)
    except BaseException as exc:
        if _interrupted(exc):
            for sig in STOP_SIGNALS:  # stopping already: exit handlers run uninterrupted
                signal.signal(sig, signal.SIG_IGN)
            return STOPPED_EXIT
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
