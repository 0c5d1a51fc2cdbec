"""The process's place, recovery directory and intervals come from Bytewax's own `bytewax.run` parser."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from bytewax import run as bytewax_run

from bytewax.speechmatics.flows.run_args import parse_run_args
from bytewax.speechmatics.flows.settings import Settings, SettingsError

SPELLINGS = [
    (["f:flow", "-i1", "-a", "a:1;b:2"], {}),
    (["f:flow", "-i", "1", "-a", "a:1;b:2"], {}),
    (["f:flow", "--process-id=1", "--addresses=a:1;b:2;c:3"], {}),
    (["f:flow", "--process-id", "2", "--addresses", "a:1;b:2;c:3", "-w3"], {}),
    (["f:flow", "-r/x/db", "-s5", "-b0"], {}),
    (["f:flow", "--recovery-directory=/x/db", "--snapshot-interval=5", "--backup-interval=30"], {}),
    (["f:flow", "-r", "/x/db", "-s", "5", "-b", "30", "-i0", "-a", "a:1"], {}),
    (["f:flow"], {"BYTEWAX_PROCESS_ID": "1", "BYTEWAX_ADDRESSES": "a:1;b:2", "BYTEWAX_RECOVERY_DIRECTORY": "/x/db",
                  "BYTEWAX_SNAPSHOT_INTERVAL": "5", "BYTEWAX_RECOVERY_BACKUP_INTERVAL": "60"}),
    (["f:flow", "-i", "0"], {"BYTEWAX_PROCESS_ID": "1", "BYTEWAX_ADDRESSES": "a:1;b:2"}),  # the option wins
    (["f:flow"], {"BYTEWAX_POD_NAME": "flow-2", "BYTEWAX_STATEFULSET_NAME": "flow", "BYTEWAX_HOSTFILE_PATH": "HOSTS"}),
]


@pytest.mark.parametrize(("argv", "env"), SPELLINGS)
def test_every_spelling_reads_as_bytewax_reads_it(argv: list[str], env: dict[str, str], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("a:1\nb:2\n\nc:3\n")
    env = {k: str(hosts) if v == "HOSTS" else v for k, v in env.items()}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["python -m bytewax.run", *argv])
    theirs = bytewax_run._parse_args()  # noqa: SLF001 - what `python -m bytewax.run` itself makes of it
    ours = parse_run_args(argv, env)
    assert ours.process_id == (theirs.process_id or 0)
    assert ours.addresses == tuple(theirs.addresses.split(";") if theirs.addresses else ())
    assert ours.workers_per_process == (theirs.workers_per_process or 1)
    assert ours.recovery_directory == theirs.recovery_directory
    assert ours.snapshot_seconds == (theirs.snapshot_interval.total_seconds() if theirs.snapshot_interval else None)
    assert ours.backup_seconds == (None if theirs.backup_interval is None else theirs.backup_interval.total_seconds())


def test_settings_place_the_process_and_its_journal_from_any_spelling(tmp_path: Path) -> None:
    sub = Settings.from_env({}, ["f:flow", "-i1", "-a", "a:1;b:2", f"-r{tmp_path}/db", "-s5", "-b60"]).submission
    assert (sub.process_index, sub.cluster_processes) == (1, 2)
    assert sub.journal_dir == str(tmp_path / "db-bwsm-journal")
    assert sub.journal_retention == 900 + 5 + 60 + 3600  # see replay_horizon
    sub = Settings.from_env({}, ["f:flow", f"--recovery-directory={tmp_path}/db", "-s5", "-b0"]).submission
    assert sub.journal_dir == str(tmp_path / "db-bwsm-journal")
    sub = Settings.from_env({"BWSM_JOURNAL_RETENTION_SECONDS": "120"}, ["f:flow"]).submission
    assert sub.journal_retention == 120


@pytest.mark.parametrize("argv", [["f:flow", "-i2", "-a", "a:1;b:2"], ["f:flow", "-i", "-1", "-a", "a:1"],
                                  ["f:flow", "-i1"], ["f:flow", "-ione"]])
def test_an_index_outside_the_cluster_or_a_bad_command_line_is_refused(argv: list[str]) -> None:
    with pytest.raises(SettingsError, match="bytewax.run command line"):
        Settings.from_env({}, argv)


def test_the_cluster_size_setting_cannot_drop_this_process() -> None:
    with pytest.raises(SettingsError, match="process 1"):
        Settings.from_env({"BWSM_CLUSTER_PROCESSES": "1"}, ["f:flow", "-i1", "-a", "a:1;b:2"])


def test_the_flow_process_refuses_an_out_of_range_index_in_one_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "bytewax.speechmatics.connectors.cli.flow_process",
                           "bytewax.speechmatics.flows.microbatch:flow", "-i", "2", "-a", "a:1;b:2"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "bytewax-speechmatics: bytewax.run command line: process id 2 is not one of the cluster's 2 processes "
        "(-i/--process-id counts from 0 over -a/--addresses)"]
