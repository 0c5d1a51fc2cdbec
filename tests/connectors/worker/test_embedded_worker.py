"""The embedded local worker: an explicit endpoint for runs without an API key, never through os.environ."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from speechmatics.batch import AsyncClient
from worker_fixtures import synthetic_call

from bytewax.speechmatics.connectors.speechmatics.wav import encode_wav
from bytewax.speechmatics.connectors.worker import embedded
from bytewax.speechmatics.connectors.worker.control import WorkerAdmin, start_worker
from bytewax.speechmatics.connectors.worker.embedded import Endpoint, WorkerUnavailable, start_embedded_worker
from bytewax.speechmatics.schemas.errors import BytewaxSpeechmaticsError, SettingsError

FAST = {"polling_interval": 0.2, "min_polling_interval": 0.05, "timeout": 60}
EXPECTED_UNAVAILABLE = (
    "no SPEECHMATICS_API_KEY is set and the local worker is not installed: "
    "pip install 'bytewax-speechmatics[worker]', or set SPEECHMATICS_API_KEY "
    "(and SPEECHMATICS_BATCH_URL for an on-prem worker)"
)


def status(url: str, key: str | None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def answers(url: str) -> bool:
    """Whether anything still listens at the worker's URL."""
    try:
        status(f"{url}/jobs?limit=1", None)
    except OSError:
        return False
    return True


def until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {seconds:.0f} s: {what}")
        time.sleep(0.05)


def transcribe_a_chunk(endpoint: Endpoint, call_id: str) -> list[str]:
    """Register a call with the reference engine and transcribe 10 s of it through the real SDK."""
    audio, truth = synthetic_call(20, seed=11)
    WorkerAdmin(endpoint.url.removesuffix("/v2")).register_call(call_id, audio, truth)
    wav = encode_wav(audio[2 * 16000 * 5 : 2 * 16000 * 15], 16000, "pcm_s16le", 1)

    async def go():
        async with AsyncClient(api_key=endpoint.api_key, url=endpoint.url) as client:
            return await client.transcribe(io.BytesIO(wav), **FAST)

    return [r.alternatives[0].content for r in asyncio.run(go()).results if r.type == "word"]


def test_the_embedded_worker_is_a_protected_working_endpoint_and_the_environment_is_untouched() -> None:
    before = dict(os.environ)
    endpoint = start_embedded_worker("reference", 1)
    assert endpoint.url.startswith("http://127.0.0.1:") and endpoint.url.endswith("/v2")
    assert endpoint.api_key not in repr(endpoint)
    assert status(f"{endpoint.url}/jobs?limit=1", endpoint.api_key) == 200
    assert status(f"{endpoint.url}/jobs?limit=1", "wrong") == 401
    words = transcribe_a_chunk(endpoint, "embedded-call")
    assert words and all(w.startswith("word") for w in words)
    assert start_embedded_worker("reference", 1) == endpoint  # the same worker, not a second one
    assert dict(os.environ) == before


def test_concurrent_first_calls_share_one_worker() -> None:
    with ThreadPoolExecutor(6) as pool:
        endpoints = list(pool.map(lambda _: start_embedded_worker("reference", 3), range(6)))
    assert len(set(endpoints)) == 1
    assert endpoints[0] != start_embedded_worker("reference", 1)  # other arguments: another worker


def test_a_worker_started_from_a_short_lived_thread_outlives_the_thread() -> None:
    """Linux's parent-death signal follows the starting thread: a caller thread ending must not stop the worker."""
    box: list[Endpoint] = []
    caller = threading.Thread(target=lambda: box.append(start_embedded_worker("reference", 2)))
    caller.start()
    caller.join(120)
    assert box, "the worker did not start"
    assert transcribe_a_chunk(box[0], "after-thread")  # a whole job, after the caller's thread ended
    assert status(f"{box[0].url}/jobs?limit=1", box[0].api_key) == 200
    assert start_embedded_worker("reference", 2) == box[0]


def test_a_dead_worker_is_replaced() -> None:
    first = start_embedded_worker("reference", 4)
    running = embedded._running[(os.getpid(), "reference", 4)]  # noqa: SLF001 - to kill it from outside
    running.worker.process.kill()
    running.worker.process.wait(10)
    second = start_embedded_worker("reference", 4)
    assert second != first and status(f"{second.url}/jobs?limit=1", second.api_key) == 200


def test_without_faster_whisper_the_whisper_worker_is_unavailable_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: object):
        return None if name == "faster_whisper" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)

    def must_not_start(**_: object) -> None:
        raise AssertionError("a worker was started without its engine")

    monkeypatch.setattr(embedded, "start_worker", must_not_start)
    with pytest.raises(WorkerUnavailable) as caught:
        start_embedded_worker("whisper", 1)
    assert str(caught.value) == EXPECTED_UNAVAILABLE
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, BytewaxSpeechmaticsError) and isinstance(caught.value, RuntimeError)


@pytest.mark.parametrize(("engine", "parallel"), [("kaldi", 1), ("reference", 0), ("reference", "2")])
def test_bad_arguments_are_settings_errors(engine: str, parallel: int) -> None:
    with pytest.raises(SettingsError):
        start_embedded_worker(engine, parallel)


CHILD = """
import sys, threading
from concurrent.futures import ThreadPoolExecutor
from bytewax.speechmatics.connectors.worker.embedded import start_embedded_worker
with ThreadPoolExecutor(1) as pool:  # from a thread that ends before the process does
    endpoint = pool.submit(start_embedded_worker, "reference", 1).result()
print(endpoint.url, flush=True)
if sys.argv[1] == "wait":
    threading.Event().wait()
"""


def test_the_embedded_worker_stops_when_its_process_exits() -> None:
    child = subprocess.run([sys.executable, "-c", CHILD, "exit"], capture_output=True, text=True, timeout=120,
                           check=True)
    url = child.stdout.strip()
    assert url.endswith("/v2")
    until(lambda: not answers(url), 20, "the worker stops after its process exited")


def test_the_embedded_worker_dies_with_a_killed_process() -> None:
    """A flow killed with SIGKILL (no atexit) must not leave its worker running."""
    parent = subprocess.Popen([sys.executable, "-c", CHILD, "wait"], stdout=subprocess.PIPE, text=True)
    try:
        url = parent.stdout.readline().strip()
        assert url.endswith("/v2") and answers(url)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
    until(lambda: not answers(url), 20, "the worker dies with its killed parent")


def test_a_key_that_starts_with_a_dash_still_starts_the_worker() -> None:
    """Random keys (token_urlsafe) may begin with "-": the worker's command line must not read it as a flag."""
    worker = start_worker(engine="reference", parallel=1, api_key="-Zx9-dash-first")
    try:
        assert status(f"{worker.url}/jobs?limit=1", "-Zx9-dash-first") == 200
        assert status(f"{worker.url}/jobs?limit=1", None) == 401
    finally:
        worker.stop()


def test_the_child_environment_is_the_callers_and_no_key_means_no_auth() -> None:
    """An explicit env is the worker's whole environment; an inherited BWSM_WORKER_API_KEY cannot add auth."""
    worker = start_worker(engine="reference", parallel=1, env={**os.environ, "BWSM_WORKER_API_KEY": "inherited"})
    try:
        assert status(f"{worker.url}/jobs?limit=1", None) == 200
    finally:
        worker.stop()
