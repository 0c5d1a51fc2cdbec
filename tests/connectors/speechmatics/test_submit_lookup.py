"""Finding a job again by tracking.reference when more than one list_jobs page (100) is newer than it."""

from __future__ import annotations

import asyncio
import time

import submit_flow as bench

from bytewax.speechmatics.connectors.speechmatics.journal import JobJournal
from bytewax.speechmatics.connectors.speechmatics.retry import RetryBudget
from bytewax.speechmatics.connectors.speechmatics.service import SubmitRequest, SubmitService, _Progress
from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings
from bytewax.speechmatics.connectors.speechmatics.throttle import ClusterPlace
from bytewax.speechmatics.connectors.speechmatics.wav import audio_hash


def test_lookup_walks_back_past_the_newest_hundred_jobs(local_worker, monkeypatch, tmp_path) -> None:
    worker = local_worker(engine="reference", parallel=8, api_key="lookup-key")
    monkeypatch.setenv("SPEECHMATICS_API_KEY", "lookup-key")
    monkeypatch.setenv("SPEECHMATICS_BATCH_URL", worker.url)
    settings = SubmitSettings(post_rate=200.0, get_rate=200.0, journal_dir=str(tmp_path))
    service = SubmitService(settings, place=ClusterPlace(1, 0), journal=JobJournal(tmp_path)).start()
    try:
        target, *others = bench.bench_chunks(1, 131, 0.05, prefix="lookup")
        since = time.time()

        def run(coro):
            return asyncio.run_coroutine_threadsafe(coro, service._loop).result(timeout=60)  # noqa: SLF001

        def post(chunk) -> str:
            budget = RetryBudget(5, time.monotonic() + 60)
            return run(service._post(SubmitRequest(chunk), audio_hash(chunk.audio), budget, _Progress()))  # noqa: SLF001

        job_id = post(target)
        for chunk in others:
            post(chunk)
        budget = RetryBudget(5, time.monotonic() + 60)
        found = run(service._find_by_reference(target.span.reference, audio_hash(target.audio), since, budget))  # noqa: SLF001
        missing = run(service._find_by_reference("lookup-0/999", "0" * 32, since, budget))  # noqa: SLF001
        lists = worker.admin.stats()["requests"]["GET /v2/jobs"]
    finally:
        service.close()
    assert found == job_id
    assert missing is None
    assert sum(lists.values()) >= 3  # page 1 (100 newest) missed it; the walk went on with created_before


def test_the_same_chunk_handed_over_twice_is_one_job(local_worker, monkeypatch, tmp_path) -> None:
    """A rebuilt operator may hand a chunk that is still running to the service again: it must not post twice."""
    worker = local_worker(engine="reference", parallel=4, api_key="twice-key")
    # POSTs answer slowly, so the second hand-over finds neither a journal entry nor a job to look up.
    worker.admin.set_faults({"latency": {"post": {"dist": "fixed", "value": 0.5}}})
    monkeypatch.setenv("SPEECHMATICS_API_KEY", "twice-key")
    monkeypatch.setenv("SPEECHMATICS_BATCH_URL", worker.url)
    settings = SubmitSettings(post_rate=50.0, get_rate=100.0, journal_dir=str(tmp_path), poll_min=0.05)
    service = SubmitService(settings, place=ClusterPlace(1, 0), journal=JobJournal(tmp_path)).start()
    try:
        (chunk,) = bench.bench_chunks(1, 1, 0.05, prefix="twice")
        service.submit(SubmitRequest(chunk))
        service.submit(SubmitRequest(chunk))
        events = []
        deadline = time.monotonic() + 30
        while not any(type(e).__name__ == "ChunkDone" for e in events) and time.monotonic() < deadline:
            events += service.wait(chunk.span.call_id, timeout=0.5)
    finally:
        service.close()
    assert any(type(e).__name__ == "ChunkDone" for e in events)
    assert worker.admin.stats()["jobs_by_reference"] == {chunk.span.reference: 1}
