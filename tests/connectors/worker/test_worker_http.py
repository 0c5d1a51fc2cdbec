"""Seed 003's curl examples over plain HTTP: submission, capacity accounting, health, errors, API key."""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

import aiohttp
import pytest
from speechmatics.batch import AsyncClient, AuthenticationError
from worker_fixtures import synthetic_call

from bytewax.speechmatics.connectors.speechmatics.wav import encode_wav

CONFIG = {"type": "transcription",
          "transcription_config": {"language": "en", "diarization": "speaker", "operating_point": "enhanced"}}


def form(config: dict[str, Any], audio: bytes) -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field("config", json.dumps(config))
    data.add_field("data_file", audio, filename="audio_file.wav", content_type="audio/wav")
    return data


async def post(session: aiohttp.ClientSession, base: str, audio: bytes, processing: dict | None = None,
               config: dict | None = None, headers: dict | None = None) -> tuple[int, Any]:
    hdrs = dict(headers or {})
    if processing is not None:
        hdrs["X-SM-Processing-Data"] = json.dumps(processing)
    async with session.post(f"{base}/v2/jobs", data=form(config or CONFIG, audio), headers=hdrs) as resp:
        return resp.status, await resp.json()


async def get(session: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any]:
    async with session.get(url, **kw) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body


async def until(check, deadline: float = 30.0):
    """Poll an async condition until it returns something truthy, or fail after the deadline."""
    give_up = time.monotonic() + deadline
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > give_up:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.05)


def test_capacity_accounting_busy_body_and_ready_flipping(reference_worker):
    """parallel 4 worker; jobs hold their engines (injected duration) until released."""
    audio, _ = synthetic_call(5, seed=11)
    wav = encode_wav(audio, 16000, "pcm_s16le", 1)
    base = reference_worker.base
    reference_worker.admin.set_faults(job_duration=600)

    async def go():
        async with aiohttp.ClientSession() as s:
            await until(lambda: _idle(s, base))  # jobs an earlier test left behind have finished
            assert await get(s, f"{base}/ready") == (200, {"ready": True, "engines_used": 0})
            assert await get(s, f"{base}/jobs") == (200, {"active_jobs": [], "max_engines": 4, "unused_engines": 4})
            status, a = await post(s, base, wav, {"parallel_engines": 2, "user_id": "MY_USER_ID"})
            assert status == 201
            _, engines = await get(s, f"{base}/jobs")
            assert engines == {"active_jobs": [{"job_id": a["id"], "parallel_engines": 2}], "max_engines": 4,
                               "unused_engines": 2}
            assert await get(s, f"{base}/ready") == (200, {"ready": True, "engines_used": 2})
            assert await post(s, base, wav, {"parallel_engines": 8}) == (
                503, {"detail": "Server busy: 8 engines not available (2 engines in use, 4 parallel allowed)"})
            status, b = await post(s, base, wav, {"user_id": "MY_USER_ID"})  # one engine by default
            assert status == 201
            assert await post(s, base, wav, {"parallel_engines": 2}) == (
                503, {"detail": "Server busy: 2 engines not available (3 engines in use, 4 parallel allowed)"})
            status, c = await post(s, base, wav, {"parallel_engines": 1})
            assert status == 201
            assert await get(s, f"{base}/ready") == (503, {"ready": False, "engines_used": 4})
            status, running = await get(s, f"{base}/v2/jobs/{c['id']}")
            assert status == 200 and running["job"]["status"] == "running"
            status, _ = await get(s, f"{base}/v2/jobs/{c['id']}/transcript")
            assert status == 404  # not ready yet
            reference_worker.admin.release()
            await until(lambda: _ready(s, base))
            _, engines = await get(s, f"{base}/jobs")
            assert engines == {"active_jobs": [], "max_engines": 4, "unused_engines": 4}
            for job in (a, b, c):
                _, body = await get(s, f"{base}/v2/jobs/{job['id']}")
                assert body["job"]["status"] == "done"
            status, d = await post(s, base, wav, {"parallel_engines": 4})  # held again: releases are one-shot
            assert status == 201 and await get(s, f"{base}/ready") == (503, {"ready": False, "engines_used": 4})
            reference_worker.admin.set_faults({})  # no job_duration any more: held jobs end now
            await until(lambda: _idle(s, base))

    asyncio.run(go())


async def _idle(session: aiohttp.ClientSession, base: str) -> bool:
    _, engines = await get(session, f"{base}/jobs")
    return engines["unused_engines"] == engines["max_engines"]


async def _done(session: aiohttp.ClientSession, base: str, job_id: str) -> bool:
    return (await get(session, f"{base}/v2/jobs/{job_id}"))[1]["job"]["status"] == "done"


async def _ready(session: aiohttp.ClientSession, base: str) -> bool:
    status, _ = await get(session, f"{base}/ready")
    return status == 200


def test_seed_003_job_api_shapes(reference_worker):
    audio, truth = synthetic_call(20, seed=12)
    reference_worker.admin.register_call("call-h", audio, truth)
    wav = encode_wav(audio[: 16000 * 2 * 10], 16000, "pcm_s16le", 1)
    base = reference_worker.base
    tracked = {**CONFIG, "tracking": {"title": "t", "reference": "call-h/0", "tags": ["a"],
                                      "details": {"call": "call-h", "chunk": 0}}}

    async def go():
        async with aiohttp.ClientSession() as s:
            assert await get(s, f"{base}/live") == (200, {"live": True})
            status, created = await post(s, base, wav, {"parallel_engines": 1}, config=tracked)
            assert status == 201 and len(created["id"]) == 20
            job_id = created["id"]

            async def done():
                _, body = await get(s, f"{base}/v2/jobs/{job_id}")
                return body["job"]["status"] == "done" and body

            body = await until(done)
            job = body["job"]
            assert {"id", "created_at", "data_name", "duration", "status", "config", "request_id"} <= set(job)
            assert job["config"] == tracked and job["duration"] == 10 and job["data_name"] == "audio_file.wav"
            _, listing = await get(s, f"{base}/v2/jobs", params={"limit": "5"})
            assert listing["jobs"][0]["id"] == job_id
            status, transcript = await get(s, f"{base}/v2/jobs/{job_id}/transcript", params={"format": "json-v2"})
            assert status == 200 and transcript["job"]["tracking"] == tracked["tracking"]
            assert transcript["results"] and transcript["format"]
            status, text = await get(s, f"{base}/v2/jobs/{job_id}/transcript", params={"format": "txt"})
            assert status == 200 and text.startswith("SPEAKER S1: word")
            status, log = await get(s, f"{base}/v2/jobs/{job_id}/log")
            assert status == 200 and "job created" in log and "job done" in log
            assert (await get(s, f"{base}/v2/jobs/nope"))[0] == 404
            assert (await get(s, f"{base}/v2/jobs/nope/transcript"))[0] == 404
            assert (await get(s, f"{base}/v2/jobs/{job_id}/transcript", params={"format": "docx"}))[0] == 400
            assert (await post(s, base, wav, config={"type": "alignment"}))[0] == 400
            async with s.post(f"{base}/v2/jobs", data=b"{}", headers={"Content-Type": "application/json"}) as r:
                assert r.status == 400 and "multipart" in (await r.json())["detail"]

    asyncio.run(go())


def test_api_key_is_required_on_the_job_api_only(local_worker):
    worker = local_worker(engine="reference", parallel=1, api_key="sekrit")
    wav = encode_wav(synthetic_call(3, seed=13)[0], 16000, "pcm_s16le", 1)

    async def go():
        async with aiohttp.ClientSession() as s:
            assert (await get(s, f"{worker.url}/jobs"))[0] == 401
            assert (await get(s, f"{worker.url}/jobs", headers={"Authorization": "Bearer wrong"}))[0] == 401
            assert (await get(s, f"{worker.url}/jobs", headers={"Authorization": "Bearer sekrit"}))[0] == 200
            assert (await get(s, f"{worker.base}/live"))[0] == 200
        async with AsyncClient(api_key="wrong", url=worker.url) as client:
            with pytest.raises(AuthenticationError):
                await client.submit_job(io.BytesIO(wav))
            with pytest.raises(AuthenticationError):
                await client.list_jobs()
        async with AsyncClient(api_key="sekrit", url=worker.url) as client:
            return await client.transcribe(io.BytesIO(wav), polling_interval=0.3, min_polling_interval=0.05,
                                           timeout=60)

    assert asyncio.run(go()).results == []
    requests = worker.admin.stats()["requests"]
    assert requests["POST /v2/jobs"] == {"401": 1, "201": 1}


def test_faults_from_cli_flags(local_worker):
    worker = local_worker(engine="reference", parallel=2, faults={"schedule": {"post": ["503"]}},
                          extra_args=["--fault-reject", "1", "--fault-seed", "1"])
    wav = encode_wav(synthetic_call(3, seed=14)[0], 16000, "pcm_s16le", 1)

    async def go():
        async with aiohttp.ClientSession() as s:
            first = await post(s, worker.base, wav)
            status, job = await post(s, worker.base, wav)
            assert status == 201

            async def rejected():
                _, body = await get(s, f"{worker.url}/jobs/{job['id']}")
                return body["job"]["status"] == "rejected" and body["job"]

            return first, await until(rejected)

    first, job = asyncio.run(go())
    assert first == (503, {"code": 503, "error": "injected fault 503", "detail": "injected fault 503"})
    assert job["errors"][0]["message"].startswith("job rejected")
    assert worker.admin.faults()["rates"] == {"post": {"reject": 1.0}}


def test_an_engine_that_cannot_start_stops_the_worker_loudly(local_worker, tmp_path):
    from bytewax.speechmatics.connectors.worker.control import WorkerStartError

    with pytest.raises(WorkerStartError, match="has no model.bin"):
        local_worker(engine="whisper", parallel=1, extra_args=["--model-dir", str(tmp_path)], ready_timeout=60)


def test_a_processing_factor_keeps_the_engine_busy_for_the_audio(local_worker):
    """`--processing-factor 4`: a 1 s job holds its engine 4 s at least (as a real engine's would), then frees it."""
    worker = local_worker(engine="reference", parallel=1, extra_args=["--processing-factor", "4"])
    audio, _ = synthetic_call(1, seed=12)
    wav = encode_wav(audio, 16000, "pcm_s16le", 1)

    async def go():
        async with aiohttp.ClientSession() as s:
            status, body = await post(s, worker.base, wav)
            assert status == 201
            await asyncio.sleep(0.5)  # the reference engine itself answers within milliseconds
            assert (await get(s, f"{worker.base}/jobs"))[1]["unused_engines"] == 0
            assert (await post(s, worker.base, wav))[0] == 503  # its one engine is still busy
            await until(lambda: _idle(s, worker.base), deadline=30)
            assert (await get(s, f"{worker.base}/v2/jobs/{body['id']}"))[1]["job"]["status"] == "done"

    asyncio.run(go())


def test_a_job_with_more_engines_holds_them_all_and_finishes_sooner(local_worker):
    """`--processing-factor 3`, 3 engines: a 2-engine job and a 1-engine job of the same 1 s audio posted together
    hold all three engines, and the 2-engine job (3 / 2 s) ends before the 1-engine job (3 s)."""
    worker = local_worker(engine="reference", parallel=3, extra_args=["--processing-factor", "3"])
    audio, _ = synthetic_call(1, seed=13)
    wav = encode_wav(audio, 16000, "pcm_s16le", 1)

    async def status(s, job_id):
        return (await get(s, f"{worker.base}/v2/jobs/{job_id}"))[1]["job"]["status"]

    async def go():
        async with aiohttp.ClientSession() as s:
            (one_status, one), (two_status, two) = await asyncio.gather(
                post(s, worker.base, wav), post(s, worker.base, wav, processing={"parallel_engines": 2}))
            assert (one_status, two_status) == (201, 201)
            assert (await get(s, f"{worker.base}/jobs"))[1]["unused_engines"] == 0
            await until(lambda: _done(s, worker.base, two["id"]), deadline=30)
            assert await status(s, one["id"]) == "running"  # the 1-engine job still has half its time to go
            await until(lambda: _idle(s, worker.base), deadline=30)

    asyncio.run(go())
