"""Injected faults reach the real SDK as the real API's would; webhooks arrive at least once."""

from __future__ import annotations

import asyncio
import io
import json
import time

import pytest
from aiohttp import web
from speechmatics.batch import AsyncClient, BatchError, JobConfig, JobError, JobStatus, JobType, TranscriptionConfig
from speechmatics.batch import ConnectionError as SdkConnectionError
from speechmatics.batch._exceptions import TransportError
from speechmatics.batch._models import NotificationConfig, TrackingConfig
from worker_fixtures import synthetic_call

from bytewax.speechmatics.connectors.speechmatics.wav import encode_wav

FAST = {"polling_interval": 0.3, "min_polling_interval": 0.05, "timeout": 60}


def job_config(reference: str, notifications: list[NotificationConfig] | None = None) -> JobConfig:
    return JobConfig(type=JobType.TRANSCRIPTION, transcription_config=TranscriptionConfig(diarization="speaker"),
                     tracking=TrackingConfig(reference=reference), notification_config=notifications)


@pytest.fixture
def chunk(reference_worker) -> bytes:
    audio, truth = synthetic_call(12, seed=21)
    reference_worker.admin.register_call("call-x", audio, truth)
    return encode_wav(audio[16000 * 2 * 2 : 16000 * 2 * 10], 16000, "pcm_s16le", 1)


@pytest.mark.parametrize("status", [429, 503, 500])
def test_submit_error_is_a_batch_error_caused_by_the_status(reference_worker, chunk, status):
    reference_worker.admin.set_faults(schedule={"post": [str(status)]})

    async def go():
        async with AsyncClient(api_key="unused", url=reference_worker.url) as client:
            with pytest.raises(BatchError) as caught:
                await client.submit_job(io.BytesIO(chunk), config=job_config("call-x/0"))
            retry = await client.submit_job(io.BytesIO(chunk), config=job_config("call-x/0"))
            return caught.value, retry

    error, retry = asyncio.run(go())
    assert isinstance(error.__cause__, TransportError) and error.__cause__.status_code == status
    stats = reference_worker.admin.stats()
    assert stats["requests"]["POST /v2/jobs"] == {str(status): 1, "201": 1}
    assert stats["jobs_by_reference"] == {"call-x/0": 1}  # the refused attempt created no job
    assert len(stats["post_arrivals"]) == 2 and retry.id


def test_dropped_connection_is_a_transport_error_while_the_server_keeps_the_job(reference_worker, chunk):
    reference_worker.admin.set_faults(schedule={"post": ["drop"]})

    async def go():
        async with AsyncClient(api_key="unused", url=reference_worker.url) as client:
            with pytest.raises(BatchError) as caught:
                await client.submit_job(io.BytesIO(chunk), config=job_config("call-x/7"))
            listed = await client.list_jobs(limit=100)
            held = [j for j in listed if j.config.tracking and j.config.tracking.reference == "call-x/7"]
            transcript = await client.wait_for_completion(held[0].id, **FAST)
            return caught.value, held, transcript

    error, held, transcript = asyncio.run(go())
    assert isinstance(error.__cause__, SdkConnectionError)
    assert len(held) == 1 and transcript.results  # recoverable by listing: no second billable job
    stats = reference_worker.admin.stats()
    assert stats["jobs_by_reference"] == {"call-x/7": 1}
    assert stats["requests"]["POST /v2/jobs"] == {"drop": 1}


def test_polling_rides_out_429_and_503_on_get(reference_worker, chunk):
    reference_worker.admin.set_faults(schedule={"get": ["429", "429", "503"]}, latency={"get": 0.01})

    async def go():
        async with AsyncClient(api_key="unused", url=reference_worker.url) as client:
            return await client.transcribe(io.BytesIO(chunk), config=job_config("call-x/1"), **FAST)

    assert asyncio.run(go()).results
    polls = reference_worker.admin.stats()["requests"]["GET /v2/jobs/{job_id}"]
    assert polls["429"] == 2 and polls["503"] == 1 and polls["200"] >= 1


def test_rejected_job_surfaces_as_job_error(reference_worker, chunk):
    reference_worker.admin.set_faults(schedule={"post": ["reject"]})

    async def go():
        async with AsyncClient(api_key="unused", url=reference_worker.url) as client:
            job = await client.submit_job(io.BytesIO(chunk), config=job_config("call-x/2"))
            with pytest.raises(JobError, match="rejected"):
                await client.wait_for_completion(job.id, **FAST)
            return await client.get_job_info(job.id)

    info = asyncio.run(go())
    assert info.status == JobStatus.REJECTED and info.errors and "rejected" in info.errors[0].message


def test_rate_faults_hit_about_their_fraction(reference_worker, chunk):
    reference_worker.admin.set_faults(rates={"post": {"429": 0.5}}, seed=3)

    async def go():
        async with AsyncClient(api_key="unused", url=reference_worker.url) as client:
            outcomes = []
            for n in range(40):
                try:
                    await client.submit_job(io.BytesIO(chunk), config=job_config(f"call-x/r{n}"))
                    outcomes.append("ok")
                except BatchError as exc:
                    outcomes.append(exc.__cause__.status_code)
            return outcomes

    outcomes = asyncio.run(go())
    assert set(outcomes) == {"ok", 429} and 8 <= outcomes.count(429) <= 32
    stats = reference_worker.admin.stats()
    assert stats["requests"]["POST /v2/jobs"] == {"201": outcomes.count("ok"), "429": outcomes.count(429)}
    assert len(stats["jobs_by_reference"]) == outcomes.count("ok")
    arrivals = stats["post_arrivals"]
    assert len(arrivals) == 40 and arrivals == sorted(arrivals)


def test_webhooks_are_retried_until_accepted_with_auth_headers(reference_worker, chunk):
    """A real receiver refuses the first delivery; the worker retries; a rejected job notifies `error`."""
    reference_worker.admin.set_faults(schedule={"post": ["ok", "reject"]}, webhook_delay=0.05)
    received: list[dict] = []

    async def receiver(request: web.Request) -> web.Response:
        answer = 500 if not received else 200  # the very first delivery is refused
        received.append({"query": dict(request.query), "auth": request.headers.get("Authorization"),
                         "body": await request.read(), "answer": answer})
        return web.Response(status=answer)

    def accepted(job_id: str) -> list[dict]:
        return [r for r in received if r["query"]["id"] == job_id and r["answer"] == 200]

    async def go():
        app = web.Application()
        app.router.add_post("/hook", receiver)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        hook = [NotificationConfig(url=f"http://127.0.0.1:{port}/hook", contents=["transcript"],
                                   auth_headers=["Authorization: Bearer hook-secret"])]
        try:
            async with AsyncClient(api_key="unused", url=reference_worker.url) as client:
                good = await client.submit_job(io.BytesIO(chunk), config=job_config("call-x/3", hook))
                bad = await client.submit_job(io.BytesIO(chunk), config=job_config("call-x/4", hook))
                deadline = time.monotonic() + 30
                while not (accepted(good.id) and accepted(bad.id)):
                    assert time.monotonic() < deadline, "webhooks not delivered before the deadline"
                    await asyncio.sleep(0.05)
                return good.id, bad.id
        finally:
            await runner.cleanup()

    good, bad = asyncio.run(go())
    assert all(r["auth"] == "Bearer hook-secret" for r in received)
    refused = received[0]["query"]["id"]
    assert len([r for r in received if r["query"]["id"] == refused]) >= 2  # retried after the 500
    assert {r["query"]["status"] for r in received if r["query"]["id"] == good} == {"success"}
    assert {r["query"]["status"] for r in received if r["query"]["id"] == bad} == {"error"}
    assert json.loads(accepted(good)[0]["body"])["job"]["tracking"] == {"reference": "call-x/3"}
    assert accepted(bad)[0]["body"] == b""  # a rejected job has no transcript to send
    counts = next(iter(reference_worker.admin.stats()["webhooks"].values()))
    assert counts["500"] == 1 and counts["200"] >= 2
