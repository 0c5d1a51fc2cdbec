"""`bytewax-speechmatics run` hands Bytewax a command line Bytewax accepts, and prepares recovery once."""

from __future__ import annotations

import sys

import pytest
from bytewax import run as bytewax_run

from bytewax.speechmatics.connectors.cli import build_parser
from bytewax.speechmatics.connectors.cli.run import FLOW_IMPORT, bytewax_argv, prepare_recovery


def parsed_by_bytewax(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setattr(sys, "argv", argv[2:])  # drop the interpreter and "-m"
    return vars(bytewax_run._parse_args())  # noqa: SLF001 - Bytewax's own parser is the judge


@pytest.mark.parametrize(
    ("ours", "expected"),
    [
        (["run"], {"workers_per_process": None, "recovery_directory": None}),
        (["run", "-w", "2", "--recovery-dir", "/r", "--snapshot-interval", "3"],
         {"workers_per_process": 2, "snapshot_interval": 3, "backup_interval": 0}),
        (["run", "-i", "1", "-a", "h1:2101;h2:2101"], {"process_id": 1, "addresses": "h1:2101;h2:2101"}),
    ],
)
def test_bytewax_accepts_the_command_line(ours: list[str], expected: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BWSM_SNAPSHOT_SECONDS", "BWSM_BACKUP_SECONDS", "BWSM_WORKERS", "BWSM_RECOVERY_DIR"):
        monkeypatch.delenv(name, raising=False)
    argv = bytewax_argv(build_parser().parse_args(ours))
    assert argv[1:4] == ["-m", "bytewax.run", FLOW_IMPORT]
    got = parsed_by_bytewax(argv, monkeypatch)
    for key, value in expected.items():
        actual = got[key]
        assert (actual.total_seconds() if hasattr(actual, "total_seconds") else actual) == value, key


def test_recovery_partitions_are_created_once(tmp_path) -> None:  # noqa: ANN001
    directory = tmp_path / "recovery"
    assert prepare_recovery(directory, 3)
    assert len(list(directory.glob("part-*.sqlite3"))) == 3
    assert not prepare_recovery(directory, 3)
