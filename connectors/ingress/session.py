"""What every telephony websocket session shares: the read loop, the start deadline, closing with a reason, and
turning the session into one call through the producer API.

A session reads one message at a time and awaits the producer before it reads the next, so a slow broker stops the
reads (aiohttp then stops reading the socket, and TCP pushes back on the platform) instead of queueing audio.
Bad input closes the one session with a reason (counted per reason), never the server. How a session ends decides
how its call ends: the protocol's own end (`stop`, `close`) or a close by the ingress sends the end frame; a socket
that just goes away sends what it has but no end frame, and the flow ends the call after its idle timeout
(BWSM_IDLE_TIMEOUT_SECONDS), as it does for any producer that vanishes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from bytewax.speechmatics.connectors.kafka.producer import AsyncCall, AsyncCallPublisher, DeliveryError
from bytewax.speechmatics.connectors.metrics import (
    INGRESS_ENDED,
    INGRESS_MESSAGES,
    INGRESS_REFUSED_SETTINGS,
    INGRESS_SESSIONS,
)
from bytewax.speechmatics.schemas.errors import ContractError

log = logging.getLogger(__name__)

#: Reasons that mean the platform ended the session properly.
COMPLETED = "completed"
DROPPED = "dropped"


_COUNTERS: dict[tuple[str, str], Any] = {}
#: Messages a session counts before it adds them to `bwsm_ingress_messages_total` (1 s of one Twilio stream).
COUNT_EVERY = 100


class SessionRefused(Exception):
    """Input this session cannot go on with: `reason` is a short slug (a metric label), `detail` says what/where."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SessionSettings:
    """What the ingress's sessions share (the command line fills it)."""

    publisher: AsyncCallPublisher
    #: Seconds a session may take to send its start (Twilio `start`, AudioHook `open`).
    start_timeout: float = 10.0
    #: Channel labels of a two-party call: the customer's side, then the agent's.
    channel_labels: tuple[str, str] = ("caller", "agent")
    #: How far (seconds) one track may run ahead of another before the other's gap is filled with silence; packets
    #: arriving out of order are reordered within it.
    reorder_window: float = 1.0
    #: The longest jump in timestamps (or discarded audio) filled with silence; longer refuses the session.
    max_gap: float = 60.0


class Session(ABC):
    """One websocket session of one protocol; subclasses read its messages."""

    protocol = "?"
    #: Message types counted by name; anything else is counted as "other" (a bounded label set).
    known_types: frozenset[str] = frozenset()

    def __init__(self, settings: SessionSettings, ws: web.WebSocketResponse, remote: str,
                 upgrade_headers: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.ws = ws
        self.remote = remote
        #: The websocket upgrade request's headers (what the connection was authorised with).
        self.upgrade_headers: Mapping[str, str] = upgrade_headers or {}
        self.call: AsyncCall | None = None
        self.session_id = "-"
        self._counts: dict[str, int] = {}
        self._uncounted = 0

    @property
    def started(self) -> bool:
        return self.call is not None

    @abstractmethod
    async def on_text(self, doc: dict[str, Any]) -> bool:
        """Handle one JSON message; True when it ended the session properly."""

    async def on_binary(self, data: bytes) -> bool:
        raise SessionRefused("binary_message", f"{self.protocol} sends JSON text messages only")

    @abstractmethod
    async def refuse(self, refused: SessionRefused) -> None:
        """Tell the platform why the session ends, the protocol's way, and close the socket."""

    async def flush(self) -> None:  # noqa: B027 - most protocols hold nothing back
        """Hand over audio still held for ordering (the session is over)."""

    def count(self, kind: str) -> None:
        """Count one message by type: kept in the session and added to the metric every COUNT_EVERY messages and
        at the end (a Prometheus counter takes a lock per increment; 100 messages a second per stream add up)."""
        self._counts[kind] = self._counts.get(kind, 0) + 1
        self._uncounted += 1
        if self._uncounted >= COUNT_EVERY:
            self.flush_counts()

    def flush_counts(self) -> None:
        for kind, n in self._counts.items():
            counter = _COUNTERS.get((self.protocol, kind))
            if counter is None:  # labels() takes a lock and builds a key: once per (protocol, type)
                counter = INGRESS_MESSAGES.labels(self.protocol, kind if kind in self.known_types else "other")
                if kind in self.known_types:
                    _COUNTERS[(self.protocol, kind)] = counter
            counter.inc(n)
        self._counts.clear()
        self._uncounted = 0

    async def start_call(self, call_id: str, config: Any, metadata: Mapping[str, Any] | None,
                         channels: int, base_config: Mapping[str, Any] | None = None) -> AsyncCall:
        """Start the call with the platform's config (a JSON object) over `base_config`, and its metadata. Settings
        that break the start-message contract are logged (field only) and counted, and the call starts without them:
        audio is never lost because of control-plane errors."""
        publisher = self.settings.publisher
        first = 0
        if config is not None and not isinstance(config, Mapping):
            INGRESS_REFUSED_SETTINGS.labels(self.protocol).inc()
            log.warning("%s session %s call %r: the call's config is not a JSON object; starting without it",
                        self.protocol, self.session_id, call_id[:120])
            config, first = None, 1
        merged = {**(base_config or {}), **(config or {})} or None
        attempts = [(merged, metadata), (base_config or None, metadata), (base_config or None, None)]
        for i, (conf, meta) in enumerate(attempts[first:], first):
            try:
                call = await publisher.start(call_id, config=conf, metadata=meta, sample_rate=8000,
                                             encoding="mulaw", channels=channels)
            except ContractError as exc:
                if i == 0:
                    INGRESS_REFUSED_SETTINGS.labels(self.protocol).inc()
                log.warning("%s session %s call %r: call settings refused (%s); starting without them",
                            self.protocol, self.session_id, call_id[:120], exc.what)
                continue
            self.call = call
            return call
        raise SessionRefused("bad_start", "the call could not be started")  # pragma: no cover - defaults always pass

    async def run(self) -> str:
        """Read the session to its end; the reason it ended (a metric label)."""
        INGRESS_SESSIONS.labels(self.protocol).inc()
        began = time.monotonic()
        reason = DROPPED
        try:
            reason = await self._read()
        except SessionRefused as refused:
            reason = refused.reason
            log.warning("%s session %s from %s closed: %s", self.protocol, self.session_id, self.remote, refused)
            await self._end_call(True)
            await self._quietly(self.refuse(refused))
        except DeliveryError as exc:
            reason = "kafka_refused"
            log.error("%s session %s: %s", self.protocol, self.session_id, exc)
            await self._quietly(self.refuse(SessionRefused(reason, "Kafka refused the call's audio")))
        except asyncio.CancelledError:
            reason = "shutdown"
            await self._end_call(False)
            raise
        else:
            await self._end_call(reason == COMPLETED)
        finally:
            self.flush_counts()
            INGRESS_SESSIONS.labels(self.protocol).dec()
            INGRESS_ENDED.labels(self.protocol, reason).inc()
            log.info("%s session %s ended (%s) after %.1f s, call %r, %d frames", self.protocol, self.session_id,
                     reason, time.monotonic() - began, self.call.call_id[:120] if self.call else None,
                     self.call.seq if self.call else 0)
        return reason

    async def _read(self) -> str:
        deadline = time.monotonic() + self.settings.start_timeout
        while True:
            timeout = None if self.started else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                raise SessionRefused("start_timeout", f"no start within {self.settings.start_timeout:g} s")
            try:
                msg = await self.ws.receive(timeout=timeout)
            except asyncio.TimeoutError:
                continue  # the deadline check above refuses the session
            if msg.type == WSMsgType.TEXT:
                try:
                    doc = orjson.loads(msg.data)
                except orjson.JSONDecodeError as exc:
                    raise SessionRefused("bad_json", f"a text message is not JSON ({exc})") from None
                if not isinstance(doc, dict):
                    raise SessionRefused("bad_json", "a text message is not a JSON object")
                done = await self.on_text(doc)
            elif msg.type == WSMsgType.BINARY:
                done = await self.on_binary(msg.data)
            elif msg.type == WSMsgType.ERROR and self.ws.exception() is not None and not self.ws.closed:
                raise SessionRefused("bad_frame", str(self.ws.exception())[:80])
            else:  # closed by the other side, or the socket went away
                return DROPPED
            if done:
                return COMPLETED

    async def _end_call(self, end: bool) -> None:
        if self.call is None or self.call.ended:
            return
        try:
            await self.flush()
            if end:
                await self.call.end()
            else:
                await self.call.abandon()
        except (DeliveryError, TimeoutError) as exc:
            log.error("%s session %s: the call's last audio was not acknowledged: %s", self.protocol,
                      self.session_id, exc)

    @staticmethod
    async def _quietly(coro: Any) -> None:
        try:
            await coro
        except (ConnectionError, RuntimeError) as exc:  # the socket is gone already
            log.debug("closing a session: %s", exc)
