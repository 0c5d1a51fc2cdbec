"""Helpers for the real-time tests: the local worker's real-time URL and fault admin, an SDK session runner, the
bridge as a process and a reader of the real-time topic."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer
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


def assert_partials_before_finals(messages: list[dict[str, Any]]) -> None:
    """Every final word was shown in a partial before its final."""
    shown: set[str] = set()
    for m in messages:
        if m["message"] == "AddPartialTranscript":
            shown |= {r["alternatives"][0]["content"] for r in m["results"]}
        elif m["message"] == "AddTranscript":
            assert {r["alternatives"][0]["content"] for r in m["results"]} <= shown


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


# ---- the bridge as a process, and what it wrote to the real-time topic ----




@dataclass
class BridgeRun:
    proc: subprocess.Popen
    log_path: Path

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_assigned(self, deadline_s: float = 60.0) -> None:
        """Until the bridge owns its partitions (a consumer group join takes seconds on a fresh group)."""
        deadline = time.monotonic() + deadline_s
        while "bridge assigned partitions" not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise TimeoutError(f"the bridge did not get its partitions:\n{self.log()[-3000:]}")
            time.sleep(0.05)


def start_bridge(env: dict[str, str], log_path: Path) -> BridgeRun:
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen([sys.executable, "-m", "bytewax.speechmatics.connectors.cli", "realtime"],
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **env}, stdout=log,
                            stderr=subprocess.STDOUT)
    return BridgeRun(proc, log_path)


def bridge_env(bootstrap: str, audio: str, rt: str, worker, **extra: str) -> dict[str, str]:
    return {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "BWSM_AUDIO_TOPIC": audio, "BWSM_RT_TOPIC": rt,
            "SPEECHMATICS_RT_URL": rt_url(worker), "SPEECHMATICS_API_KEY": "bridge-test-key",
            "BWSM_RT_GROUP": f"bridge-{uuid.uuid4().hex[:8]}", "BWSM_RT_COMMIT_SECONDS": "0.3",
            "KAFKA_CONF_SESSION_TIMEOUT_MS": "6000", **extra}  # a killed bridge leaves its group within 6 s


@dataclass
class RtMessage:
    call_id: str
    message: dict[str, Any]
    headers: dict[str, str]
    timestamp: float

    @property
    def kind(self) -> str:
        return self.message["message"]


class RtReader:
    """Everything on the real-time topic, per call in topic order."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
        self.consumer.subscribe([topic])
        self.calls: dict[str, list[RtMessage]] = defaultdict(list)

    def poll_until(self, done, deadline_s: float, check=lambda: None) -> dict[str, list[RtMessage]]:
        deadline = time.monotonic() + deadline_s
        while not done(self.calls):
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {deadline_s:.0f}s: "
                                   f"{ {c: len(m) for c, m in self.calls.items()} }")
            check()
            for msg in self.consumer.consume(500, 0.2):
                if msg.error():
                    continue
                headers = {k: (v or b"").decode() for k, v in (msg.headers() or [])}
                self.calls[msg.key().decode()].append(
                    RtMessage(msg.key().decode(), json.loads(msg.value()), headers, msg.timestamp()[1] / 1000))
        return self.calls

    def close(self) -> None:
        self.consumer.close()


def ended(messages: list[RtMessage]) -> bool:
    """The call's real-time path is over: EndOfTranscript, or an Error (the bridge produces only a final one)."""
    return any(m.kind in ("EndOfTranscript", "Error") for m in messages)


def final_words(messages: list[RtMessage]) -> list[tuple[str, float, float]]:
    """(text, call start, call end) of every final word, session offsets applied."""
    out = []
    for m in messages:
        if m.kind == "AddTranscript":
            offset = float(m.headers.get("rt_offset", "0"))
            out += [(r["alternatives"][0]["content"], round(r["start_time"] + offset, 3),
                     round(r["end_time"] + offset, 3)) for r in m.message["results"] if r["type"] == "word"]
    return out
