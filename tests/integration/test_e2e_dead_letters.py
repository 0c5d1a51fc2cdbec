"""Bad frames in the live flow land on the dead-letter topic with a reason; every other call is unaffected; the
flow logs each kind of refusal (a flood of one kind is one line), and `bytewax-speechmatics dlq` lists them all."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Producer
from e2e_harness import (
    OutputReader,
    TruthCall,
    flow_env,
    free_port,
    make_topics,
    publish,
    start_flow,
    stitched_words,
)
from worker_fixtures import synthetic_call

from bytewax.speechmatics.connectors.worker.control import WorkerProcess
from bytewax.speechmatics.schemas.frames import AudioFrame, encode_frame

pytestmark = pytest.mark.kafka

# (call id, value, headers) of each bad frame, and the words its dead letter's reason must contain.
BAD_FRAMES = [
    (b"odd-length", b"\x01\x02\x03", [("seq", b"0")], "not a whole number of 2-byte samples"),
    (b"unknown-encoding", b"\x00" * 4, [("seq", b"0"), ("encoding", b"opus")], "'encoding' must be pcm_s16le or mulaw"),
    (None, b"\x00" * 4, [("seq", b"0")], "no key"),
    (b"garbage-headers", b"\x00" * 4, [("seq", b"\xff\xfe")], "'seq' is not UTF-8"),
    (b"garbage-seq", b"\x00" * 4, [("seq", b"twelve")], "'seq' must be a non-negative decimal integer"),
    # Larger than the producer's default limit (1,000,000 bytes), below the broker's: its dead letter is cut to fit.
    (b"oversized-garbage", b"\x01" * 1_040_001, [("seq", b"0")], "not a whole number of 2-byte samples"),
    (b"empty-not-end", b"", [("seq", b"0")], "empty but not the call's end frame"),
    (b"tombstone", None, [("seq", b"0")], "null value"),
    # Well formed, but 31.25 s of audio in one frame: refused, never billed.
    (b"huge-frame", b"\x00" * 1_000_000, [("seq", b"0")], "more than the 2 s limit"),
]
BAD_KEYS = {key.decode() for key, *_ in BAD_FRAMES if key is not None}
#: A producer bug repeated: one odd-length frame from each of this many calls (one kind of dead letter).
FLOOD = 300


def test_bad_frames_go_to_the_dead_letter_topic(kafka_bootstrap: str, make_topic, reference_worker: WorkerProcess,
                                                tmp_path: Path) -> None:  # noqa: ANN001
    topics = make_topics(make_topic)
    good = []
    for i in range(2):
        audio, words = synthetic_call(40, seed=7 + i)
        good.append(TruthCall(f"good-{i}", audio, words))
        reference_worker.admin.register_call(f"good-{i}", audio, words)
    reader = OutputReader(kafka_bootstrap, topics)
    api_port = free_port()
    env = flow_env(kafka_bootstrap, topics, reference_worker, tmp_path / "journal", BWSM_IDLE_TIMEOUT_SECONDS="2",
                   BYTEWAX_DATAFLOW_API_ENABLED="true", BYTEWAX_DATAFLOW_API_PORT=str(api_port),
                   BYTEWAX_DATAFLOW_API_CACHE_PATH=str(tmp_path))
    run = start_flow(env, tmp_path / "flow.log")
    try:
        producer = Producer({"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 1_048_000})
        for key, value, headers, _ in BAD_FRAMES:
            producer.produce(topics.audio, key=key, value=value, headers=headers)
        for i in range(FLOOD):
            producer.produce(topics.audio, key=f"flood-{i}".encode(), value=b"\x01\x02\x03", headers=[("seq", b"0")])
        # A call whose format changes mid-call: its 8 kHz frame is refused, the rest of the call goes on.
        switch = [AudioFrame("format-switch", 0, b"\x00\x00" * 320, 16000),
                  AudioFrame("format-switch", 1, b"\x00\x00" * 160, 8000),
                  AudioFrame("format-switch", 2, b"\x00\x00" * 320, 16000, end=True)]
        for frame in switch:
            key, value, headers = encode_frame(frame)
            producer.produce(topics.audio, key=key, value=value, headers=headers)
        # A call without an end frame, sent after the bad ones: once the idle timer has flushed it, a phantom call
        # opened by a refused message would have been flushed too.
        key, value, headers = encode_frame(AudioFrame("idle-sentinel", 0, b"\x00\x00" * 320))
        producer.produce(topics.audio, key=key, value=value, headers=headers)
        assert producer.flush(30) == 0
        publish(kafka_bootstrap, topics.audio, good)

        def done(out) -> bool:  # noqa: ANN001
            return ({"good-0", "good-1", "format-switch", "idle-sentinel"} <= out.completed()
                    and len(out.letters) >= len(BAD_FRAMES) + FLOOD + 1)

        out = reader.poll_until(done, 180, check=lambda: None if run.alive() else pytest.fail(run.log()))
        metrics = scrape(f"http://127.0.0.1:{api_port}/metrics")
    finally:
        run.stop()
        reader.close()

    reasons = [headers["dlq.reason"] for _, headers in out.letters]
    for key, _, _, fragment in BAD_FRAMES:
        matching = [r for r in reasons if fragment in r]
        assert matching, f"no dead letter says {fragment!r}: {reasons}"
        if key is not None:
            assert any(key.decode() in r for r in matching), "the reason must say where (the call)"
    cut = [h for key, h in out.letters if key == b"oversized-garbage"]
    assert len(cut) == 1 and cut[0]["dlq.truncated"] == "value" and cut[0]["dlq.source.offset"]
    assert cut[0]["dlq.original.size"] == "1040001"
    assert cut[0]["dlq.original.sha256"] == hashlib.sha256(b"\x01" * 1_040_001).hexdigest()
    assert BAD_KEYS.isdisjoint(e["call_id"] for e in out.events), "a refused message created a call"
    switched = [h for _, h in out.letters if h.get("dlq.stage") == "chunker"]
    assert len(switched) == 1 and "format" in switched[0]["dlq.reason"]
    assert all("dlq.source.offset" in h or "dlq.chunk.index" in h for _, h in out.letters)
    by_call = out.by_call()
    for call in good:
        assert stitched_words(by_call[call.call_id]) == call.truth_texts()

    # The flow's own Prometheus metrics, served by Bytewax's API server, agree with what the topics show.
    assert metrics['bwsm_dead_letters_total{stage="decode"}'] == len(BAD_FRAMES) + FLOOD
    assert metrics['bwsm_dead_letters_total{stage="chunker"}'] == 1
    calls = ("good-0", "good-1", "format-switch", "idle-sentinel")
    chunks = sum(len([e for e in by_call[c] if e["type"] == "segment"]) for c in calls)
    # A chunk without speech is not sent (silence compaction): counted apart.
    assert metrics["bwsm_chunks_done_total"] + metrics.get("bwsm_chunks_silent_total", 0) == chunks
    assert metrics["bwsm_chunk_to_event_seconds_count"] >= chunks
    assert any(name.startswith("bytewax_kafka_consumer_lag") for name in metrics)

    # The flow's log: a warning per kind of refusal, with stage, source position and call; the flood is one line.
    flow_log = (tmp_path / "flow.log").read_text(errors="replace").splitlines()
    logged = [line for line in flow_log if "warning" in line.lower() and "dead letter from stage" in line]
    for fragment in ("no key", "'seq' is not UTF-8", "'seq' must be a non-negative", "empty but not the call's end",
                     "null value", "more than the 2 s limit", "'encoding' must be pcm_s16le or mulaw"):
        assert [line for line in logged if fragment in line and "stage decode" in line and "(source " in line], \
            (fragment, logged)
    assert [line for line in logged if "stage chunker" in line and "call format-switch" in line], logged
    assert len(logged) <= len(BAD_FRAMES) + 2, logged  # not one line per flooded frame
    assert sum("flood-" in line for line in logged) <= 1

    # `dlq` lists every letter the flow wrote, one line each.
    listed = subprocess.run([sys.executable, "-m", "bytewax.speechmatics.connectors.cli", "dlq", "--topic",
                             topics.dlq, "--from-beginning"], env=env, capture_output=True, text=True, timeout=120)
    lines = listed.stdout.splitlines()
    assert listed.returncode == 0 and len(lines) == len(BAD_FRAMES) + FLOOD + 1, listed.stderr
    assert len([line for line in lines if " decode call flood-" in line and ", 3 bytes, kept whole: " in line]) == FLOOD
    assert [line for line in lines if "call oversized-garbage" in line and "1040001 bytes, truncated (value)" in line]


def scrape(url: str) -> dict[str, float]:
    """Prometheus text format -> {"name{labels}": value}, summed over nothing (one sample per line)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples
