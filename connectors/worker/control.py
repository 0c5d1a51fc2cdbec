"""Start a local worker as a subprocess and drive its admin endpoints over plain HTTP (tests, demo, bench).

    with start_worker(engine="reference", parallel=2) as worker:
        worker.admin.register_call("call-1", audio, words)       # raw pcm_s16le/mulaw bytes + truth
        client = AsyncClient(api_key="any", url=worker.url)        # worker.url ends in /v2
        ...
        worker.admin.stats()["jobs_by_reference"]

The worker is asked for port 0 and reports the port it got, so parallel tests never collide. The child's
environment is the caller's `env` when given, else this process's own (inherited by subprocess, never read here).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bytewax.speechmatics.schemas.errors import BytewaxSpeechmaticsError

#: The first line the worker command prints once it listens: `BWSM_WORKER_LISTENING http://host:port`; how a
#: parent that asked for port 0 learns the port.
LISTENING_PREFIX = "BWSM_WORKER_LISTENING"


class WorkerStartError(BytewaxSpeechmaticsError, RuntimeError):
    """The worker process died or did not become ready in time; the message carries its last output."""


def _request(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
             timeout: float = 30.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - local worker URL
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _multipart(fields: Sequence[tuple[str, bytes, str]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = bytearray()
    for name, payload, ctype in fields:
        out += (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n"
            f"Content-Type: {ctype}\r\n\r\n"
        ).encode()
        out += payload + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


@dataclass
class WorkerAdmin:
    """The admin endpoints of one worker (no auth needed there)."""

    base: str

    def _json(self, method: str, path: str, doc: Any = None) -> Any:
        body = None if doc is None else json.dumps(doc).encode()
        status, payload = _request(method, self.base + path, body, {"Content-Type": "application/json"})
        if status >= 400:
            raise RuntimeError(f"{method} {path} -> HTTP {status}: {payload[:500].decode(errors='replace')}")
        return json.loads(payload)

    def register_call(
        self,
        call_id: str,
        audio: bytes,
        words: list[dict[str, Any]],
        *,
        sample_rate: int = 16000,
        encoding: str = "pcm_s16le",
        channels: int = 1,
        edge_rule: str = "midpoint",
    ) -> dict[str, Any]:
        """Register a call's ground truth: raw audio in a contract encoding (or encoding="wav") + words."""
        meta = {"call_id": call_id, "sample_rate": sample_rate, "encoding": encoding, "channels": channels,
                "words": words, "edge_rule": edge_rule}
        body, ctype = _multipart([("meta", json.dumps(meta).encode(), "application/json"),
                                  ("audio", audio, "application/octet-stream")])
        status, payload = _request("POST", self.base + "/admin/calls", body, {"Content-Type": ctype}, timeout=120)
        if status >= 400:
            raise RuntimeError(f"register_call {call_id!r} -> HTTP {status}: {payload[:500].decode(errors='replace')}")
        return json.loads(payload)

    def calls(self) -> list[dict[str, Any]]:
        return self._json("GET", "/admin/calls")["calls"]

    def set_faults(self, doc: dict[str, Any] | None = None, **keys: Any) -> dict[str, Any]:
        """Replace the fault document (see worker_faults); keyword arguments are merged into `doc`."""
        return self._json("PUT", "/admin/faults", {**(doc or {}), **keys})

    def clear_faults(self) -> dict[str, Any]:
        return self.set_faults({})

    def faults(self) -> dict[str, Any]:
        return self._json("GET", "/admin/faults")

    def stats(self) -> dict[str, Any]:
        return self._json("GET", "/admin/stats")

    def release(self) -> dict[str, Any]:
        """End the injected job_duration of every running job now."""
        return self._json("POST", "/admin/release", {})

    def reset(self) -> dict[str, Any]:
        return self._json("POST", "/admin/reset", {})

    def engines(self) -> dict[str, Any]:
        """GET /jobs: active jobs, max and unused engines."""
        return self._json("GET", "/jobs")

    def ready(self) -> tuple[int, dict[str, Any]]:
        status, payload = _request("GET", self.base + "/ready")
        return status, json.loads(payload)


@dataclass
class WorkerProcess:
    """A running worker subprocess; `url` is what SPEECHMATICS_BATCH_URL should be (it ends in /v2)."""

    process: subprocess.Popen
    base: str
    api_key: str | None
    output: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.base + "/v2"

    @property
    def admin(self) -> WorkerAdmin:
        return WorkerAdmin(self.base)

    @property
    def pid(self) -> int:
        return self.process.pid

    def job(self, job_id: str) -> dict[str, Any]:
        """GET /v2/jobs/{id} (with this worker's key): the job as the API describes it, its config as submitted."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        status, payload = _request("GET", f"{self.url}/jobs/{job_id}", headers=headers)
        if status >= 400:
            raise RuntimeError(f"GET /v2/jobs/{job_id} -> HTTP {status}: {payload[:500].decode(errors='replace')}")
        return json.loads(payload)["job"]

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (clean shutdown), SIGKILL after the timeout."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop_with_parent(parent: int) -> Callable[[], None]:
    """A pre-exec hook: Linux sends the child SIGTERM when its parent dies, even by SIGKILL (no orphans).

    Linux ties the signal to the *thread* that started the child, not the process: a caller that must keep the
    worker beyond a short-lived thread starts it from a long-lived one (see `embedded`). A parent that died
    before the hook ran is caught by comparing the parent pid.
    """

    def hook() -> None:
        if sys.platform.startswith("linux"):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
            if os.getppid() != parent:
                os._exit(1)  # the parent is already gone: never become an orphan

    return hook


def start_worker(
    *,
    engine: str = "reference",
    parallel: int = 2,
    api_key: str | None = None,
    faults: dict[str, Any] | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
    ready_timeout: float = 120.0,
    die_with_parent: bool = False,
) -> WorkerProcess:
    """Start `python -m ...cli.worker` on a free port and return once /ready answers 200.

    `env` is the child's whole environment (None: inherit this process's). `api_key` is always passed on the
    command line, so an inherited BWSM_WORKER_API_KEY cannot protect a worker whose caller asked for none.
    """
    cmd = [sys.executable, "-m", "bytewax.speechmatics.connectors.cli.worker", "--host", host, "--port", "0",
           "--engine", engine, "--parallel", str(parallel)]
    cmd += [f"--api-key={api_key or ''}"]  # one token even when the key starts with "-"; empty = no auth
    if faults:
        cmd += ["--faults", json.dumps(faults)]
    cmd += list(extra_args)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=None if env is None else dict(env),
                            preexec_fn=_stop_with_parent(os.getpid()) if die_with_parent else None)
    output: list[str] = []
    found = threading.Event()
    base: list[str] = []

    def pump() -> None:  # keep reading so the pipe never fills; remember the last lines for errors
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(LISTENING_PREFIX) and not base:
                base.append(line.split()[1])
                found.set()
            output.append(line.rstrip())
            del output[:-200]

    threading.Thread(target=pump, daemon=True, name=f"worker-{proc.pid}-output").start()
    worker = WorkerProcess(proc, "", api_key, output)
    deadline = time.monotonic() + ready_timeout
    try:
        while not found.wait(0.05):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise WorkerStartError("worker did not start listening:\n" + "\n".join(output[-40:]))
        worker.base = base[0]
        while True:
            try:
                status, _ = worker.admin.ready()
                if status == 200:
                    return worker
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise WorkerStartError("worker did not become ready:\n" + "\n".join(output[-40:]))
            time.sleep(0.05)
    except BaseException:
        worker.stop()
        raise
