"""Helpers for the real-time tests: the local worker's real-time URL and fault admin, and an SDK session runner."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from speechmatics.rt import AsyncClient, AudioEncoding, AudioFormat, ServerMessageType, TranscriptionConfig


def rt_url(worker) -> str:
    """ws://host:port/v2 of a WorkerProcess."""
    return worker.base.replace("http://", "ws://", 1) + "/v2"


def set_rt_faults(worker, doc: dict[str, Any] | None = None) -> dict[str, Any]:
    req = urllib.request.Request(worker.base + "/admin/realtime", data=json.dumps(doc or {}).encode(), method="PUT",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - local worker
        return json.loads(resp.read())


def rt_stats(worker) -> dict[str, Any]:
    with urllib.request.urlopen(worker.base + "/admin/realtime/stats", timeout=10) as resp:  # noqa: S310
        return json.loads(resp.read())


@dataclass
class Recorded:
    messages: list[dict[str, Any]] = field(default_factory=list)

    def of(self, *kinds: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["message"] in kinds]

    def words(self, kind: str = "AddTranscript") -> list[tuple[str, float, float]]:
        return [(r["alternatives"][0]["content"], r["start_time"], r["end_time"])
                for m in self.of(kind) for r in m["results"]]


def record_all(client: AsyncClient) -> Recorded:
    rec = Recorded()
    for kind in ServerMessageType:
        client.on(kind, rec.messages.append)
    return rec


async def stream(url: str, audio: bytes, *, frame_bytes: int = 640, encoding: AudioEncoding | None =
                 AudioEncoding.PCM_S16LE, sample_rate: int = 16000, api_key: str = "any-key",
                 config: TranscriptionConfig | None = None, pace: float = 0.0) -> Recorded:
    """One whole session with the official SDK: start, every frame, stop (EndOfStream, wait EndOfTranscript)."""
    client = AsyncClient(api_key=api_key, url=url)
    rec = record_all(client)
    fmt = AudioFormat(encoding=encoding, sample_rate=sample_rate) if encoding else AudioFormat(encoding=None)
    await client.start_session(transcription_config=config or TranscriptionConfig(language="en",
                                                                                  enable_partials=True),
                               audio_format=fmt)
    for i in range(0, len(audio), frame_bytes):
        await client.send_audio(audio[i:i + frame_bytes])
        if pace:
            await asyncio.sleep(pace)
    await asyncio.wait_for(client.stop_session(), 30)
    return rec
