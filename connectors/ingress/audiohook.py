"""`/audiohook`: Genesys Cloud AudioHook protocol v2 (a server that listens; it never sends audio or events back).

Every JSON message carries `version: "2"`, `id` (the session), `type`, `seq` and `parameters`; the client's also
`serverseq` (the last server seq it saw) and `position` (ISO 8601 duration of audio sent so far, `PT1.5S`); the
server's also `clientseq` (the last client seq it read). The client's seq must go up by one per message, and its
serverseq may not exceed the server's seq: anything else is a protocol error.

Client -> server: `open{organizationId, conversationId, participant, media[], language?, customConfig?}`, binary
audio (while active), `ping`, `paused`, `resumed{start, discarded}`, `discarded{start, discarded}`, `update`,
`error{code, message}`, `close{reason}`. Server -> client: `opened{media[one], startPaused}`, `pong`, `updated`,
`closed`, and `disconnect{reason, info}` (the protocol's way for a server to end a session; reason `error` for bad
input, after which the client sends `close` and the server answers `closed`).

What becomes of it: media negotiation takes PCMU at 8 kHz, both channels (`external` = the customer = caller,
`internal` = the agent) when offered, as one 2-channel call labelled for channel diarization; the call id is
`customConfig.call_id` or else the session id (one conversation may open several sessions); the metadata is the
conversation, organization, participant and language, plus `customConfig` (its `config` object is the per-call
config). Audio paused or discarded by the client becomes silence of the length the client reports (up to max_gap),
so transcript times stay call times.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
from aiohttp import WSMsgType

from bytewax.speechmatics.connectors.ingress.session import Session, SessionRefused
from bytewax.speechmatics.connectors.ingress.tracks import MULAW_SILENCE

RATE = 8000
CLIENT_TYPES = frozenset(("open", "close", "discarded", "error", "paused", "ping", "resumed", "update"))
_DURATION = re.compile(r"PT([0-9]+(?:\.[0-9]+)?)S")
#: Seconds the server waits for the client's `close` after a `disconnect`, before it closes the socket itself.
CLOSE_GRACE = 2.0


def seconds(value: Any, what: str) -> float:
    """An ISO 8601 duration in seconds as AudioHook writes them (`PT12.34S`)."""
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise SessionRefused("bad_message", f"{what} is not a duration like PT1.5S")
    return float(match.group(1))


def duration(value: float) -> str:
    return f"PT{value:.3f}S".replace(".000S", "S")


class AudioHookSession(Session):
    protocol = "audiohook"
    known_types = CLIENT_TYPES | {"audio"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seq = 0  # the last server message's seq
        self.clientseq = 0  # the last client message's seq
        self.state = "preparing"  # -> active <-> paused -> closed
        self.channels = 0
        self.samples = 0  # audio received, per channel (the server's idea of `position`)

    # -- messages to the client --
    async def send(self, kind: str, parameters: dict[str, Any]) -> None:
        self.seq += 1
        await self.ws.send_str(orjson.dumps({"version": "2", "type": kind, "id": self.session_id, "seq": self.seq,
                                             "clientseq": self.clientseq, "parameters": parameters}).decode())

    # -- messages from the client --
    async def on_text(self, doc: dict[str, Any]) -> bool:
        kind = doc.get("type")
        if not isinstance(kind, str) or kind not in CLIENT_TYPES:
            raise SessionRefused("unknown_event", f"type {str(kind)[:40]!r} is not an AudioHook client message")
        self.count(kind)
        self._check_envelope(doc)
        params = doc["parameters"]
        if kind == "open":
            await self._open(params, doc["id"])
        elif not self.started:
            raise SessionRefused("media_before_start", f"{kind} before open")
        elif kind == "close":
            await self._end_call(True)
            await self.send("closed", {})
            self.state = "closed"
            return True
        elif kind == "ping":
            await self.send("pong", {})
        elif kind == "paused":
            self.state = "paused"
        elif kind in ("resumed", "discarded"):
            if kind == "resumed":
                self.state = "active"
            await self._silence(seconds(params.get("discarded", "PT0S"), f"{kind}.discarded"))
        elif kind == "update":
            await self.send("updated", {})
        # error: the client reports a problem of its own; counted above, nothing to do
        return False

    def _check_envelope(self, doc: dict[str, Any]) -> None:
        seq, serverseq = doc.get("seq"), doc.get("serverseq")
        if doc.get("version") != "2" or not isinstance(doc.get("parameters"), dict) or not isinstance(
                doc.get("id"), str) or not isinstance(seq, int) or not isinstance(serverseq, int):
            raise SessionRefused("bad_message", "not an AudioHook v2 client message (version, id, seq, serverseq, "
                                 "parameters)")
        seconds(doc.get("position"), "position")
        if seq != self.clientseq + 1:
            raise SessionRefused("bad_seq", f"seq {seq} after {self.clientseq} (must go up by one)")
        if serverseq > self.seq:
            raise SessionRefused("bad_seq", f"serverseq {serverseq} is beyond the server's seq {self.seq}")
        if self.started and doc["id"] != self.session_id:
            raise SessionRefused("bad_message", "the session id changed")
        self.clientseq = seq

    async def _open(self, params: dict[str, Any], session_id: str) -> None:
        if self.started:
            raise SessionRefused("repeated_start", "a second open in one session")
        if len(session_id) > 64:
            raise SessionRefused("bad_message", "the session id is longer than 64 characters")
        self.session_id = session_id
        signed = self.upgrade_headers.get("audiohook-organization-id")
        if signed is not None and params.get("organizationId") != signed:
            raise SessionRefused("bad_message", "organizationId is not the audiohook-organization-id the connection "
                                 "was opened with")
        offered = params.get("media")
        chosen = None
        for media in offered if isinstance(offered, list) else ():
            if not isinstance(media, dict) or media.get("type", "audio") != "audio":
                continue
            channels = media.get("channels")
            if (media.get("format") == "PCMU" and media.get("rate") == RATE and isinstance(channels, list)
                    and channels and set(channels) <= {"external", "internal"} and len(set(channels)) == len(channels)
                    and (chosen is None or len(channels) > len(chosen["channels"]))):
                chosen = media
        if chosen is None:
            raise SessionRefused("no_media", "no PCMU 8000 Hz media (channels external/internal) offered")
        labels = dict(zip(("external", "internal"), self.settings.channel_labels, strict=True))
        self.channels = len(chosen["channels"])
        custom = params.get("customConfig") if isinstance(params.get("customConfig"), dict) else {}
        call_id = custom.get("call_id") if isinstance(custom.get("call_id"), str) and custom["call_id"] else None
        metadata = {k: params[k] for k in ("conversationId", "organizationId", "participant", "language")
                    if k in params}
        metadata.update({k: v for k, v in custom.items() if k not in ("config", "call_id")})
        base = None
        if self.channels == 2:
            base = {"diarization": "channel", "channel_labels": [labels[c] for c in chosen["channels"]]}
        await self.start_call(call_id or self.session_id, custom.get("config"), metadata or None, self.channels,
                              base)
        await self.send("opened", {"media": [chosen], "startPaused": False})
        self.state = "active"

    async def on_binary(self, data: bytes) -> bool:
        self.count("audio")
        if self.state == "preparing":
            raise SessionRefused("media_before_start", "audio before open")
        if self.state != "active":
            raise SessionRefused("bad_audio", f"audio while {self.state}")
        if len(data) % self.channels:
            raise SessionRefused("bad_audio", f"{len(data)} bytes is not a whole number of {self.channels}-channel "
                                 "samples")
        self.samples += len(data) // self.channels
        assert self.call is not None
        await self.call.send(data)
        return False

    async def _silence(self, gap: float) -> None:
        """Audio the client did not send (paused, discarded) as silence, so later words keep their call times."""
        if gap > self.settings.max_gap:
            raise SessionRefused("timestamp_jump", f"{gap:g} s of audio discarded, more than {self.settings.max_gap:g}")
        samples = int(gap * RATE)
        if samples and self.call is not None:
            self.samples += samples
            await self.call.send(bytes([MULAW_SILENCE]) * (samples * self.channels))

    async def refuse(self, refused: SessionRefused) -> None:
        """disconnect(reason error) - the protocol's error signal - then wait briefly for the client's close,
        answer closed, and close the socket."""
        if self.state != "closed" and not self.ws.closed:
            await self.send("disconnect", {"reason": "error", "info": f"{refused.reason}: {refused.detail}"[:200]})
            try:
                msg = await asyncio.wait_for(self.ws.receive(), CLOSE_GRACE)
                if msg.type == WSMsgType.TEXT and orjson.loads(msg.data).get("type") == "close":
                    await self.send("closed", {})
            except (asyncio.TimeoutError, orjson.JSONDecodeError, AttributeError):
                pass
        await self.ws.close(code=1000, message=refused.reason.encode()[:120])
