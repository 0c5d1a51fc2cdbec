"""`run` in a cluster: recovery partitions made once when every process starts at the same moment against a new shared
directory; a process whose peer is lost ends with one line and exit code 75 instead of a panic; and stopping the
whole cluster is a stop (exit 0), even when a peer that stopped first looks lost."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig
from bytewax.testing import TestingSink, TestingSource, run_main

from bytewax.speechmatics.connectors.cli.flow_process import (
    PEER_LOST_EXIT,
    STOPPED_EXIT,
    SUPERVISOR_ENV,
    peer_lost_message,
)
from bytewax.speechmatics.connectors.cli.run import FLOW_PROCESS, Supervisor

# Runs prepare_recovery at the instant the parent sends (all children are imported and waiting by then, spinning so
# that they start within microseconds of each other), then prints whether this process created the partitions, how
# many it sees right after, and whether each one is initialised (a process that goes on to start Bytewax needs all).
PREPARE = textwrap.dedent("""
    import sqlite3, sys, time
    from pathlib import Path
    from bytewax.speechmatics.connectors.cli.run import prepare_recovery
    print("ready", flush=True)
    go = float(sys.stdin.readline())
    while time.time() < go:
        pass
    directory = Path(sys.argv[1])
    created = prepare_recovery(directory, int(sys.argv[2]))
    parts = sorted(directory.glob("part-*.sqlite3"))
    tables = [sqlite3.connect(f"file:{p}?mode=ro", uri=True).execute("select count(*) from sqlite_master").fetchone()[0]
              for p in parts]
    print(created, len(parts), all(tables), flush=True)
""")

# Endless, with items crossing between the processes; each worker leaves a file once it has seen an item, so a
# test knows the cluster is running.
CLUSTER_FLOW = """
import os
import time
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition


class Ticks(StatelessSourcePartition):
    def next_batch(self):
        time.sleep(0.01)
        return [1]


class Endless(DynamicSource):
    def build(self, step_id, worker_index, worker_count):
        return Ticks()


def seen(step_id, item):
    Path(os.environ["CLUSTER_MARKS"], str(os.getpid())).touch()


flow = Dataflow("cluster")
op.inspect("seen", op.redistribute("across", op.input("in", flow, Endless())), seen)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_processes_starting_together_create_the_recovery_partitions_once(tmp_path: Path) -> None:
    """Four processes, released at the same instant, five times: one creates the partitions, none fails, and
    Bytewax can run with what they leave."""
    for attempt in range(5):
        directory = tmp_path / f"recovery-{attempt}"
        children = [subprocess.Popen([sys.executable, "-c", PREPARE, str(directory), "3"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
        for child in children:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
        go = time.time() + 0.3  # an instant all of them are still waiting for (they are ready and spinning)
        for child in children:
            assert child.stdin is not None
            child.stdin.write(f"{go}\n")
            child.stdin.flush()
        results = [child.communicate(timeout=120) for child in children]
        assert [child.returncode for child in children] == [0] * 4, [err for _, err in results]
        # One creator; every process sees all three partitions, initialised, the moment prepare_recovery returns.
        assert sorted(out.strip() for out, _ in results) == ["False 3 True"] * 3 + ["True 3 True"]
        assert sorted(p.name for p in directory.glob("part-*.sqlite3")) == ["part-0.sqlite3", "part-1.sqlite3",
                                                                     "part-2.sqlite3"]
        assert not list(directory.glob(".bwsm-init-*"))  # no staging left behind
        flow = Dataflow("check")
        out: list[int] = []
        op.output("out", op.input("in", flow, TestingSource(range(3))), TestingSink(out))
        run_main(flow, epoch_interval=timedelta(seconds=1), recovery_config=RecoveryConfig(str(directory)))
        assert out == [0, 1, 2]


def kill_when_running(victim: subprocess.Popen, marks: Path, expected: int,
                      deadline_s: float = 120) -> threading.Thread:
    """From a helper thread: SIGKILL `victim` once every process of the cluster has seen items."""

    def kill() -> None:
        deadline = time.monotonic() + deadline_s
        while len(list(marks.iterdir())) < expected and time.monotonic() < deadline:
            time.sleep(0.05)  # polling a condition with a deadline
        victim.send_signal(signal.SIGKILL)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def two_process_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """The test flow importable by the processes, their marks directory, and two free cluster addresses."""
    (tmp_path / "cluster_flow.py").write_text(CLUSTER_FLOW)
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("CLUSTER_MARKS", str(marks))
    return marks, f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"


@pytest.mark.parametrize("survivor", [0, 1])
def test_a_process_whose_peer_is_killed_exits_with_one_line_and_code_75(
    survivor: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
) -> None:
    marks, addresses = two_process_cluster(tmp_path, monkeypatch)

    def argv(process_id: int) -> list[str]:
        return [sys.executable, "-m", FLOW_PROCESS, "cluster_flow:flow", "-i", str(process_id), "-a", addresses]

    victim = subprocess.Popen(argv(1 - survivor), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        kill_when_running(victim, marks, expected=2)
        with Supervisor() as supervisor:  # as `run` supervises the survivor
            code = supervisor.run(argv(survivor))
    finally:
        victim.kill()
        victim.wait(30)
    out, err = capfd.readouterr()
    assert victim.returncode == -signal.SIGKILL
    assert code == PEER_LOST_EXIT, err
    # Bytewax may print that it is still waiting for the peer to listen; besides that, only the one line on stderr:
    # no panic, no traceback.
    def ours(text: str) -> list[str]:
        return [line for line in text.splitlines() if "error connecting to worker" not in line]

    assert ours(err) == [peer_lost_message(survivor, 2)], err
    assert ours(out) == [], out


def test_stopping_the_whole_cluster_is_a_stop_not_a_lost_peer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
) -> None:
    """SIGINT to every process at once: whichever stops first, the others end with "run: stopped" and exit 0."""
    marks, addresses = two_process_cluster(tmp_path, monkeypatch)
    argv = [sys.executable, "-m", FLOW_PROCESS, "cluster_flow:flow", "-a", addresses, "-i"]
    peer = subprocess.Popen([*argv, "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def stop_all() -> None:
        deadline = time.monotonic() + 120
        while len(list(marks.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # polling a condition with a deadline
        peer.send_signal(signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)  # the supervisor's handler, in the main thread

    threading.Thread(target=stop_all, daemon=True).start()
    try:
        with Supervisor() as supervisor:
            code = supervisor.run([*argv, "0"])
        _, peer_err = peer.communicate(timeout=60)
    finally:
        peer.kill()
    out, _ = capfd.readouterr()
    assert code == 0 and out.splitlines() == ["run: stopped"], out
    assert peer.returncode == STOPPED_EXIT, peer_err


def test_a_lost_peer_while_stopping_is_reported_as_the_stop(capsys: pytest.CaptureFixture[str]) -> None:
    """A flow process that ends with 75 after a stop request (its peer stopped first): `run` says stopped, exit 0."""
    child = textwrap.dedent(f"""
        import os, signal, sys, time
        pid, fd = os.environ[{SUPERVISOR_ENV!r}].split(":")
        signal.signal(signal.SIGINT, lambda *_: sys.exit({PEER_LOST_EXIT}))
        os.write(int(fd), b"1")
        time.sleep(120)
    """)
    with Supervisor() as supervisor:

        def stop() -> None:
            deadline = time.monotonic() + 60
            while not supervisor.ready and time.monotonic() < deadline:
                time.sleep(0.02)  # polling a condition with a deadline
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=stop, daemon=True).start()
        assert supervisor.run([sys.executable, "-c", child]) == 0
    assert capsys.readouterr().out.splitlines() == ["run: stopped"]
