"""The whole flow against a fleet of three local workers (reference engine, 2 engines each, engines kept busy by
`--processing-factor`): one worker is killed mid-run and restarted. Every call completes with exact words, no chunk
is transcribed twice at live workers, no worker refuses a job for want of engines, and the restarted worker rejoins.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from e2e_harness import OutputReader, TruthCall, flow_env, make_topics, publish, start_flow, stitched_words
from worker_fixtures import synthetic_call

pytestmark = [pytest.mark.kafka]

DEADLINE_S = 180


def _calls(prefix: str, count: int) -> list[TruthCall]:
    return [TruthCall(f"{prefix}-{i}", *synthetic_call(32.0, seed=300 + i + (100 if prefix.endswith("b") else 0)))
            for i in range(count)]


def _register(worker, calls: list[TruthCall]) -> None:  # noqa: ANN001
    for call in calls:
        worker.admin.register_call(call.call_id, call.audio, call.words)


def test_a_flow_over_three_workers_one_killed_and_restarted(kafka_bootstrap: str, make_topic, local_worker,
                                                           tmp_path: Path) -> None:
    busy = ["--processing-factor", "0.1"]  # a 10 s chunk keeps its engine 1 s
    workers = [local_worker(engine="reference", parallel=2, extra_args=busy) for _ in range(3)]
    first, second = _calls("fleet-a", 6), _calls("fleet-b", 6)
    for worker in workers:
        _register(worker, first + second)
    topics = make_topics(make_topic)
    env = flow_env(kafka_bootstrap, topics, workers[0], tmp_path / "journal",
                   SPEECHMATICS_BATCH_URL=",".join(w.url for w in workers), BWSM_CHUNK_SECONDS="10",
                   BWSM_FLEET_REFRESH_SECONDS="0.2", BWSM_FLEET_FAILOVER_SECONDS="1", BWSM_DIARIZATION="none")
    reader = OutputReader(kafka_bootstrap, topics)
    flow = start_flow(env, tmp_path / "flow.log")
    dead = workers[2]
    try:
        publish(kafka_bootstrap, topics.audio, first)
        deadline = time.monotonic() + 120
        while dead.admin.engines()["unused_engines"] == 2:
            assert time.monotonic() < deadline and flow.alive(), flow.log()
            time.sleep(0.02)
        dead.process.kill()  # with jobs on its engines
        dead.process.wait(10)
        done = {c.call_id for c in first}
        reader.poll_until(lambda out: out.completed() >= done, DEADLINE_S, check=lambda: None)
        back = local_worker(engine="reference", parallel=2, extra_args=[*busy, "--port", dead.base.rsplit(":", 1)[1]])
        _register(back, first + second)
        publish(kafka_bootstrap, topics.audio, second)
        done |= {c.call_id for c in second}
        out = reader.poll_until(lambda out: out.completed() >= done, DEADLINE_S, check=lambda: None)
        live = [workers[0], workers[1], back]
        stats = [w.admin.stats() for w in live]
    finally:
        flow.stop()
        reader.close()
    by_call = out.by_call()
    for call in first + second:
        assert stitched_words(by_call[call.call_id]) == call.truth_texts(), call.call_id
    per_reference = Counter()
    for s in stats:
        per_reference.update(s["jobs_by_reference"])
    assert per_reference and set(per_reference.values()) == {1}, per_reference  # never twice at live workers
    assert stats[2]["jobs_by_reference"], "the restarted worker rejoined the rotation"
    assert sum(s["requests"].get("POST /v2/jobs", {}).get("503", 0) for s in stats) == 0
    assert not out.letters
