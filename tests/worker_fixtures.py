"""Fixtures for the local Speechmatics-compatible worker (real subprocess, real HTTP).

`local_worker` is a factory: `local_worker(engine="reference", parallel=2, api_key=None, faults=None,
extra_args=(), env=None)` starts `python -m bytewax.speechmatics.connectors.worker_cli` on a free port,
waits for /ready (deadline 120 s) and returns a `WorkerProcess` with:
  .url    base for the SDK / SPEECHMATICS_BATCH_URL (ends in /v2)
  .base   http://host:port (health endpoints /jobs, /live, /ready)
  .admin  WorkerAdmin: register_call(call_id, audio, words, sample_rate=, encoding=, channels=, edge_rule=),
          set_faults(doc), clear_faults(), faults(), stats(), reset(), engines(), ready(), calls()
  .stop() (also done at teardown), .pid
`reference_worker` is one shared reference-engine worker (parallel 4) per session, reset before each test
that uses it: cheaper than a process per test when a test needs no special flags.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from bytewax.speechmatics.connectors.worker_control import WorkerProcess, start_worker


@pytest.fixture
def local_worker() -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(**kwargs) -> WorkerProcess:
        worker = start_worker(**kwargs)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def _shared_reference_worker() -> Iterator[WorkerProcess]:
    worker = start_worker(engine="reference", parallel=4)
    yield worker
    worker.stop()


@pytest.fixture
def reference_worker(_shared_reference_worker: WorkerProcess) -> WorkerProcess:
    _shared_reference_worker.admin.reset()
    return _shared_reference_worker
