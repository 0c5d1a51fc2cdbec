"""With no API key, the flow's process starts the local worker and points the SDK's variables at it."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import pytest
from speechmatics.batch import AsyncClient

from bytewax.speechmatics.connectors.embedded_worker import ensure_endpoint


def status(url: str, key: str | None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_no_key_starts_a_protected_local_worker() -> None:
    env = {"BWSM_WORKER_ENGINE": "reference"}
    url = ensure_endpoint(env)
    assert url is not None and env["SPEECHMATICS_BATCH_URL"] == url
    key = env["SPEECHMATICS_API_KEY"]
    assert status(f"{url}/jobs?limit=1", key) == 200
    assert status(f"{url}/jobs?limit=1", "wrong") == 401
    assert ensure_endpoint(env | {"SPEECHMATICS_API_KEY": ""}) == url  # one worker per process

    async def list_jobs() -> list:
        async with AsyncClient(api_key=key, url=url) as client:
            return await client.list_jobs(limit=5)

    assert asyncio.run(list_jobs()) == []


@pytest.mark.parametrize("env", [{"SPEECHMATICS_API_KEY": "k"}, {"BWSM_EMBEDDED_WORKER": "0"}])
def test_a_key_or_opting_out_leaves_the_endpoint_alone(env: dict) -> None:
    before = dict(env)
    assert ensure_endpoint(env) is None
    assert env == before
