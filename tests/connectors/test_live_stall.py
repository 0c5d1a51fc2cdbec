"""/live watches the dataflow: a step that never returns stops its worker's input polls, and /live fails once a
partition has gone unpolled for BWSM_LIVE_STALL_SECONDS; a partition that ended is not held against it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from kafka_source_support import produce_numbered, wait_for

from bytewax.speechmatics.connectors.health import Health

FLOW = str(Path(__file__).parents[1] / "source_flow.py") + ":flow"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_live_fails_only_past_the_stall_limit_and_forgets_ended_partitions() -> None:
    clock = Clock()
    health = Health(stall_seconds=10, clock=clock)
    assert health.live()[0]  # nothing polled yet: starting up
    health.polled("p0")
    health.polled("p1")
    clock.now += 10
    ok, body = health.live()
    assert ok and body["longest_unpolled_seconds"] == 10
    health.polled("p0")
    clock.now += 0.5
    ok, body = health.live()
    assert not ok and "input partition p1 not polled for 10 s" in body["stalled"]
    health.finished("p1")  # it reached its end: its polls stopped for a good reason
    assert health.live()[0]
    assert Health(stall_seconds=0, clock=clock).live()[0]  # 0: not watched


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def live(port: int) -> tuple[int, dict] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/live", timeout=5) as answer:  # noqa: S310 - local
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return None  # not serving yet


@pytest.mark.kafka
def test_a_step_that_never_returns_fails_live_and_a_quiet_topic_does_not(kafka_bootstrap: str, make_topic,
                                                                         tmp_path: Path) -> None:  # noqa: ANN001
    topic, out, port = make_topic("stall"), tmp_path / "out.txt", free_port()
    out.touch()
    produce_numbered(kafka_bootstrap, topic, 3)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "SOURCE_TEST_TOPIC": topic,
           "SOURCE_TEST_OUT": str(out), "SOURCE_TEST_HANG_AT": "5", "BWSM_ADMIN_PORT": str(port),
           "BWSM_LIVE_STALL_SECONDS": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "bytewax.speechmatics.connectors.cli.flow_process", FLOW],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(out.read_text().splitlines()) == 3, 60, "the first 3 messages read")
        watched_until = time.monotonic() + 4  # twice the limit of a quiet topic: the worker keeps polling
        while time.monotonic() < watched_until:
            answer = live(port)
            assert answer is not None and answer[0] == 200, answer
            time.sleep(0.2)
        produce_numbered(kafka_bootstrap, topic, 3, first_seq=3)  # offset 5 never returns from its step
        wait_for(lambda: (live(port) or (0, {}))[0] == 503, 30, "/live to fail")
        code, body = live(port)
        assert code == 503 and f"topic '{topic}' partition 0 not polled for" in body["stalled"]
        assert proc.poll() is None  # the process still runs: only the probe can tell
    finally:
        proc.kill()
        proc.wait(10)
