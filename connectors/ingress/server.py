"""The ingress server: telephony websockets in, calls on `calls.audio` out, one aiohttp app on one port.

Routes: `/twilio` (Media Streams), `/audiohook` (Genesys AudioHook v2), `/health` (JSON: ok, sessions open, bytes
in flight), `/metrics` (Prometheus text). All sessions share one AsyncCallPublisher, so the cap on bytes in flight is
per process: a slow broker makes every session's reads wait, and memory stays flat.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from bytewax.speechmatics.connectors.ingress.audiohook import AudioHookSession
from bytewax.speechmatics.connectors.ingress.auth import AuthSettings, refusal
from bytewax.speechmatics.connectors.ingress.session import Session, SessionSettings
from bytewax.speechmatics.connectors.ingress.twilio import TwilioSession
from bytewax.speechmatics.connectors.metrics import INGRESS_REFUSED

log = logging.getLogger(__name__)

PROTOCOLS: dict[str, type[Session]] = {"twilio": TwilioSession, "audiohook": AudioHookSession}
#: The largest websocket message read (a Twilio media message is ~300 bytes, an AudioHook audio frame a few KB).
MAX_MESSAGE_BYTES = 1 << 20


@dataclass
class Ingress:
    """The app's state: settings, and the sessions running (so shutdown can end their calls)."""

    sessions: SessionSettings
    auth: AuthSettings = field(default_factory=AuthSettings)
    running: set[asyncio.Task] = field(default_factory=set)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        for protocol in PROTOCOLS:
            app.router.add_get(f"/{protocol}", self.websocket(protocol))
        app.on_shutdown.append(self._shutdown)
        return app

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "sessions": len(self.running),
                                  "in_flight_bytes": self.sessions.publisher.in_flight_bytes})

    async def metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def websocket(self, protocol: str):  # noqa: ANN201 - an aiohttp handler
        async def handle(request: web.Request) -> web.StreamResponse:
            remote = request.remote or "?"
            reason = refusal(protocol, request, self.auth)
            if reason is None and not web.WebSocketResponse().can_prepare(request).ok:
                reason = "not a websocket upgrade"
            if reason is not None:
                INGRESS_REFUSED.labels(protocol, reason).inc()
                log.warning("refused %s upgrade from %s: %s", protocol, remote, reason)
                raise web.HTTPUnauthorized(text=reason) if "upgrade" not in reason else web.HTTPBadRequest(
                    text=reason)
            ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, heartbeat=30.0)
            await ws.prepare(request)
            task = asyncio.current_task()
            assert task is not None
            self.running.add(task)
            try:
                await PROTOCOLS[protocol](self.sessions, ws, remote, request.headers).run()
            finally:
                self.running.discard(task)
                if not ws.closed:
                    await ws.close()
            return ws

        return handle

    async def _shutdown(self, _app: web.Application) -> None:
        """Cancel the sessions (their calls get what audio they have, no end frame), then flush the producer."""
        for task in list(self.running):
            task.cancel()
        await asyncio.gather(*self.running, return_exceptions=True)
        left = await self.sessions.publisher.close()
        if left:
            log.error("%d message(s) were not acknowledged by Kafka at shutdown", left)
