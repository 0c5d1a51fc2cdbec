"""Recorded sessions: build them from audio in the documented message formats, save them as JSONL, play them back
against an ingress at real time or faster (`bytewax-speechmatics ingress replay FILE.jsonl --url ...`).

A session file has one JSON object per line: `{"t": seconds since the session began, "text": "..."}` for a text
message, `{"t": ..., "binary": "<base64>"}` for a binary one. Playing an AudioHook session waits for the server's
`opened` after `open` (the protocol forbids audio before it) and for `closed` after `close`.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson

from bytewax.speechmatics.connectors.ingress.audiohook import duration

Line = dict[str, Any]
PACKET = 160  # 20 ms of 8 kHz mu-law


def text_line(t: float, doc: Mapping[str, Any]) -> Line:
    return {"t": round(t, 3), "text": orjson.dumps(doc).decode()}


def twilio_session(call_sid: str, caller: bytes, agent: bytes | None = None, *,
                   custom: Mapping[str, str] | None = None, swap_every: int = 0) -> list[Line]:
    """A Media Streams session of a call: `caller` (inbound) and `agent` (outbound) as 8 kHz mu-law; with
    `swap_every` = n, every n-th pair of media messages arrives in the wrong order (as Telnyx warns it may)."""
    stream = "MZ" + uuid.uuid5(uuid.NAMESPACE_URL, call_sid).hex
    tracks = {"inbound": caller} if agent is None else {"inbound": caller, "outbound": agent}
    lines = [text_line(0, {"event": "connected", "protocol": "Call", "version": "1.0.0"}),
             text_line(0, {"event": "start", "sequenceNumber": "1", "streamSid": stream, "start": {
                 "accountSid": "AC" + "0" * 32, "streamSid": stream, "callSid": call_sid, "tracks": list(tracks),
                 "customParameters": dict(custom or {}),
                 "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})]
    seq = 1
    media: list[Line] = []
    packets = max(-(-len(a) // PACKET) for a in tracks.values())
    for chunk in range(packets):
        for track, audio in tracks.items():
            payload = audio[chunk * PACKET:(chunk + 1) * PACKET]
            if not payload:
                continue
            seq += 1
            media.append(text_line(chunk * 0.02, {"event": "media", "sequenceNumber": str(seq), "streamSid": stream,
                                                  "media": {"track": track, "chunk": str(chunk + 1),
                                                            "timestamp": str(chunk * 20),
                                                            "payload": base64.b64encode(payload).decode()}}))
    if swap_every:
        for i in range(0, len(media) - 1, swap_every):
            media[i], media[i + 1] = media[i + 1], media[i]
    end = packets * 0.02
    return [*lines, *media, text_line(end, {"event": "stop", "sequenceNumber": str(seq + 1), "streamSid": stream,
                                            "stop": {"accountSid": "AC" + "0" * 32, "callSid": call_sid}})]


@dataclass
class _AudioHookWriter:
    session: str
    seq: int = 0
    serverseq: int = 0
    samples: int = 0
    lines: list[Line] = field(default_factory=list)

    def message(self, t: float, kind: str, parameters: Mapping[str, Any], replies: int = 0) -> None:
        self.seq += 1
        self.lines.append(text_line(t, {"version": "2", "id": self.session, "type": kind, "seq": self.seq,
                                        "serverseq": self.serverseq, "position": duration(self.samples / 8000),
                                        "parameters": dict(parameters)}))
        self.serverseq += replies  # the server's answers this message causes (opened, pong, updated, closed)


def audiohook_session(session_id: str, external: bytes, internal: bytes, *, conversation_id: str | None = None,
                      custom: Mapping[str, Any] | None = None, frame_ms: int = 200, ping_every: int = 10,
                      pause: tuple[int, float] | None = None) -> list[Line]:
    """An AudioHook v2 session: open offering PCMU stereo (external, internal), binary frames of `frame_ms`, a ping
    every `ping_every` frames, close; `pause` = (frame index, seconds): `paused` before that frame, then `resumed`
    reporting that many seconds discarded (the audio of the pause is not in the session)."""
    w = _AudioHookWriter(session_id)
    w.message(0, "open", {"organizationId": str(uuid.UUID(int=1)), "conversationId": conversation_id or str(
        uuid.UUID(int=2)), "participant": {"id": str(uuid.UUID(int=3)), "ani": "+15550100", "aniName": "Caller",
                                           "dnis": "+15550199"},
        "media": [{"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000},
                  {"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000}],
        "language": "en-US", "customConfig": dict(custom or {})}, replies=1)
    n = len(external)
    stereo = np.empty((n, 2), dtype=np.uint8)
    stereo[:, 0] = np.frombuffer(external, np.uint8)
    stereo[:, 1] = np.frombuffer(internal[:n].ljust(n, b"\xff"), np.uint8)
    step = 8 * frame_ms
    for i, at in enumerate(range(0, n, step)):
        if pause is not None and i == pause[0]:
            w.message(at / 8000, "paused", {})
            w.samples += int(pause[1] * 8000)
            w.message(at / 8000, "resumed", {"start": duration(at / 8000), "discarded": duration(pause[1])})
        block = stereo[at:at + step].tobytes()
        w.lines.append({"t": round(at / 8000, 3), "binary": base64.b64encode(block).decode()})
        w.samples += len(block) // 2
        if ping_every and i % ping_every == ping_every - 1:
            w.message(at / 8000, "ping", {"rtt": "PT0.05S"}, replies=1)
    w.message(n / 8000, "close", {"reason": "end"}, replies=1)
    return w.lines


def write_session(path: str | Path, lines: Iterable[Line]) -> None:
    Path(path).write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))


def read_session(path: str | Path) -> list[Line]:
    return [orjson.loads(raw) for raw in Path(path).read_bytes().splitlines() if raw.strip()]


@dataclass
class Played:
    """What the server said during a replay."""

    received: list[Any] = field(default_factory=list)  # text messages (parsed when JSON)
    close_code: int | None = None
    close_reason: str = ""


async def play(url: str, lines: Sequence[Line], *, speed: float = 1.0, headers: Mapping[str, str] | None = None,
               session: aiohttp.ClientSession | None = None, reply_timeout: float = 10.0,
               linger: float = 2.0) -> Played:
    """Play a session against `url`; `speed` 1 = real time, 2 = twice as fast, 0 = as fast as the server reads.
    After the last line, wait up to `linger` seconds for the server to close before closing the socket."""
    own = session is None
    http = session or aiohttp.ClientSession()
    played = Played()
    try:
        async with http.ws_connect(url, headers=dict(headers or {}), max_msg_size=1 << 20) as ws:
            replies: asyncio.Queue = asyncio.Queue()

            async def reader() -> None:
                while True:
                    msg = await ws.receive()
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        try:
                            doc = orjson.loads(msg.data)
                        except orjson.JSONDecodeError:
                            doc = msg.data
                        played.received.append(doc)
                        await replies.put(doc)
                    elif msg.type != aiohttp.WSMsgType.BINARY:
                        if msg.type == aiohttp.WSMsgType.CLOSE:
                            played.close_reason = msg.extra or ""
                        await replies.put(None)
                        return

            task = asyncio.create_task(reader())
            began = time.monotonic()
            try:
                for line in lines:
                    if speed > 0:
                        delay = began + line.get("t", 0) / speed - time.monotonic()
                        if delay > 0:  # or until the server closes the session
                            await asyncio.wait([task], timeout=delay)
                    if ws.closed or task.done():
                        break
                    try:
                        if "binary" in line:
                            await ws.send_bytes(base64.b64decode(line["binary"]))
                            continue
                        await ws.send_str(line["text"])
                    except (ConnectionError, aiohttp.ClientError):
                        break  # the server closed the session
                    kind = _audiohook_type(line["text"])
                    if kind in ("open", "close"):
                        await _await_reply(replies, {"open": "opened", "close": "closed"}[kind], reply_timeout)
                # the server closes after the session's end (or a refusal); a recording that just stops is a drop
                await asyncio.wait([task], timeout=linger)
                if not ws.closed:
                    await ws.close()
            finally:
                await asyncio.wait_for(task, reply_timeout)
            played.close_code = ws.close_code
    finally:
        if own:
            await http.close()
    return played


def _audiohook_type(text: str) -> str | None:
    if '"version":"2"' not in text.replace(" ", ""):
        return None
    try:
        return orjson.loads(text).get("type")
    except (orjson.JSONDecodeError, AttributeError):
        return None


async def _await_reply(replies: asyncio.Queue, kind: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        doc = await asyncio.wait_for(replies.get(), max(0.01, deadline - time.monotonic()))
        if doc is None or isinstance(doc, dict) and doc.get("type") in (kind, "disconnect"):
            return
