"""The flow process's admin endpoint: health probes, the status board and the metrics, on BWSM_ADMIN_PORT.

    GET /live    200 while the process runs its dataflow
    GET /ready   200 when ready (connectors/health.py says what that means), else 503; both with a JSON body
    GET /status  the calls this process holds (connectors/status.py): ids and counts only
    GET /metrics the process's Prometheus metrics (the same registry Bytewax serves on its dataflow API)

Why a port of its own: Bytewax's dataflow API (:3030) is served from Rust and takes no extra routes. A
ThreadingHTTPServer on a daemon thread: the probes answer from the last health round, so a request never waits.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bytewax.speechmatics.connectors.health import HEALTH, Health
from bytewax.speechmatics.connectors.status import BOARD, CallBoard


def _handler(health: Health, board: CallBoard, process: dict) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
                return
            if path == "/live":
                ok, body = health.live()
            elif path == "/ready":
                ok, body = health.ready()
            elif path == "/status":
                ok, body = True, {**process, **board.view(time.time())}
            else:
                self._send(404, b'{"error": "not found: /live, /ready, /status, /metrics"}\n', "application/json")
                return
            self._send(200 if ok else 503, json.dumps(body).encode() + b"\n", "application/json")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - probes every few seconds: no log
            return

    return Handler


def serve(port: int, host: str = "0.0.0.0", process: dict | None = None, health: Health = HEALTH,  # noqa: S104
          board: CallBoard = BOARD) -> ThreadingHTTPServer:
    """Start the admin endpoint on a daemon thread; returns the server (its `server_address` has the real port).

    Args:
        port: TCP port (0: any free port).
        host: Address to bind.
        process: Fields added to /status (the process id in its cluster).
    """
    server = ThreadingHTTPServer((host, port), _handler(health, board, dict(process or {})))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="bwsm-admin", daemon=True).start()
    return server
