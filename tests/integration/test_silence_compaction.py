"""Silence compaction end to end: the real broker, the real flow, the local worker's reference engine.

A mono and a 2-channel call with pauses of digital silence, and a call of pure silence, through both chunk policies
(short chunks, so pauses and seams fall everywhere). Each chunk is sent with its pauses shortened; every word and
mark comes back at its true call time (within 1 ms), each segment says what its job was sent (`billed_seconds`,
which the worker's own `GET /v2/jobs/{id}` `duration` agrees with), and the silent call is never sent and costs 0.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from e2e_harness import OutputReader, TruthCall, distinct_events, flow_env, make_topics, publish, start_flow
from worker_fixtures import synthetic_call, with_pauses

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

DEADLINE_S = 180
KEY = "e2e-test-key"
POLICIES = {
    "fixed": {"BWSM_CHUNK_POLICY": "fixed", "BWSM_CHUNK_SECONDS": "10", "BWSM_CHUNK_OVERLAP_SECONDS": "1.0"},
    "vad": {"BWSM_CHUNK_POLICY": "vad", "BWSM_VAD_MIN_SECONDS": "8", "BWSM_VAD_MAX_SECONDS": "12",
            "BWSM_CHUNK_OVERLAP_SECONDS": "1.0"},
}


def calls(prefix: str) -> list[TruthCall]:
    mono = with_pauses(*synthetic_call(45.0, seed=31), seed=31, every=(6, 14), seconds=(0.4, 5.0))
    stereo = with_pauses(*synthetic_call(45.0, channels=2, seed=32), channels=2, seed=32, every=(6, 14),
                         seconds=(0.4, 5.0))
    return [TruthCall(f"{prefix}-mono", *mono), TruthCall(f"{prefix}-stereo", *stereo, channels=2),
            TruthCall(f"{prefix}-silent", bytes(2 * 16000 * 25), [])]


def job_duration(base: str, job_id: str) -> float:
    request = urllib.request.Request(f"{base}/jobs/{job_id}", headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())["job"]["duration"]


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_compacted_chunks_come_back_on_the_calls_timeline_and_bill_what_was_sent(
        policy: str, kafka_bootstrap: str, make_topic, local_worker, tmp_path: Path) -> None:  # noqa: ANN001
    truth = calls(f"compact-{policy}")
    worker = local_worker(engine="reference", parallel=4)
    for call in truth[:2]:
        worker.admin.register_call(call.call_id, call.audio, call.words, channels=call.channels)
    topics = make_topics(make_topic, audio_partitions=1)
    env = flow_env(kafka_bootstrap, topics, worker, tmp_path / "journal", BWSM_DIARIZATION="none",
                   BWSM_SKIP_SILENCE="1", **POLICIES[policy])
    reader = OutputReader(kafka_bootstrap, topics)
    run = start_flow(env, tmp_path / "flow.log")
    try:
        publish(kafka_bootstrap, topics.audio, truth)
        out = reader.poll_until(lambda o: o.completed() >= {c.call_id for c in truth}, DEADLINE_S,
                                check=lambda: None if run.alive() else pytest.fail(run.log()))
        stats = worker.admin.stats()
        by_call = {cid: list(distinct_events(evs).values()) for cid, evs in out.by_call().items()}
        segments = {cid: [e for e in evs if e["type"] == "segment"] for cid, evs in by_call.items()}
        durations = {e["job"]["id"]: job_duration(worker.url, e["job"]["id"])
                     for evs in segments.values() for e in evs if e["job"]["id"]}
    finally:
        run.stop()
        reader.close()

    for call in truth[:2]:
        segs = segments[call.call_id]
        assert not any(e["error"] for e in segs) and len(segs) >= 4
        got = [(w["text"], w["start_time"], w["end_time"]) for e in segs for w in e["words"]]
        want = [(w["text"], w["start_time"], w["end_time"]) for w in call.words]
        assert [g[0] for g in got] == [w[0] for w in want], call.call_id
        off = [(g, w) for g, w in zip(got, want, strict=True) if abs(g[1] - w[1]) >= 1e-3 or abs(g[2] - w[2]) >= 1e-3]
        assert off == [], f"{call.call_id}: {len(off)} words off their call time, first {off[:3]}"
        billed = [e["job"]["billed_seconds"] for e in segs]
        spans = [e["job"]["chunk_end"] - e["job"]["chunk_start"] for e in segs]
        assert all(0 < b <= s + 1e-3 for b, s in zip(billed, spans, strict=True))
        assert sum(billed) < sum(spans) - 5  # the pauses were shortened, not sent
        completed = by_call[call.call_id][-1]
        assert completed["type"] == "call_completed"
        assert completed["counts"]["billed_seconds"] == pytest.approx(sum(billed), abs=1e-3)
        for e in segs:  # what the worker says it was sent is what the segment says it billed
            assert abs(durations[e["job"]["id"]] - e["job"]["billed_seconds"]) <= 0.5, e["job"]
    silent = truth[2].call_id
    assert all(e["words"] == [] and e["job"]["billed_seconds"] == 0 and e["job"]["id"] is None
               for e in segments[silent])
    assert by_call[silent][-1]["counts"]["billed_seconds"] == 0
    assert by_call[silent][-1]["counts"]["audio_seconds"] == 25.0
    assert not any(ref.startswith(silent) for ref in stats["jobs_by_reference"])  # never sent
