"""`run`'s supervision of the flow process: exit codes pass through, a stop request is passed on once and ends in
"run: stopped" (exit 0), a child that will not stop is killed, and the flow process reads Bytewax's command line
the way `python -m bytewax.run` does (always as a cluster, so a stop never lands in a step)."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from bytewax.speechmatics.connectors.cli.flow_process import SUPERVISOR_ENV, cli_kwargs
from bytewax.speechmatics.connectors.cli.run import FLOW_PROCESS, Supervisor, flow_process_argv

ENDLESS_FLOW = """
import time

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition


class Busy(StatelessSourcePartition):
    def next_batch(self):
        started = time.monotonic()
        while time.monotonic() - started < 0.05:  # Python code running most of the time: where a stray
            pass                                   # KeyboardInterrupt would land
        return [1]


class Endless(DynamicSource):
    def build(self, step_id, worker_index, worker_count):
        return Busy()


flow = Dataflow("endless")
op.inspect("seen", op.input("in", flow, Endless()), lambda *_: None)
"""

FINITE_FLOW = """
import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource

flow = Dataflow("finite")
op.inspect("seen", op.input("in", flow, TestingSource(range(3))), lambda *_: None)
"""

# A child that says it is ready for stop requests, then ignores SIGINT (a flow stuck in shutdown).
STUBBORN = textwrap.dedent(f"""
    import os, signal, time
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pid, fd = os.environ[{SUPERVISOR_ENV!r}].split(":")
    os.write(int(fd), b"1")
    time.sleep(120)
""")


@pytest.fixture
def flow_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], str]:
    """Write a flow module where the flow process (and this process) can import it; return its import string."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(source)
        return f"{name}:flow"

    return write


def signal_when(condition: Callable[[], bool], *signals: signal.Signals, deadline_s: float = 60) -> threading.Thread:
    """From a helper thread: once `condition()` holds, send `signals` to this process (the supervisor's handlers
    run in the main thread, which is inside Supervisor.run)."""

    def send() -> None:
        deadline = time.monotonic() + deadline_s
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.02)  # polling a condition with a deadline
        for sig in signals:
            os.kill(os.getpid(), sig)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(("script", "code", "message"), [
    ("import sys; sys.exit(3)", 3, "run: the flow process exited with code 3"),
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", 128 + 9, "run: the flow process was killed by SIGKILL"),
    ("pass", 0, None),
])
def test_a_child_that_ends_by_itself_gives_its_exit_code(
    script: str, code: int, message: str | None, capsys: pytest.CaptureFixture[str],
) -> None:
    with Supervisor() as supervisor:
        assert supervisor.run([sys.executable, "-c", script]) == code
    out, err = capsys.readouterr()
    assert "stopped" not in out
    assert (err.strip() or None) == message


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_request_ends_the_flow_process_quietly(
    sig: signal.Signals, flow_module: Callable[[str, str], str], capfd: pytest.CaptureFixture[str],
) -> None:
    flow = flow_module("endless_flow", ENDLESS_FLOW)
    with Supervisor() as supervisor:
        signal_when(lambda: supervisor.ready, sig)
        code = supervisor.run([sys.executable, "-m", FLOW_PROCESS, flow])
    out, err = capfd.readouterr()
    assert code == 0 and out.splitlines() == ["run: stopped"], (out, err)
    assert err == "", err  # no traceback, no worker panic
    assert supervisor.forwarded == 1


def test_a_finished_flow_exits_zero_without_a_stop_line(
    flow_module: Callable[[str, str], str], capfd: pytest.CaptureFixture[str],
) -> None:
    with Supervisor() as supervisor:
        assert supervisor.run([sys.executable, "-m", FLOW_PROCESS, flow_module("finite_flow", FINITE_FLOW)]) == 0
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)


def test_a_child_that_does_not_stop_is_killed_after_the_grace_period(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    with Supervisor(grace=1.0) as supervisor:
        signal_when(lambda: supervisor.ready, signal.SIGTERM)
        assert supervisor.run([sys.executable, "-c", STUBBORN]) == 0
    assert time.monotonic() - started < 30
    assert capsys.readouterr().out.splitlines() == ["run: stopped"]


def test_a_second_stop_request_kills_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    with Supervisor(grace=600) as supervisor:
        signal_when(lambda: supervisor.ready, signal.SIGTERM, signal.SIGINT)
        assert supervisor.run([sys.executable, "-c", STUBBORN]) == 0
    assert supervisor.forwarded == 2
    assert capsys.readouterr().out.splitlines() == ["run: stopped"]


def test_a_stop_before_the_flow_starts_starts_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with Supervisor() as supervisor:
        os.kill(os.getpid(), signal.SIGTERM)  # handled at once, in this (the main) thread
        assert supervisor.run([sys.executable, "-c", "raise SystemExit(9)"]) == 0
    assert supervisor.child is None
    assert capsys.readouterr().out.splitlines() == ["run: stopped"]


def test_the_flow_process_reads_bytewax_run_arguments_as_a_cluster(
    flow_module: Callable[[str, str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("BYTEWAX_WORKERS_PER_PROCESS", "BYTEWAX_PROCESS_ID", "BYTEWAX_ADDRESSES", "BYTEWAX_RECOVERY_DIRECTORY",
                 "BYTEWAX_SNAPSHOT_INTERVAL", "BYTEWAX_RECOVERY_BACKUP_INTERVAL", "BYTEWAX_POD_NAME"):
        monkeypatch.delenv(name, raising=False)
    flow = flow_module("finite_flow", FINITE_FLOW)
    plain = cli_kwargs([flow])
    assert plain["flow"].flow_id == "finite"
    assert {k: v for k, v in plain.items() if k != "flow"} == {
        "workers_per_process": 1, "process_id": 0, "addresses": [], "epoch_interval": timedelta(seconds=10),
        "recovery_config": None}
    recovering = cli_kwargs([flow, "-w", "2", "-i", "1", "-a", "h1:2101;h2:2101", "-r", str(tmp_path), "-s", "3",
                             "-b", "0"])
    assert (recovering["workers_per_process"], recovering["process_id"], recovering["addresses"]) == (
        2, 1, ["h1:2101", "h2:2101"])
    assert recovering["epoch_interval"] == timedelta(seconds=3) and recovering["recovery_config"] is not None


def test_the_flow_process_gets_the_same_arguments_as_bytewax_run() -> None:
    bytewax = [sys.executable, "-m", "bytewax.run", "pkg.mod:flow", "-w", "2", "-r", "/r", "-s", "5", "-b", "0"]
    assert flow_process_argv(bytewax) == [sys.executable, "-m", FLOW_PROCESS, *bytewax[3:]]
