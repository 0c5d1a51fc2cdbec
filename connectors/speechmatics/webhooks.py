"""Receives the API's job notifications (webhook mode) and wakes the chunk waiting for that job.

The API calls `<url>?id=<job id>&status=success|error|...` with the `auth_headers` we put in each job's
notification_config. Our header carries a per-deployment secret (BWSM_WEBHOOK_SECRET); a callback without
it is refused with 401, so nobody can make us fetch on demand. Delivery is at-least-once and may be lost,
so a callback only shortens the wait: the chunk still confirms the status with a GET, and keeps polling
slowly as the fallback.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

from aiohttp import web

log = logging.getLogger(__name__)

#: The header our callbacks must carry; its value is the shared secret.
AUTH_HEADER = "X-BWSM-Webhook-Token"


def auth_header_line(secret: str) -> str:
    """The `auth_headers` entry to put in a job's notification_config."""
    return f"{AUTH_HEADER}: {secret}"


class WebhookReceiver:
    """An aiohttp server on the submit loop; `on_job(job_id, status)` runs on that loop."""

    def __init__(self, secret: str, on_job: Callable[[str, str], None], host: str = "0.0.0.0",  # noqa: S104
                 port: int = 8765, path: str = "/") -> None:
        self._secret = secret.encode()
        self._on_job = on_job
        self.host = host
        self.port = port
        self.path = path
        self.accepted = 0
        self.refused = 0
        self._runner: web.AppRunner | None = None

    def _authorised(self, request: web.Request) -> bool:
        given = request.headers.get(AUTH_HEADER, "").encode()
        return hmac.compare_digest(given, self._secret)

    async def _handle(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            self.refused += 1
            log.warning("webhook refused: missing or wrong %s header (from %s)", AUTH_HEADER, request.remote)
            return web.Response(status=401, text="unauthorised\n")
        job_id = request.query.get("id", "")
        status = request.query.get("status", "")
        if not job_id:
            return web.Response(status=400, text="missing id\n")
        await request.read()  # drain whatever contents were sent; the chunk fetches the transcript itself
        self.accepted += 1
        self._on_job(job_id, status)
        return web.Response(status=200, text="ok\n")

    async def start(self) -> int:
        """Start listening; return the bound port (useful with port 0)."""
        app = web.Application()
        app.router.add_route("POST", self.path, self._handle)
        app.router.add_route("PUT", self.path, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = site._server.sockets if site._server else []  # noqa: SLF001 - the only way to read port 0
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("webhook receiver listening on %s:%d%s", self.host, self.port, self.path)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
