"""The submit operator inside a real Bytewax run, against the local worker (real HTTP, real SDK).

The worker's own counters are the witness: jobs by tracking.reference, requests by route and status.
"""

from __future__ import annotations

import json
import socket
import urllib.request

import bytewax.operators as op
import numpy as np
import pytest
import submit_flow as bench
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main
from prometheus_client import REGISTRY

from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings
from bytewax.speechmatics.connectors.speechmatics.webhooks import AUTH_HEADER
from bytewax.speechmatics.flows.submitter import transcribe_chunks
from bytewax.speechmatics.schemas.chunks import Chunk, ChunkResult, ChunkSpan
from bytewax.speechmatics.schemas.dead_letters import DeadLetter
from bytewax.speechmatics.schemas.errors import SettingsError

API_KEY = "test-key-5f1e"


@pytest.fixture
def api(local_worker, monkeypatch):
    """A fresh reference worker with an API key, and the SDK pointed at it."""
    worker = local_worker(engine="reference", parallel=16, api_key=API_KEY)
    monkeypatch.setenv("SPEECHMATICS_API_KEY", API_KEY)
    monkeypatch.setenv("SPEECHMATICS_BATCH_URL", worker.url)
    return worker


def run_submit(chunks: list[Chunk], settings: SubmitSettings) -> tuple[list[ChunkResult], list[DeadLetter]]:
    flow = Dataflow("submit_test")
    source = op.input("in", flow, TestingSource(chunks))
    keyed = op.key_on("by_call", source, lambda c: c.span.call_id)
    out = transcribe_chunks("submit", keyed, settings)
    results: list = []
    letters: list = []
    op.output("results", out.oks, TestingSink(results))
    op.output("dlq", out.errs, TestingSink(letters))
    run_main(flow)
    return [r for _, r in results], letters


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def fast_settings(tmp_path, **overrides) -> SubmitSettings:
    base = {"post_rate": 40.0, "get_rate": 200.0, "cluster_processes": 1, "max_attempts": 12,
            "journal_dir": str(tmp_path / "journal"), "poll_min": 0.1, "backoff_base": 0.05, "backoff_cap": 1.0}
    return SubmitSettings(**{**base, **overrides})


def assert_one_job_per_chunk(worker, chunks: list[Chunk], results: list[ChunkResult]) -> None:
    refs = {c.span.reference for c in chunks}
    by_ref = worker.admin.stats()["jobs_by_reference"]
    assert {r.span.reference for r in results} == refs, "a chunk was lost"
    assert all(r.ok and r.transcript is not None for r in results)
    duplicates = {ref: n for ref, n in by_ref.items() if ref in refs and n != 1}
    assert not duplicates, f"jobs per reference != 1: {duplicates}"
    assert set(by_ref) >= refs


def test_rate_limited_and_failing_api_still_transcribes_every_chunk_once(api, tmp_path) -> None:
    faults = {"429": 0.2, "503": 0.05}
    api.admin.set_faults({"rates": {"post": faults, "get": faults}, "seed": 11})
    chunks = bench.bench_chunks(10, 10, 0.25, prefix="faults")
    before = counter("bwsm_http_429_total", route="post") + counter("bwsm_http_429_total", route="get")
    results, letters = run_submit(chunks, fast_settings(tmp_path))
    assert not letters
    assert_one_job_per_chunk(api, chunks, results)
    requests = api.admin.stats()["requests"]
    served_429 = sum(codes.get("429", 0) for codes in requests.values())
    served_503 = sum(codes.get("503", 0) for codes in requests.values())
    counted = counter("bwsm_http_429_total", route="post") + counter("bwsm_http_429_total", route="get") - before
    assert served_429 > 20 and served_503 > 0  # the faults really happened
    assert counted == served_429  # every 429 is counted
    print(f"faults: {len(chunks)} chunks, worker answered 429 x{served_429}, 503 x{served_503}: {requests}")


def test_dropped_connections_after_acceptance_create_no_duplicate_jobs(api, tmp_path) -> None:
    api.admin.set_faults({"rates": {"post": {"drop": 0.1}}, "seed": 5})
    chunks = bench.bench_chunks(10, 12, 0.25, prefix="drops")
    recovered = counter("bwsm_jobs_recovered_total", via="lookup")
    results, letters = run_submit(chunks, fast_settings(tmp_path))
    assert not letters
    assert_one_job_per_chunk(api, chunks, results)
    looked_up = counter("bwsm_jobs_recovered_total", via="lookup") - recovered
    assert looked_up > 0  # the ambiguous POSTs were resolved by finding the job, not by posting again
    print(f"drops: {len(chunks)} chunks, {looked_up:.0f} jobs found by reference after a dropped connection")


def test_rejected_job_becomes_a_dead_letter_and_a_failed_result(api, tmp_path) -> None:
    api.admin.set_faults({"schedule": {"post": ["reject"]}})
    chunks = bench.bench_chunks(1, 3, 0.25, prefix="reject")
    results, letters = run_submit(chunks, fast_settings(tmp_path))
    failed = [r for r in results if not r.ok]
    assert len(results) == 3 and len(failed) == 1 and len(letters) == 1
    letter = letters[0]
    context = dict(letter.context)
    assert letter.stage == "submit" and "rejected" in letter.reason
    assert context["dlq.call_id"] == failed[0].span.call_id
    assert context["dlq.chunk.index"] == str(failed[0].span.index)
    assert context["dlq.job_id"] == failed[0].job_id
    assert "calls.audio" in context["dlq.source.ranges"]
    assert failed[0].error == letter.reason
    assert API_KEY not in repr(letter) and API_KEY not in repr(failed[0])


def test_a_wrong_api_key_is_one_settings_error_where_the_flow_is_built(api, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SPEECHMATICS_API_KEY", "wrong-key-77aa")
    flow = Dataflow("badkey")
    chunks = op.key_on("by_call", op.input("in", flow, TestingSource(bench.bench_chunks(1, 2, 0.25, "badkey"))),
                       lambda c: c.span.call_id)
    with pytest.raises(SettingsError) as caught:
        transcribe_chunks("submit", chunks, fast_settings(tmp_path))
    text = str(caught.value)
    assert "refused the API key" in text and "SPEECHMATICS_API_KEY" in text and "authentication" in text
    assert "wrong-key-77aa" not in text
    requests = api.admin.stats()["requests"]
    assert not requests.get("POST /v2/jobs") and sum(requests["GET /v2/jobs"].values()) == 1, requests


def test_a_key_refused_while_the_flow_runs_stops_it_naming_the_cause(api, tmp_path) -> None:
    api.admin.set_faults({"schedule": {"post": ["401"]}})  # accepted when the flow was built, refused at the POST
    chunks = bench.bench_chunks(5, 4, 0.25, prefix="revoked")
    with pytest.raises(Exception) as caught:  # noqa: PT011 - Bytewax re-raises the operator's error
        run_submit(chunks, fast_settings(tmp_path))
    text = "".join(str(e) for e in [caught.value, caught.value.__cause__, caught.value.__context__] if e)
    assert "SPEECHMATICS_API_KEY" in text and "authentication" in text
    assert API_KEY not in text
    posts = api.admin.stats()["requests"].get("POST /v2/jobs", {})
    assert sum(posts.values()) <= 3, f"retry storm after 401: {posts}"


@pytest.mark.timeout(50)  # a deadline, not a timing: without the callbacks each job waits the 60 s fallback poll
def test_webhooks_wake_waiting_chunks_and_unauthenticated_callbacks_are_refused(api, tmp_path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = fast_settings(tmp_path, wait_mode="webhook", webhook_url="http://127.0.0.1:{port}/",
                             webhook_host="127.0.0.1", webhook_port=port, webhook_secret="s3cret-hook",
                             webhook_fallback_poll=60.0)
    chunks = bench.bench_chunks(3, 3, 0.25, prefix="hooks")
    api.admin.set_faults({"job_duration": {"dist": "fixed", "value": 0.5}})  # still running at the first look
    results, letters = run_submit(chunks, settings)  # would take 60 s per chunk without the callbacks
    assert not letters
    assert_one_job_per_chunk(api, chunks, results)
    assert sum(sum(c.values()) for c in api.admin.stats()["webhooks"].values()) >= len(chunks)
    request = urllib.request.Request(f"http://127.0.0.1:{port}/?id=x&status=success", data=b"", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)  # noqa: S310 - local receiver
    assert refused.value.code == 401
    request.add_header(AUTH_HEADER, "s3cret-hook")
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
        assert answer.status == 200


def test_speaker_diarization_chains_a_calls_jobs_and_keeps_labels(api, tmp_path) -> None:
    rate, seconds, chunks_n = 16000, 2, 3
    audio = np.random.default_rng(3).integers(-3000, 3000, rate * seconds * chunks_n, dtype=np.int16).tobytes()
    words = [{"text": f"w{i}", "start_time": i * 0.5 + 0.1, "end_time": i * 0.5 + 0.3, "speaker": "AB"[i // 2 % 2]}
             for i in range(seconds * chunks_n * 2)]
    api.admin.register_call("spk-call", audio, words, sample_rate=rate)
    width = rate * seconds
    chunks = [Chunk(ChunkSpan("spk-call", i, i * width, (i + 1) * width, 0, rate, "pcm_s16le", 1,
                              last=i == chunks_n - 1), audio[i * width * 2:(i + 1) * width * 2])
              for i in range(chunks_n)]
    results, letters = run_submit(chunks, fast_settings(tmp_path, diarization="speaker"))
    assert not letters and len(results) == chunks_n
    voice_of = {w["text"]: w["speaker"] for w in words}
    label_of: dict[str, set[str]] = {}
    for result in results:
        for item in result.transcript["results"]:
            alt = item["alternatives"][0]
            label_of.setdefault(voice_of[alt["content"]], set()).add(alt["speaker"])
    assert len(label_of) == 2 and all(len(labels) == 1 for labels in label_of.values()), label_of
    assert label_of["A"] != label_of["B"]
    request = urllib.request.Request(api.url + "/jobs", headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - local worker
        jobs = json.loads(answer.read())["jobs"]
    enrolled = {j["config"]["tracking"]["reference"]:
                bool(j["config"]["transcription_config"]["speaker_diarization_config"].get("speakers")) for j in jobs}
    # chunk 0 enrols nobody; chunks 1 and 2 carry identifiers from the jobs before them: they ran one after another
    assert enrolled == {"spk-call/0": False, "spk-call/1": True, "spk-call/2": True}


def test_server_side_wait_mode_transcribes_without_poll_sleeps(api, tmp_path) -> None:
    api.admin.set_faults({"job_duration": {"dist": "fixed", "value": 0.3}})
    chunks = bench.bench_chunks(2, 3, 0.25, prefix="waitmode")
    results, letters = run_submit(chunks, fast_settings(tmp_path, wait_mode="wait", wait_seconds=10, poll_min=30.0))
    assert not letters
    assert_one_job_per_chunk(api, chunks, results)
    status_gets = api.admin.stats()["requests"]["GET /v2/jobs/{job_id}"]
    assert sum(status_gets.values()) == len(chunks)  # one held GET per job, no polling loop


def test_busy_worker_503s_are_back_pressure_not_lost_chunks(local_worker, monkeypatch, tmp_path) -> None:
    """A worker with one engine refuses extra jobs with 503 "Server busy"; with only 2 attempts per chunk every chunk
    must still be transcribed once, because a busy refusal creates no job and does not use up an attempt."""
    worker = local_worker(engine="reference", parallel=1, api_key=API_KEY)
    monkeypatch.setenv("SPEECHMATICS_API_KEY", API_KEY)
    monkeypatch.setenv("SPEECHMATICS_BATCH_URL", worker.url)
    worker.admin.set_faults({"job_duration": {"dist": "fixed", "value": 0.3}})
    chunks = bench.bench_chunks(3, 2, 0.25, prefix="busy")
    results, letters = run_submit(chunks, fast_settings(tmp_path, max_attempts=2, backoff_base=0.1))
    assert not letters
    assert_one_job_per_chunk(worker, chunks, results)
    posts = worker.admin.stats()["requests"]["POST /v2/jobs"]
    assert posts.get("503", 0) > 0, f"the worker never refused a job as busy ({posts}): no back-pressure exercised"


def test_two_transcribe_steps_with_other_settings_each_keep_their_own_jobs(api, tmp_path) -> None:
    """One flow, the same chunks through two transcribe steps (English and German, other limits): each step gets
    every chunk back from a job posted with its own config, and neither takes the other's job for the same chunk
    (they share the process's journal, where the chunk's reference is the same)."""
    chunks = bench.bench_chunks(3, 2, 0.25, prefix="twosteps")
    english = fast_settings(tmp_path, api_key=API_KEY, batch_url=api.url, language="en")
    german = fast_settings(tmp_path, api_key=API_KEY, batch_url=api.url, language="de", post_rate=20.0)
    flow = Dataflow("two_steps")
    keyed = op.key_on("by_call", op.input("in", flow, TestingSource(chunks)), lambda c: c.span.call_id)
    outputs = {"en": [], "de": []}
    for language, settings in (("en", english), ("de", german)):
        out = transcribe_chunks(f"transcribe_{language}", keyed, settings)
        op.output(f"out_{language}", out.oks, TestingSink(outputs[language]))
    run_main(flow)

    refs = {c.span.reference for c in chunks}
    for language, results in outputs.items():
        assert {r.span.reference for _, r in results} == refs and all(r.ok for _, r in results), language
        for _, result in results:  # what the API really received for this step's job
            request = urllib.request.Request(f"{api.url}/jobs/{result.job_id}",
                                             headers={"Authorization": f"Bearer {API_KEY}"})
            with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - local worker
                job = json.load(answer)["job"]
            assert job["config"]["transcription_config"]["language"] == language
    assert {r.job_id for _, r in outputs["en"]}.isdisjoint(r.job_id for _, r in outputs["de"])
    by_ref = api.admin.stats()["jobs_by_reference"]
    assert {ref: by_ref[ref] for ref in refs} == dict.fromkeys(refs, 2)  # one job per chunk per step
