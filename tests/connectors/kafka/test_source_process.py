"""The batch source in a real flow process (`python -m bytewax.run tests/source_flow.py:flow`): resumed from a
mid-stream snapshot after kill -9, and stopped with one line and a non-zero exit when its topic is deleted.

Witnesses are the `partition offset` lines the flow appends (flushed per batch, so a kill loses none) and the
recovery store's snapshot of the source's offsets.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from bytewax.recovery import init_db_dir
from confluent_kafka.admin import AdminClient
from kafka_source_support import produce_numbered, wait_for

pytestmark = pytest.mark.kafka

FLOW = str(Path(__file__).parents[2] / "source_flow.py") + ":flow"
STEP = "source_process.read"


def start(bootstrap: str, topic: str, out: Path, *args: str, **conf: object) -> subprocess.Popen:
    out.touch()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "SOURCE_TEST_TOPIC": topic,
           "SOURCE_TEST_OUT": str(out), "SOURCE_TEST_KAFKA_CONF": json.dumps(conf)}
    return subprocess.Popen([sys.executable, "-m", "bytewax.run", FLOW, *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def read_lines(out: Path) -> list[tuple[int, int]]:
    return [(int(p), int(o)) for p, o in (line.split() for line in out.read_text().splitlines() if line.strip())]


def snapshotted(db: Path) -> dict[int, int]:
    """The source's offsets in the recovery store's newest snapshot, per partition (Bytewax pickles the state)."""
    with sqlite3.connect(db / "part-0.sqlite3", timeout=10) as conn:
        rows = conn.execute("SELECT state_key, ser_change FROM snaps WHERE step_id = ? ORDER BY snap_epoch",
                            (STEP,)).fetchall()
    return {int(key.split("-", 1)[0]): pickle.loads(blob) for key, blob in rows if blob}  # noqa: S301 - our own


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def test_a_flow_killed_mid_stream_resumes_from_its_snapshot_losing_and_repeating_nothing_else(
        kafka_bootstrap: str, make_topic, tmp_path: Path) -> None:  # noqa: ANN001
    topic = make_topic("resume", partitions=2)
    db = tmp_path / "db"
    db.mkdir()
    init_db_dir(db, 1)
    recovery = ["-r", str(db), "-s", "1", "-b", "0"]
    for p in (0, 1):
        produce_numbered(kafka_bootstrap, topic, 100, partition=p)
    first_out, second_out = tmp_path / "first.txt", tmp_path / "second.txt"
    first = start(kafka_bootstrap, topic, first_out, *recovery)
    try:
        wait_for(lambda: len(read_lines(first_out)) >= 200, 60, "the first 200 messages read")
        wait_for(lambda: snapshotted(db) == {0: 100, 1: 100}, 30, "a snapshot after them")
        for p in (0, 1):  # more arrives: the flow is killed while it reads it, past its last snapshot
            produce_numbered(kafka_bootstrap, topic, 50, partition=p, first_seq=100)
        wait_for(lambda: len(read_lines(first_out)) > 200, 30, "the next messages being read")
    finally:
        kill(first)
    for p in (0, 1):  # and more while it is down
        produce_numbered(kafka_bootstrap, topic, 50, partition=p, first_seq=150)
    second = start(kafka_bootstrap, topic, second_out, *recovery)
    try:
        wait_for(lambda: {(p, 199) for p in (0, 1)} <= set(read_lines(second_out)), 60, "the resumed flow to catch up")
    finally:
        kill(second)
    before, after = read_lines(first_out), read_lines(second_out)
    assert not [m for m, n in Counter(after).items() if n > 1], "the resumed run read a message twice"
    for p in (0, 1):
        read_before = [o for q, o in before if q == p]
        resumed = sorted(o for q, o in after if q == p)
        # from its snapshot (not from the start, not from the end), and on to the end without a gap
        assert 100 <= resumed[0] <= max(read_before) + 1, (p, resumed[0], max(read_before))
        assert resumed == list(range(resumed[0], 200))
        assert set(read_before) | set(resumed) == set(range(200))


def test_a_deleted_topic_stops_the_flow_process_with_one_line(kafka_bootstrap: str, make_topic,
                                                              tmp_path: Path) -> None:  # noqa: ANN001
    topic = make_topic("gone")
    produce_numbered(kafka_bootstrap, topic, 10)
    out = tmp_path / "out.txt"
    # librdkafka trusts a missing topic after `topic.metadata.propagation.max.ms` (30 s by default): shortened here
    proc = start(kafka_bootstrap, topic, out, **{"topic.metadata.propagation.max.ms": 500,
                                                 "topic.metadata.refresh.interval.ms": 500})
    try:
        wait_for(lambda: len(read_lines(out)) == 10, 60, "the messages read")
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        for future in admin.delete_topics([topic]).values():
            future.result(30)
        _, stderr = proc.communicate(timeout=60)  # before: the flow ran on, reading nothing, and said nothing
    finally:
        if proc.poll() is None:
            kill(proc)
    assert proc.returncode != 0
    lines = [line for line in stderr.splitlines() if "kafka source: stopping the flow" in line and " error " in line]
    assert len(lines) == 1, stderr[-3000:]
    assert f"topic {topic!r} partition 0" in lines[0]
    assert "no longer available" in lines[0] or "does not exist" in lines[0]
