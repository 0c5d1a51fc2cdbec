"""The `python -m bytewax.run` command line, read by Bytewax's own parser.

Why: the process's place in its cluster (`-i`, `-a`), its recovery directory (`-r`) and the snapshot and backup
intervals (`-s`, `-b`) decide the POST share, where the job journal lives and how long it must keep entries. Read
by hand they drifted from Bytewax (`-i1` read as process 0, `-r/x` and `--recovery-directory=/x` missed). So every
spelling Bytewax accepts is accepted here by Bytewax 0.21's own parser (`bytewax.run._create_arg_parser`, plus the
scaling options and the Helm chart's variables exactly as its `_parse_args` adds them; a test compares the two).
The environment is the mapping given to `Settings.from_env` (the process's own by default).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bytewax.speechmatics.schemas.errors import SettingsError

#: The modules run as `python -m ...` whose command line is Bytewax's (ours runs the flow supervised by `run`).
BYTEWAX_MAINS = ("bytewax.run", "bytewax.speechmatics.connectors.cli.flow_process")
#: Option destination -> the variable Bytewax reads as its default.
ENV_DEFAULTS = {
    "recovery_directory": "BYTEWAX_RECOVERY_DIRECTORY",
    "snapshot_interval": "BYTEWAX_SNAPSHOT_INTERVAL",
    "backup_interval": "BYTEWAX_RECOVERY_BACKUP_INTERVAL",
    "workers_per_process": "BYTEWAX_WORKERS_PER_PROCESS",
    "process_id": "BYTEWAX_PROCESS_ID",
    "addresses": "BYTEWAX_ADDRESSES",
}


@dataclass(frozen=True)
class RunArgs:
    """What the command line says about this process (alone: process 0 of 1, no addresses)."""

    import_str: str | None = None
    process_id: int = 0
    addresses: tuple[str, ...] = ()
    workers_per_process: int = 1
    recovery_directory: Path | None = None
    snapshot_seconds: float | None = None
    backup_seconds: float | None = None

    @property
    def processes(self) -> int:
        return max(1, len(self.addresses))


def process_argv() -> list[str] | None:
    """This process's `bytewax.run` arguments when it was started as `python -m bytewax.run` (or the supervised flow
    process); None otherwise (a test runner, a user's own script): then only the environment counts."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return list(sys.argv[1:]) if spec is not None and spec.name in BYTEWAX_MAINS else None


def _parser():  # noqa: ANN202 - argparse.ArgumentParser
    from bytewax import run as bytewax_run

    parser = bytewax_run._create_arg_parser()  # noqa: SLF001 - the parser of `python -m bytewax.run`
    scaling = parser.add_argument_group("Scaling")
    scaling.add_argument("-w", "--workers-per-process", type=int)
    scaling.add_argument("-i", "--process-id", type=int)
    scaling.add_argument("-a", "--addresses")
    return parser


def parse_run_args(argv: Sequence[str] | None, env: Mapping[str, str]) -> RunArgs:
    """The process's RunArgs from its `bytewax.run` arguments (import string first) and environment; `argv` None or
    empty reads the environment alone.

    Raises:
        SettingsError: the command line or a BYTEWAX_* variable is not one Bytewax accepts, or the process index
            is not one of the cluster's addresses.
    """
    argv = list(argv) if argv else None
    parser = _parser()

    def refuse(message: str) -> None:
        raise SettingsError(f"bytewax.run command line: {message}")

    parser.error = refuse  # type: ignore[method-assign]
    # String defaults go through each option's type, exactly as Bytewax's env-var defaults do.
    parser.set_defaults(**{dest: env.get(var) or None for dest, var in ENV_DEFAULTS.items()})
    args = parser.parse_args(argv if argv is not None else ["-"])
    if args.process_id is None and "BYTEWAX_POD_NAME" in env and "BYTEWAX_STATEFULSET_NAME" in env:
        raw = env["BYTEWAX_POD_NAME"].replace(env["BYTEWAX_STATEFULSET_NAME"] + "-", "")
        if not raw.isdigit():
            refuse(f"BYTEWAX_POD_NAME {env['BYTEWAX_POD_NAME']!r} does not end in a process index")
        args.process_id = int(raw)
    if args.process_id is not None and args.addresses is None:
        if "BYTEWAX_HOSTFILE_PATH" not in env:
            refuse("the addresses option is required if a process_id is passed")
        with open(env["BYTEWAX_HOSTFILE_PATH"]) as hostfile:
            args.addresses = ";".join(line.strip() for line in hostfile if line.strip())
    addresses = tuple(args.addresses.split(";")) if args.addresses else ()
    index = args.process_id or 0
    if index < 0 or index >= max(1, len(addresses)):
        refuse(f"process id {index} is not one of the cluster's {max(1, len(addresses))} processes "
               f"(-i/--process-id counts from 0 over -a/--addresses)")
    return RunArgs(
        import_str=args.import_str if argv is not None else None,
        process_id=index,
        addresses=addresses,
        workers_per_process=args.workers_per_process or 1,
        recovery_directory=args.recovery_directory,
        snapshot_seconds=None if args.snapshot_interval is None else args.snapshot_interval.total_seconds(),
        backup_seconds=None if args.backup_interval is None else args.backup_interval.total_seconds(),
    )
