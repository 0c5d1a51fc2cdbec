"""The submission service against real local workers: a URL that names no batch API stops the flow; a fleet of
three workers (one killed and restarted mid-run) transcribes every chunk once at live workers, never refused."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import submit_flow as bench
from worker_fixtures import synthetic_call

from bytewax.speechmatics.connectors import metrics
from bytewax.speechmatics.connectors.speechmatics.fleet import worker_name
from bytewax.speechmatics.connectors.speechmatics.journal import JobJournal
from bytewax.speechmatics.connectors.speechmatics.service import SubmitRequest, SubmitService
from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings
from bytewax.speechmatics.connectors.speechmatics.throttle import ClusterPlace
from bytewax.speechmatics.flows.settings import Settings
from bytewax.speechmatics.schemas.chunks import Chunk, ChunkSpan
from bytewax.speechmatics.schemas.errors import SettingsError


def test_a_joined_url_list_is_refused_at_start() -> None:
    env = {"SPEECHMATICS_BATCH_URL": "http://10.0.0.1:8000/v2http://10.0.0.2:8000/v2"}
    with pytest.raises(SettingsError, match="SPEECHMATICS_BATCH_URL must be an http"):
        Settings.from_env(env, argv=[])
    fleet = Settings.from_env({"SPEECHMATICS_BATCH_URL": "http://10.0.0.1:8000/v2,http://10.0.0.2:8000/v2"}, argv=[])
    assert len(fleet.submission.worker_urls) == 2


def test_a_url_that_answers_404_to_every_post_stops_the_flow(local_worker, tmp_path) -> None:
    worker = local_worker(engine="reference", parallel=2)
    settings = SubmitSettings(api_key="k", batch_url=worker.base + "/v1", journal_dir=str(tmp_path),
                              backoff_base=0.01, backoff_cap=0.05)
    service = SubmitService(settings, place=ClusterPlace(1, 0), journal=JobJournal(tmp_path)).start()
    try:
        (chunk,) = bench.bench_chunks(1, 1, 0.05, prefix="nobatch")
        service.submit(SubmitRequest(chunk))
        deadline = time.monotonic() + 20
        while service.fatal is None and time.monotonic() < deadline:
            service.wait(chunk.span.call_id, timeout=0.2)
    finally:
        service.close()
    assert service.fatal is not None and "answered 404 3 times in a row" in service.fatal
    assert "\n" not in service.fatal


CHUNK_SECONDS = 2.0
RATE = 16000


def _chunks(call_id: str, audio: bytes, count: int) -> list[Chunk]:
    samples = int(CHUNK_SECONDS * RATE)
    return [Chunk(ChunkSpan(call_id, i, i * samples, (i + 1) * samples, 0, RATE, "pcm_s16le", 1, last=i == count - 1),
                  audio[2 * i * samples:2 * (i + 1) * samples], ()) for i in range(count)]


def _expected(words: list[dict], index: int) -> list[str]:
    """The truth's words whose midpoint lies in the chunk (the reference engine's default edge rule)."""
    t0, t1 = index * CHUNK_SECONDS, (index + 1) * CHUNK_SECONDS
    return [w["text"] for w in words if w.get("type") != "punctuation"
            and t0 <= (w["start_time"] + w["end_time"]) / 2 < t1]


def _said(transcript: dict) -> list[str]:
    return [r["alternatives"][0]["content"] for r in transcript["results"] if r["type"] == "word"]


def _run(service: SubmitService, chunks: list[Chunk], timeout: float = 60) -> dict[str, dict]:
    """Submit the chunks and wait for all of them: reference -> ChunkDone (a ChunkFailed fails the test)."""
    for chunk in chunks:
        service.submit(SubmitRequest(chunk))
    done: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    calls = {c.span.call_id for c in chunks}
    while len(done) < len(chunks) and time.monotonic() < deadline and service.fatal is None:
        for call_id in calls:
            for event in service.take(call_id):
                assert type(event).__name__ != "ChunkFailed", event
                if type(event).__name__ == "ChunkDone":
                    done[f"{call_id}/{event.index}"] = event.transcript
        time.sleep(0.05)
    assert service.fatal is None
    return done


def test_a_fleet_of_three_workers_one_killed_and_restarted(local_worker, tmp_path) -> None:
    fault_free = ["--processing-factor", "0.5"]  # a 2 s chunk holds its engine 1 s
    workers = [local_worker(engine="reference", parallel=2, extra_args=fault_free) for _ in range(3)]
    calls = {f"fleet-{n}": synthetic_call(6 * CHUNK_SECONDS, seed=n) for n in range(4)}
    for worker in workers:
        for call_id, (audio, words) in calls.items():
            worker.admin.register_call(call_id, audio, words)
    settings = SubmitSettings(api_key="k", batch_url=",".join(w.url for w in workers), journal_dir=str(tmp_path),
                              poll_min=0.05, poll_max=0.2, fleet_refresh=0.2, fleet_failover=1.0,
                              backoff_base=0.05, backoff_cap=0.5)
    chunks = {call_id: _chunks(call_id, audio, 6) for call_id, (audio, _) in calls.items()}
    first = [c for cs in chunks.values() for c in cs[:3]]
    second = [c for cs in chunks.values() for c in cs[3:]]
    service = SubmitService(settings, place=ClusterPlace(1, 0), journal=JobJournal(tmp_path)).start()
    dead = workers[2]
    try:
        for chunk in first:
            service.submit(SubmitRequest(chunk))
        deadline = time.monotonic() + 20
        while dead.admin.engines()["unused_engines"] == 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        dead.process.kill()  # mid-run, jobs on its engines
        dead.process.wait(10)
        done = _run(service, first)
        assert metrics.FLEET_FAILOVERS.labels(worker=worker_name(dead.url))._value.get() >= 1  # noqa: SLF001
        port = dead.base.rsplit(":", 1)[1]
        back = local_worker(engine="reference", parallel=2, extra_args=[*fault_free, "--port", port])
        for call_id, (audio, words) in calls.items():
            back.admin.register_call(call_id, audio, words)
        deadline = time.monotonic() + 10
        while not service._watch.fleet.is_up(back.url) and time.monotonic() < deadline:  # noqa: SLF001
            time.sleep(0.05)
        done |= _run(service, second)
        live = [workers[0], workers[1], back]
        stats = [w.admin.stats() for w in live]
    finally:
        service.close()
    for call_id, (_, words) in calls.items():
        for index in range(6):
            assert _said(done[f"{call_id}/{index}"]) == _expected(words, index), (call_id, index)
    per_reference = Counter()
    for s in stats:
        per_reference.update(s["jobs_by_reference"])
    assert len(per_reference) == 24 and set(per_reference.values()) == {1}  # no chunk twice at live workers
    assert stats[2]["jobs_by_reference"], "the restarted worker rejoined the rotation"
    refusals = sum(s["requests"].get("POST /v2/jobs", {}).get("503", 0) for s in stats)
    assert refusals == 0  # one process, its view of the engines: never a job to a full worker


def test_a_last_chunk_asks_for_more_engines_when_they_are_free(local_worker, tmp_path) -> None:
    """BWSM_FLEET_LAST_CHUNK_ENGINES=2, a worker of 3 free engines: the call's last chunk holds 2 engines at the
    worker, its other chunk 1, and both are transcribed."""
    worker = local_worker(engine="reference", parallel=3, extra_args=["--processing-factor", "1"])
    audio, words = synthetic_call(2 * CHUNK_SECONDS, seed=29)
    worker.admin.register_call("engines-0", audio, words)
    settings = SubmitSettings(api_key="k", batch_url=worker.url, worker_urls=(worker.url,), journal_dir=str(tmp_path),
                              poll_min=0.05, poll_max=0.2, fleet_refresh=0.2, fleet_last_chunk_engines=2)
    chunks = _chunks("engines-0", audio, 2)
    service = SubmitService(settings, place=ClusterPlace(1, 0), journal=JobJournal(tmp_path)).start()
    held: dict[str, int] = {}
    try:
        for chunk in chunks:
            service.submit(SubmitRequest(chunk))
        deadline = time.monotonic() + 20
        while len(held) < 2 and time.monotonic() < deadline:  # each job holds its engines 1 s at least
            held |= {j["job_id"]: j["parallel_engines"] for j in worker.admin.engines()["active_jobs"]}
            time.sleep(0.02)
        done = 0
        while done < 2 and time.monotonic() < deadline and service.fatal is None:
            done += sum(type(e).__name__ == "ChunkDone" for e in service.take("engines-0"))
            time.sleep(0.05)
    finally:
        service.close()
    assert sorted(held.values()) == [1, 2]
    assert done == 2
