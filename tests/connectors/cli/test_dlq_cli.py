"""`bytewax-speechmatics dlq` on the real broker, reading letters written by the flow's own dead-letter writer (the
decode stage's letters, a letter cut to fit, a failed chunk, a refused start message); `tail` on the dead-letter
topic points there instead of printing `not JSON`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from confluent_kafka import Producer

from bytewax.speechmatics.connectors.kafka.config import KafkaSettings
from bytewax.speechmatics.connectors.kafka.sink import ProducingSink
from bytewax.speechmatics.flows.decode import RefusedStart, decode_message
from bytewax.speechmatics.flows.microbatch import dead_letter_message
from bytewax.speechmatics.schemas.chunks import ChunkSpan
from bytewax.speechmatics.schemas.dead_letters import DeadLetter, failed_chunk

pytestmark = pytest.mark.kafka

CLI = [sys.executable, "-m", "bytewax.speechmatics.connectors.cli"]
SECRET = "ssn-123-45-6789"


def refused(key: bytes, value: bytes | None, headers: list, offset: int) -> DeadLetter:
    msg = KafkaSourceMessage(key=key, value=value, topic="calls.audio", headers=headers, offset=offset, partition=1)
    out = decode_message(msg)
    return out.letter if isinstance(out, RefusedStart) else out  # type: ignore[return-value]


def write_letters(bootstrap: str, topic: str, letters: list[DeadLetter]) -> None:
    """Through the flow's own writer: `dead_letter_message` (cut to fit) and the ProducingSink."""
    sink = ProducingSink(KafkaSettings(bootstrap_servers=bootstrap))
    part = sink.build("dlq_test", 0, 1)
    try:
        part.write_batch([dead_letter_message(topic, sink.max_record_bytes, letter) for letter in letters])
    finally:
        part.close()


def env_for(bootstrap: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "BWSM_"))}
    return {**env, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, **extra}


def dlq(bootstrap: str, topic: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "dlq", "--topic", topic, *args], env=env_for(bootstrap), capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def letters_topic(kafka_bootstrap: str, make_topic: Callable[..., str]) -> str:
    topic = make_topic("dlq", 2)
    start = orjson.dumps({"config": {"lang": "de"}, "metadata": {"customer": SECRET}})
    span = ChunkSpan("call-a", 2, 32000, 64000, 0, 16000, "pcm_s16le", 1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, key=b"x", value=b"\xff\xfe not a letter", partition=0)
    assert producer.flush(30) == 0
    write_letters(kafka_bootstrap, topic, [
        refused(b"call-a", b"\x01\x02\x03", [("seq", b"4")], 10),
        refused(b"call-b", b"\x01" * 1_040_001, [("seq", b"0")], 11),  # over the producer's limit: cut to fit
        failed_chunk("the API rejected the job: bad audio", "submit", span, (("calls.audio", 1, 10, 60),), "j-1", 3),
        refused(b"call-c", start, [("kind", b"start")], 12),
    ])
    return topic


def test_dlq_prints_one_line_per_letter(kafka_bootstrap: str, letters_topic: str) -> None:
    done = dlq(kafka_bootstrap, letters_topic, "--from-beginning")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 4, done.stdout
    by_call = {line.split(" call ")[1].split()[0] + ("/" + line.split()[1]): line for line in lines}
    odd = by_call["call-a/decode"]
    assert odd.split()[0].endswith("Z") and " decode call call-a from calls.audio[1]@10, 3 bytes, kept whole: " in odd
    assert odd.endswith("frame seq 4 has 3 bytes, not a whole number of 2-byte samples (pcm_s16le, 1 channel(s))")
    cut = by_call["call-b/decode"]
    assert "from calls.audio[1]@11, 1040001 bytes, truncated (value): " in cut and "more than the 2 s limit" not in cut
    chunk = by_call["call-a/submit"]
    assert " submit call call-a from calls.audio[1]@10-60, no audio kept, replayable from the source: the API " \
           "rejected the job: bad audio" in chunk
    start = by_call["call-c/decode"]
    assert "from calls.audio[1]@12" in start and "unknown field 'lang' (allowed: language, " in start
    assert SECRET not in done.stdout and "\\x01" not in done.stdout  # never the value
    err = done.stderr.splitlines()
    assert err == [f"dlq: skipped {letters_topic}[0]@0: not a dead letter (no dlq.reason header)",
                   f"dlq: 4 dead letters on {letters_topic}"], done.stderr


def test_dlq_json_call_and_last(kafka_bootstrap: str, letters_topic: str) -> None:
    done = dlq(kafka_bootstrap, letters_topic, "--call", "call-a", "--json")
    assert done.returncode == 0, done.stderr
    docs = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert sorted(d["stage"] for d in docs) == ["decode", "submit"]
    decode = next(d for d in docs if d["stage"] == "decode")
    assert decode["call_id"] == "call-a" and decode["source"] == "calls.audio[1]@10"
    assert decode["original_size"] == 3 and decode["truncated"] == [] and decode["time"].endswith("Z")
    assert decode["position"].startswith(f"{letters_topic}[")
    assert done.stderr.splitlines()[-1] == f"dlq: 2 dead letters of call call-a on {letters_topic}"

    done = dlq(kafka_bootstrap, letters_topic, "--last", "1")
    (line,) = done.stdout.splitlines()
    assert "call call-c" in line  # the most recent letter
    assert done.stderr.splitlines()[-1] == f"dlq: 1 dead letter on {letters_topic} (the 1 most recent; " \
                                           f"--from-beginning for all)"


def test_dlq_follow_prints_new_letters_as_they_come(kafka_bootstrap: str, letters_topic: str,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "out"
    with out.open("w") as sink:
        proc = subprocess.Popen([*CLI, "dlq", "--topic", letters_topic, "--follow"], env=env_for(kafka_bootstrap),
                                stdout=sink, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(out.read_text().splitlines()) == 4, proc, "the four letters already there")
        write_letters(kafka_bootstrap, letters_topic, [refused(b"call-late", None, [("seq", b"0")], 99)])
        wait_for(lambda: len(out.read_text().splitlines()) == 5, proc, "the new letter")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "call call-late from calls.audio[1]@99" in out.read_text().splitlines()[-1]


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, what: str, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert proc.poll() is None, f"dlq exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {deadline_s:.0f} s"
        time.sleep(0.1)  # polling interval of a condition with a deadline


def test_tail_on_the_dead_letter_topic_points_to_dlq(kafka_bootstrap: str, letters_topic: str) -> None:
    done = subprocess.run([*CLI, "tail", "--topic", letters_topic], env=env_for(
        kafka_bootstrap, BWSM_DLQ_TOPIC=letters_topic), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"tail: {letters_topic} is the dead-letter topic") and "bytewax-speechmatics dlq" in line

    # Under another name, each letter is named for what it is, never "not JSON".
    done = subprocess.run([*CLI, "tail", "--topic", letters_topic, "--from-beginning", "--idle-timeout", "3"],
                          env=env_for(kafka_bootstrap), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == ""
    lines = done.stderr.splitlines()
    letters = [line for line in lines if "a dead letter (refused input), not a transcript event: "
               f"`bytewax-speechmatics dlq --topic {letters_topic}` shows it" in line]
    assert len(letters) == 4, done.stderr
    assert "not JSON" not in "".join(letters)


def test_dlq_on_a_topic_that_does_not_exist_is_one_line(kafka_bootstrap: str) -> None:
    done = dlq(kafka_bootstrap, "no-such-dlq-topic-7f3a")
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line == ("dlq: topic no-such-dlq-topic-7f3a does not exist (no letter was ever written to it, or "
                    "BWSM_DLQ_TOPIC / --topic names another topic)")
