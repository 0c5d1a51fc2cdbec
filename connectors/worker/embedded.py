"""The embedded default endpoint: with no SPEECHMATICS_API_KEY, the flow starts its own local worker.

No API key and no network must not stop anyone from running the pipeline, so when SPEECHMATICS_API_KEY is unset
(and BWSM_EMBEDDED_WORKER is not 0) each flow process starts the local Speechmatics-compatible worker (whisper
engine unless BWSM_WORKER_ENGINE says otherwise, BWSM_WORKER_PARALLEL engines, default 1) on a free loopback
port, protected by a random key, and points the SDK at it through the SDK's own variables. It stops with the
process. With a key set, nothing happens: the SDK goes to SPEECHMATICS_BATCH_URL or the SaaS API.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import threading
from collections.abc import MutableMapping

from bytewax.speechmatics.connectors.logs import fields

log = logging.getLogger(__name__)
_lock = threading.Lock()
_started: list = []


def ensure_endpoint(env: MutableMapping[str, str] | None = None) -> str | None:
    """Start the embedded worker if this process has no API key; return its URL (None when not needed)."""
    env = os.environ if env is None else env
    if env.get("SPEECHMATICS_API_KEY") or env.get("BWSM_EMBEDDED_WORKER", "1") in ("0", "false", "no"):
        return None
    from bytewax.speechmatics.connectors.worker.control import start_worker

    with _lock:
        if not _started:
            key = secrets.token_urlsafe(24)
            engine = env.get("BWSM_WORKER_ENGINE") or "whisper"
            parallel = int(env.get("BWSM_WORKER_PARALLEL") or 1)
            log.info("no SPEECHMATICS_API_KEY: starting the embedded local worker",
                     extra=fields(stage=engine, count=parallel))
            worker = start_worker(engine=engine, parallel=parallel, api_key=key, ready_timeout=600,
                                  die_with_parent=True)
            atexit.register(worker.stop)
            _started.append((worker, key))
        worker, key = _started[0]
    env["SPEECHMATICS_BATCH_URL"] = worker.url
    env["SPEECHMATICS_API_KEY"] = key
    return worker.url
