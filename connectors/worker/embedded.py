"""The local worker as the flow's own endpoint, for runs with no Speechmatics API key.

Nobody should need an API key or a network to try the pipeline, so a flow configured without a key starts the
local Speechmatics-compatible worker next to itself and talks to it as it would to the SaaS API:

    endpoint = start_embedded_worker(settings.worker.engine, settings.worker.parallel)
    client = AsyncClient(api_key=endpoint.api_key, url=endpoint.url)

The worker runs once per process and per (engine, parallel), on a free loopback port behind a random key, and
stops with the process (at exit, and through Linux's parent-death signal when the process is killed). The caller
decides when it is needed and passes the URL and key on explicitly: nothing here reads or writes the environment,
and importing this module starts nothing.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import threading
from dataclasses import dataclass, field

from bytewax.speechmatics.connectors.worker.control import WorkerProcess, start_worker
from bytewax.speechmatics.connectors.worker.engines.whisper import faster_whisper_installed
from bytewax.speechmatics.schemas.errors import BytewaxSpeechmaticsError, SettingsError

__all__ = ["ENGINES", "NOT_INSTALLED", "Endpoint", "WorkerUnavailable", "start_embedded_worker"]

log = logging.getLogger(__name__)

ENGINES = ("whisper", "reference")
#: The one line a user without a key and without the `[worker]` extra sees: both ways out, nothing else.
NOT_INSTALLED = (
    "no SPEECHMATICS_API_KEY is set and the local worker is not installed: "
    "pip install 'bytewax-speechmatics[worker]', or set SPEECHMATICS_API_KEY "
    "(and SPEECHMATICS_BATCH_URL for an on-prem worker)"
)


class WorkerUnavailable(BytewaxSpeechmaticsError, RuntimeError):
    """The embedded worker cannot run in this installation (its engine's package is missing)."""


@dataclass(frozen=True)
class Endpoint:
    """Where to send batch jobs: `url` ends in /v2 (the SDK's `url`); the key stays out of reprs and logs."""

    url: str
    api_key: str = field(repr=False)


@dataclass
class _Embedded:
    worker: WorkerProcess
    endpoint: Endpoint
    #: Set to let the thread that started the worker end (it must outlive every caller, see `_start_kept`).
    release: threading.Event


_lock = threading.Lock()
#: (pid, engine, parallel) -> the running worker; the pid keeps a forked child from reusing its parent's.
_running: dict[tuple[int, str, int], _Embedded] = {}
#: Every worker this module started, in any thread, so that exit stops them all (a caller interrupted while
#: waiting for /ready included).
_started: list[tuple[int, WorkerProcess]] = []
_started_lock = threading.Lock()
_exit_hook: list[bool] = []


def start_embedded_worker(engine: str = "whisper", parallel: int = 1, *, ready_timeout: float = 600.0) -> Endpoint:
    """The endpoint of this process's local worker for `engine` and `parallel`, started on the first call.

    Thread-safe: concurrent and later calls with the same arguments get the same worker (a worker that died
    is replaced). Raises WorkerUnavailable at once when the whisper engine's package is not installed,
    SettingsError for an unknown engine or parallel < 1, and WorkerStartError when the worker does not become
    ready within `ready_timeout` seconds (the first whisper start assembles the model, hence the long default).
    """
    if engine not in ENGINES:
        raise SettingsError(f"the local worker's engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise SettingsError(f"the local worker's parallel must be an integer >= 1, got {parallel!r}")
    if engine == "whisper" and not faster_whisper_installed():
        raise WorkerUnavailable(NOT_INSTALLED)
    key = (os.getpid(), engine, parallel)
    with _lock:
        current = _running.get(key)
        if current is not None and current.worker.process.poll() is None:
            return current.endpoint
        if current is not None:
            log.warning("embedded local worker exited (code %s); starting a new one engine=%s parallel=%d",
                        current.worker.process.returncode, engine, parallel)
            current.release.set()
            del _running[key]
        _register_exit_hook()
        api_key = secrets.token_urlsafe(24)
        log.info("starting the embedded local worker engine=%s parallel=%d", engine, parallel)
        worker, release = _start_kept(engine, parallel, api_key, ready_timeout)
        embedded = _Embedded(worker, Endpoint(worker.url, api_key), release)
        _running[key] = embedded
        log.info("embedded local worker ready url=%s pid=%d", worker.url, worker.pid)
        return embedded.endpoint


def _start_kept(
    engine: str, parallel: int, api_key: str, ready_timeout: float
) -> tuple[WorkerProcess, threading.Event]:
    """Start the worker from a daemon thread that lives until the process ends (or the worker is replaced).

    The worker must die with this process, even one killed by SIGKILL, which Linux's parent-death signal does;
    but that signal fires when the *thread* that started the child ends. A caller may be a short-lived thread
    (an executor's, a Bytewax worker's), so the child is started from a thread that outlives every caller.
    """
    done = threading.Event()
    release = threading.Event()
    outcome: dict[str, object] = {}

    def keep() -> None:
        try:
            worker = start_worker(engine=engine, parallel=parallel, api_key=api_key, ready_timeout=ready_timeout,
                                  die_with_parent=True)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, who re-raises it
            outcome["error"] = exc
            done.set()
            return
        with _started_lock:
            _started.append((os.getpid(), worker))
        outcome["worker"] = worker
        done.set()
        release.wait()

    threading.Thread(target=keep, name=f"bwsm-embedded-worker-{engine}-{parallel}", daemon=True).start()
    done.wait()
    error = outcome.get("error")
    if isinstance(error, BaseException):
        raise error
    worker = outcome["worker"]
    assert isinstance(worker, WorkerProcess)
    return worker, release


def _register_exit_hook() -> None:
    """Register the exit hook on first use (importing the module must not touch interpreter state)."""
    if not _exit_hook:
        atexit.register(_stop_all)
        _exit_hook.append(True)


def _stop_all() -> None:
    """At exit: stop every worker this process started (SIGTERM, then SIGKILL after the stop timeout)."""
    with _started_lock:
        mine = [worker for pid, worker in _started if pid == os.getpid()]
        _started.clear()
    for worker in mine:
        worker.stop()
    _running.clear()
