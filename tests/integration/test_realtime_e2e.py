"""Real-time and batch results of the same calls on one transcript topic, end to end: a real broker, the flow as a
process, the real-time bridge as a process, the local worker (reference engine) behind both the batch API and the
real-time endpoint.

Each call's real-time finals reach `calls.transcripts` before its batch segments, and once the batch results land
the call's CallTranscript is exactly the batch words (every real-time word superseded).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from e2e_harness import OutputReader, TruthCall, flow_env, make_topics, start_flow, stitched_words
from realtime_fixtures import bridge_env, set_rt_faults, start_bridge
from worker_fixtures import synthetic_call

from bytewax.speechmatics.connectors.cli.publish import publish_calls
from bytewax.speechmatics.schemas import CallTranscript

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]


def test_realtime_words_first_then_batch_replaces_them(kafka_bootstrap, make_topic, reference_worker,
                                                       tmp_path: Path):
    set_rt_faults(reference_worker, {})
    topics = make_topics(make_topic, audio_partitions=2)
    calls = []
    for i in range(2):
        audio, words = synthetic_call(12.0, seed=80 + i)
        call = TruthCall(f"rte2e-{i}", audio, words)
        reference_worker.admin.register_call(call.call_id, audio, words)
        calls.append(call)
    env = flow_env(kafka_bootstrap, topics, reference_worker, tmp_path / "journal", BWSM_DIARIZATION="none")
    flow = start_flow(env, tmp_path / "flow.log")
    bridge = start_bridge(bridge_env(kafka_bootstrap, topics.audio, topics.rt, reference_worker),
                          tmp_path / "bridge.log")
    reader = OutputReader(kafka_bootstrap, topics)
    publisher = threading.Thread(target=publish_calls, args=([c.as_call_audio() for c in calls], topics.audio),
                                 kwargs={"frame_ms": 20, "speed": 4.0,
                                         "producer_config": {"bootstrap.servers": kafka_bootstrap}})
    try:
        bridge.wait_assigned()
        publisher.start()

        def check() -> None:
            assert flow.alive(), flow.log()
            assert bridge.proc.poll() is None, bridge.log()

        def done(output) -> bool:
            by_call = output.by_call()
            return all(any(e["type"] == "call_completed" and e["source"] == s for e in by_call.get(c.call_id, []))
                       for c in calls for s in ("batch", "realtime"))

        output = reader.poll_until(done, 180, check)
        publisher.join(30)
    finally:
        reader.close()
        bridge.stop()
        flow.stop()
    for call in calls:
        events = output.by_call()[call.call_id]
        kinds = [(e["source"], e["type"], e["is_final"]) for e in events]
        first_rt_final = kinds.index(("realtime", "segment", True))
        first_batch = next(i for i, k in enumerate(kinds) if k[:2] == ("batch", "segment"))
        assert first_rt_final < first_batch, kinds
        transcript = CallTranscript()
        for event in events:
            transcript.apply(event)
        assert transcript.completed
        assert [w["text"] for w in transcript.words] == stitched_words(events) == call.truth_texts()
        spoken = [w["text"] for w in call.words if w.get("type", "word") == "word"]
        counts = transcript.to_document()["counts"]
        assert counts["realtime_words"] == 0 and counts["batch_words"] == len(spoken)
        realtime_finals = [w for e in events if e["source"] == "realtime" and e["type"] == "segment"
                           and e["is_final"] for w in e["words"] if w["type"] == "word"]
        assert [w["text"] for w in realtime_finals] == spoken  # there, and superseded
