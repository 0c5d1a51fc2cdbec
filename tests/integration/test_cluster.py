"""A 2-process cluster as an operator runs it, surviving the loss of a node twice.

Two `bytewax-speechmatics run -i N -a ...` processes share one new recovery directory (so also one job journal) and
start at the same moment; the audio topic has 4 partitions; the local worker answers with 429s, 503s and dropped
connections. Twice during the run, one process's flow is SIGKILLed (a node lost): the survivor must end by itself
with exit code 75 and one line, and the test restarts the whole cluster, as a supervisor would. The calls published
at full speed in 5 s chunks make a POST backlog, and each kill comes once POSTs are flowing, so the kills and the
restarts happen while the limiters are busy.

Checked: every call's words exactly as its truth, one call_completed per call (repeats only as byte-identical
duplicates), no chunk posted twice, and the worker's POST arrivals never above the cluster's limit in any 1 s window.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_harness import (
    Output,
    OutputReader,
    Topics,
    TruthCall,
    flow_env,
    free_port,
    make_topics,
    publish,
    repeated_with_other_bytes,
    stitched_words,
)
from submit_flow import certain_max_in_window, max_in_window
from worker_fixtures import synthetic_call

from bytewax.speechmatics.connectors.cli.flow_process import PEER_LOST_EXIT, peer_lost_message

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

CALLS = 16
PROCESSES = 2
POST_LIMIT = 10  # per second, for the whole cluster (5 per process)
DEADLINE_S = 420
FAULTS = {"rates": {"post": {"429": 0.1, "503": 0.05, "drop": 0.03}, "get": {"503": 0.05}}, "seed": 18}


def make_calls() -> list[TruthCall]:
    rng = random.Random(18)
    calls = []
    for i in range(CALLS):
        audio, words = synthetic_call(rng.uniform(50, 80), seed=1800 + i)
        calls.append(TruthCall(f"cluster-{i:02d}", audio, words))
    return calls


class Node:
    """One `bytewax-speechmatics run` of the cluster (restarted in place), its log collecting every start."""

    def __init__(self, index: int, addresses: str, recovery: Path, env: dict[str, str], log: Path) -> None:
        self.index = index
        self.argv = [sys.executable, "-m", "bytewax.speechmatics.connectors.cli", "run", "-i", str(index),
                     "-a", addresses, "--recovery-dir", str(recovery), "--snapshot-interval", "1",
                     "--backup-interval", "0"]
        self.env = env
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def flow_pid(self, deadline_s: float = 120) -> int:
        """The flow process `run` supervises (its only child)."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            pids = children.read_text().split() if children.exists() else []
            if pids:
                return int(pids[0])
            assert self.alive(), f"run {self.index} exited with {self.proc.returncode}:\n{self.tail()}"
            time.sleep(0.05)  # polling a condition with a deadline
        raise TimeoutError(f"run {self.index} started no flow process")

    def wait(self, deadline_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(deadline_s)

    def interrupt(self) -> None:
        """SIGINT, as a terminal, `docker stop` or Kubernetes would send to every process of the cluster."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGINT)

    def stopped(self) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(30)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def check_alive(nodes: list[Node]) -> Callable[[], None]:
    def check() -> None:
        for node in nodes:
            assert node.alive(), f"run {node.index} exited with {node.proc and node.proc.returncode}:\n{node.tail()}"

    return check


def lose_a_node(nodes: list[Node], victim: Node) -> tuple[int, float]:
    """SIGKILL the victim's flow process; wait for every `run` to end. Returns the survivor's exit code and how long
    after the kill it ended (printed, not asserted: the machine's load decides it)."""
    survivor = next(node for node in nodes if node is not victim)
    os.kill(victim.flow_pid(), signal.SIGKILL)
    killed = time.monotonic()
    code = survivor.wait(120)
    ended = time.monotonic() - killed
    assert victim.wait(60) == 128 + signal.SIGKILL  # `run` passes the kill on as 128 + 9
    return code, ended


def wait_until(condition: Callable[[], bool], deadline_s: float, check: Callable[[], None]) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {deadline_s:.0f} s")
        check()
        time.sleep(0.1)  # polling a condition with a deadline


def completed_calls(calls: list[TruthCall]) -> Callable[[Output], bool]:
    return lambda out: out.completed() >= {c.call_id for c in calls}


def test_a_cluster_loses_a_node_twice_and_nothing_is_lost_paid_twice_or_sent_too_fast(
    kafka_bootstrap: str, make_topic: Callable[..., str], local_worker: Callable[..., object], tmp_path: Path,
) -> None:
    calls = make_calls()
    topics: Topics = make_topics(make_topic, audio_partitions=4)
    worker = local_worker(engine="reference", parallel=8)
    for call in calls:
        worker.admin.register_call(call.call_id, call.audio, call.words)
    worker.admin.set_faults(FAULTS)
    recovery = tmp_path / "recovery"  # new: both processes initialise it at the same moment
    # 5 s fixed windows: many POSTs, so that nodes are lost during the POST backlog
    env = flow_env(kafka_bootstrap, topics, worker, tmp_path / "unused", BWSM_CHUNK_POLICY="fixed",
                   BWSM_CHUNK_SECONDS="5", BWSM_DIARIZATION="none", BWSM_POST_RATE=str(POST_LIMIT),
                   BWSM_LOG_LEVEL="info")
    env.pop("BWSM_JOURNAL_DIR")  # the journal goes where `run` puts it: beside the shared recovery partitions
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(PROCESSES))
    nodes = [Node(i, addresses, recovery, env, tmp_path / f"run-{i}.log") for i in range(PROCESSES)]
    reader = OutputReader(kafka_bootstrap, topics)
    rng = random.Random(2018)
    losses: list[tuple[int, int, float]] = []
    restarts: list[float] = []  # wall-clock times, as the worker records POST arrivals
    try:
        publish(kafka_bootstrap, topics.audio, calls, frame_ms=100)
        for node in nodes:
            node.start()
        for victim in (nodes[1], nodes[0]):  # a node lost twice: once each, so each side is a survivor once
            target = len(worker.admin.stats()["post_arrivals"]) + rng.randint(15, 40)  # during the POST backlog
            wait_until(lambda t=target: len(worker.admin.stats()["post_arrivals"]) >= t, DEADLINE_S,
                       check_alive(nodes))
            code, ended = lose_a_node(nodes, victim)
            losses.append((victim.index, code, ended))
            restarts.append(time.time())
            for node in nodes:  # the whole cluster restarts, as its supervisor would
                node.start()
        out = reader.poll_until(completed_calls(calls), DEADLINE_S, check=check_alive(nodes))
        stats = worker.admin.stats()
    finally:
        for node in nodes:  # the whole cluster is stopped at once
            node.interrupt()
        stops = [node.stopped() for node in nodes]
        reader.close()
    logs = [node.log.read_text(errors="replace") for node in nodes]
    arrivals = stats["post_arrivals"]
    busiest = max_in_window(arrivals)
    # A stamp the worker's own measured loop stall may have delayed (tests/submit_flow.py) is not held against the
    # limiter: under load the worker stamped a POST 76 ms late, beyond the limiter's 0.06 s margin.
    sure = certain_max_in_window(arrivals, stats["loop_stalls"])
    after = [sum(1 for t in arrivals if r <= t < r + 30) for r in restarts]
    print(f"\ncluster of {PROCESSES}, {CALLS} calls, {len(arrivals)} POST arrivals (faults on); nodes lost "
          f"(victim, survivor's exit code, seconds to exit): {[(v, c, round(e, 2)) for v, c, e in losses]}; POSTs in "
          f"the 30 s after each restart {after}; busiest 1 s window {busiest} as stamped, {sure} surely "
          f"(limit {POST_LIMIT}, worker loop stalls {len(stats['loop_stalls'])})")

    # Each node loss: the survivor ended by itself with code 75 and the one line saying what to do.
    for victim, code, _ in losses:
        survivor = 1 - victim
        assert code == PEER_LOST_EXIT, logs[survivor][-4000:]
        assert peer_lost_message(survivor, PROCESSES) in logs[survivor]
    assert all("Traceback" not in log and "panicked" not in log for log in logs), [log[-4000:] for log in logs]
    assert stops == [0, 0]  # and a clean stop at the end
    assert sum(log.count("run: initialised") for log in logs) == 1  # one process made the recovery partitions

    # No word lost, no call completed twice (a replay repeats an event only byte for byte).
    assert repeated_with_other_bytes(out) == {}
    by_call = out.by_call()
    for call in calls:
        assert stitched_words(by_call[call.call_id]) == call.truth_texts(), call.call_id
        completed = {e["event_id"] for e in by_call[call.call_id] if e["type"] == "call_completed"}
        assert len(completed) == 1, call.call_id

    # No chunk paid twice, every chunk posted (the faults cost retries, not jobs).
    jobs = stats["jobs_by_reference"]
    assert {ref.rsplit("/", 1)[0] for ref in jobs} == {c.call_id for c in calls}
    assert {ref: n for ref, n in jobs.items() if n != 1} == {}
    assert stats["requests"].get("POST /v2/jobs", {}).get("429", 0) > 0  # the faults were on

    # The API's limit held at the server in every 1 s window, through both restarts.
    assert sure <= POST_LIMIT
