"""Finding a job again by tracking.reference when more than one list_jobs page (100) is newer than it."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from pathlib import Path

from bytewax.speechmatics.connectors.job_journal import JobJournal
from bytewax.speechmatics.connectors.retry import RetryBudget
from bytewax.speechmatics.connectors.settings import SubmitSettings
from bytewax.speechmatics.connectors.speechmatics_client import SubmitRequest, SubmitService, _Progress
from bytewax.speechmatics.connectors.throttle import ClusterPlace
from bytewax.speechmatics.connectors.wav import audio_hash

_spec = importlib.util.spec_from_file_location("submit_bench_flow", Path(__file__).parents[1] / "bench/submit_flow.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


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
