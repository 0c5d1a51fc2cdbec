"""With no API key, the flow's process starts the local worker and points the SDK's variables at it."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import pytest
from speechmatics.batch import AsyncClient

from bytewax.speechmatics.connectors.worker.embedded import ensure_endpoint


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


def test_the_embedded_worker_dies_with_a_killed_flow_process() -> None:
    """A flow killed with SIGKILL (no atexit) must not leave its worker running."""
    import os
    import signal
    import subprocess
    import sys
    import time

    code = ("from bytewax.speechmatics.connectors.worker.control import start_worker\n"
            "w = start_worker(engine='reference', parallel=1, die_with_parent=True)\n"
            "print(w.pid, flush=True)\n"
            "import time; time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    worker_pid = int(parent.stdout.readline())
    os.kill(worker_pid, 0)  # running
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(worker_pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(worker_pid, signal.SIGKILL)
    pytest.fail("the worker outlived its killed parent")


def test_a_key_that_starts_with_a_dash_still_starts_the_worker() -> None:
    """Random keys (token_urlsafe) may begin with "-": the worker's command line must not read it as a flag."""
    from bytewax.speechmatics.connectors.worker.control import start_worker

    worker = start_worker(engine="reference", parallel=1, api_key="-Zx9-dash-first")
    try:
        assert status(f"{worker.url}/jobs?limit=1", "-Zx9-dash-first") == 200
        assert status(f"{worker.url}/jobs?limit=1", None) == 401
    finally:
        worker.stop()
