"""The example dataflow `flows/final_transcripts.py` as users run it (`python -m bytewax.run ...:flow`) on a real
broker: one document per completed call on the final topic, none for an unfinished call, none again for a replay,
and a message that is not a transcript event on the dead-letter topic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, Producer
from transcript_events import Chunking, batch_events, realtime_events, shuffled_with_repeats, truth_words

from bytewax.speechmatics.schemas import CallTranscript
from bytewax.speechmatics.schemas.call_transcript import validate_document

pytestmark = pytest.mark.kafka

FLOW = "bytewax.speechmatics.flows.final_transcripts:flow"
DEADLINE_S = 120.0


def call_events(call_id: str, seed: int) -> list[dict]:
    truth = truth_words(16, seed=seed)
    events = [*batch_events(call_id, truth, Chunking(failed=frozenset({1}))), *realtime_events(call_id, truth)]
    return shuffled_with_repeats(events, seed, repeats=6)


def at_completion(events: list[dict]) -> dict:
    transcript = CallTranscript()
    for event in events:
        transcript.apply(event)
        if transcript.completed:
            return transcript.to_document()
    raise AssertionError("the call never completes")


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value in messages:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def test_one_document_per_completed_call_on_the_final_topic(kafka_bootstrap: str, make_topic, tmp_path: Path,
                                                             ) -> None:  # noqa: ANN001
    # One partition each, so the order across calls is the order produced: the sentinel's document proves that
    # everything before it was processed.
    transcripts, final, dlq = make_topic("transcripts"), make_topic("final"), make_topic("dlq")
    calls = {f"call-{uuid.uuid4().hex[:6]}-{n}": n for n in range(2)}
    events = {call: call_events(call, seed) for call, seed in calls.items()}
    unfinished = f"call-{uuid.uuid4().hex[:6]}-open"
    open_events = [e for e in call_events(unfinished, 9) if e["type"] != "call_completed"]
    messages = [(e["call_id"].encode(), orjson.dumps(e)) for es in (*events.values(), open_events) for e in es]
    messages.insert(3, (b"whoever", b"not json"))
    produce(kafka_bootstrap, transcripts, messages)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("BWSM_", "KAFKA_"))}
    env.update(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, BWSM_TRANSCRIPT_TOPIC=transcripts, BWSM_FINAL_TOPIC=final,
               BWSM_DLQ_TOPIC=dlq, PYTHONUNBUFFERED="1")
    log = tmp_path / "flow.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bytewax.run", FLOW], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": uuid.uuid4().hex,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([final, dlq])
    documents: list[tuple[str, dict]] = []
    letters: list[dict[str, bytes]] = []

    def read_until(done, what: str) -> None:  # noqa: ANN001
        deadline = time.monotonic() + DEADLINE_S
        while not done():
            assert proc.poll() is None, f"flow exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"no {what} within {DEADLINE_S:.0f} s"
            for msg in consumer.consume(100, 0.2):
                if msg.error():
                    continue
                if msg.topic() == final:
                    documents.append((msg.key().decode(), orjson.loads(msg.value())))
                else:
                    letters.append(dict(msg.headers() or []))

    try:
        read_until(lambda: len(documents) >= 2 and letters, "documents of the completed calls and a dead letter")
        # A replay of a delivered call, then a new call (the sentinel): only the sentinel's document may follow.
        sentinel = f"call-{uuid.uuid4().hex[:6]}-sentinel"
        sentinel_events = call_events(sentinel, 5)
        first = next(iter(events))
        produce(kafka_bootstrap, transcripts, [(e["call_id"].encode(), orjson.dumps(e))
                                               for e in [*events[first], *sentinel_events]])
        read_until(lambda: any(call == sentinel for call, _ in documents), "sentinel document")
    finally:
        consumer.close()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    assert sorted(call for call, _ in documents) == sorted([*calls, sentinel])  # once each; the open call: none
    for call, document in documents:
        validate_document(document)
        assert document["completed"] is True and document["call_id"] == call
        assert document == at_completion(sentinel_events if call == sentinel else events[call])
    assert len(letters) == 1
    assert letters[0]["dlq.stage"] == b"collect" and b"not JSON" in letters[0]["dlq.reason"]
