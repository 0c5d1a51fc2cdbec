"""Drive the real micro-batch flow end to end: topics, calls with known truth, the flow as a process, the output.

The flow always runs as its own OS process (`python -m bytewax.run ...microbatch:flow`), as users run it, so a
test can SIGKILL it and restart it with recovery, or start a 2-process cluster.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from confluent_kafka import Consumer

from bytewax.speechmatics.connectors.cli.publish import CallAudio, publish_calls
from bytewax.speechmatics.connectors.worker.control import WorkerProcess
from bytewax.speechmatics.schemas.events import validate_event

FLOW = "bytewax.speechmatics.flows.microbatch:flow"


@dataclass
class Topics:
    audio: str
    rt: str
    transcripts: str
    dlq: str

    def env(self) -> dict[str, str]:
        return {"BWSM_AUDIO_TOPIC": self.audio, "BWSM_RT_TOPIC": self.rt,
                "BWSM_TRANSCRIPT_TOPIC": self.transcripts, "BWSM_DLQ_TOPIC": self.dlq}


def make_topics(make_topic: Callable[..., str], audio_partitions: int = 4) -> Topics:
    return Topics(make_topic("audio", audio_partitions), make_topic("rt", 2), make_topic("transcripts", 4),
                  make_topic("dlq", 1))


@dataclass
class TruthCall:
    call_id: str
    audio: bytes
    words: list[dict]
    sample_rate: int = 16000
    channels: int = 1

    def as_call_audio(self) -> CallAudio:
        return CallAudio(self.call_id, self.audio, self.sample_rate, self.channels)

    def truth_texts(self) -> list[str]:
        return [w["text"] for w in self.words]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class FlowRun:
    """One flow process (or cluster member) and where its log goes."""

    proc: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


def flow_env(bootstrap: str, topics: Topics, worker: WorkerProcess, journal: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, **topics.env(), "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
           "SPEECHMATICS_BATCH_URL": worker.url, "SPEECHMATICS_API_KEY": "e2e-test-key",
           "BWSM_JOURNAL_DIR": str(journal), "BWSM_DIARIZATION": "speaker", "PYTHONUNBUFFERED": "1"}
    env.update(extra)
    return env


def start_flow(env: dict[str, str], log_path: Path, recovery: Path | None = None,
               cluster: tuple[int, str] | None = None, workers: int = 1) -> FlowRun:
    """Start the flow; with `recovery` it snapshots every second; `cluster` = (process id, addresses)."""
    cmd = [sys.executable, "-m", "bytewax.run", FLOW, "-w", str(workers)]
    if recovery is not None:
        cmd += ["-r", str(recovery), "-s", "1", "-b", "0"]
    if cluster is not None:
        cmd += ["-i", str(cluster[0]), "-a", cluster[1]]
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    return FlowRun(proc, log_path)


@dataclass
class Output:
    """Everything read from the transcript and dead-letter topics so far."""

    events: list[dict] = field(default_factory=list)  # in topic order per partition (= per call)
    raw: dict[str, list[bytes]] = field(default_factory=dict)  # event id -> every value read with that id
    letters: list[tuple[bytes | None, dict[str, str]]] = field(default_factory=list)

    def by_call(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = defaultdict(list)
        for event in self.events:
            out[event["call_id"]].append(event)
        return out

    def completed(self) -> set[str]:
        return {e["call_id"] for e in self.events if e["type"] == "call_completed"}


class OutputReader:
    """A consumer of the transcript and DLQ topics that validates every event it reads."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        self.topics = topics
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
        self.consumer.subscribe([topics.transcripts, topics.dlq])
        self.output = Output()

    def poll_until(self, done: Callable[[Output], bool], deadline_s: float,
                   check: Callable[[], None] = lambda: None) -> Output:
        deadline = time.monotonic() + deadline_s
        while not done(self.output):
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {deadline_s:.0f}s: {len(self.output.events)} events, "
                                   f"{len(self.output.completed())} calls completed")
            check()
            for msg in self.consumer.consume(500, 0.2):
                if msg.error():
                    continue
                if msg.topic() == self.topics.dlq:
                    headers = {k: (v or b"").decode(errors="replace") for k, v in (msg.headers() or [])}
                    self.output.letters.append((msg.key(), headers))
                else:
                    event = orjson.loads(msg.value())
                    validate_event(event)
                    assert msg.key().decode() == event["call_id"]
                    self.output.events.append(event)
                    self.output.raw.setdefault(event["event_id"], []).append(msg.value())
        return self.output

    def close(self) -> None:
        self.consumer.close()


def without_run_specific(event: dict) -> dict:
    """An event minus what differs between two runs of the same calls: the job id (the server assigns it) and the
    attempts (faults differ per run)."""
    if event.get("job"):
        return {**event, "job": {k: v for k, v in event["job"].items() if k not in ("id", "attempts")}}
    return event


def repeated_with_other_bytes(output: Output) -> dict[str, int]:
    """Event id -> number of distinct byte strings, for every id that was emitted with different bytes."""
    return {eid: len(set(values)) for eid, values in output.raw.items() if len(set(values)) > 1}


def distinct_events(events: Iterable[dict]) -> dict[str, dict]:
    """event_id -> event; asserts that a repeated id is only ever an identical event."""
    seen: dict[str, dict] = {}
    for event in events:
        first = seen.setdefault(event["event_id"], event)
        assert first == event, f"event {event['event_id']} repeated with different contents"
    return seen


def stitched_words(events: list[dict]) -> list[str]:
    """The call's batch words in emitted order (first occurrence of each segment)."""
    words: list[str] = []
    seen: set[str] = set()
    for event in events:
        if event["source"] == "batch" and event["type"] == "segment" and event["event_id"] not in seen:
            seen.add(event["event_id"])
            words += [w["text"] for w in event["words"]]
    return words


def publish(bootstrap: str, topic: str, calls: list[TruthCall], frame_ms: int = 20) -> int:
    return publish_calls([c.as_call_audio() for c in calls], topic, frame_ms=frame_ms, speed=0.0,
                         producer_config={"bootstrap.servers": bootstrap})
