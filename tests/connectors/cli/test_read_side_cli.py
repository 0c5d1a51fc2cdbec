"""`tail --final` and `export` on a real broker, run as a user runs them: each completed call's whole transcript
printed once, when it completes; one call exported in every format; one-line errors with non-zero exits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from transcript_events import Chunking, batch_events, realtime_events, shuffled_with_repeats, truth_words

from bytewax.speechmatics.connectors.cli.transcripts import render_final
from bytewax.speechmatics.schemas import CallTranscript

pytestmark = pytest.mark.kafka

CLI = [sys.executable, "-m", "bytewax.speechmatics.connectors.cli"]
DEADLINE_S = 60.0


def cli_env(bootstrap: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "BWSM_", "BYTEWAX_"))}
    return {**env, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, **extra}


def call_events(call_id: str, seed: int) -> list[dict]:
    truth = truth_words(14, seed=seed)
    events = [*batch_events(call_id, truth, Chunking(failed=frozenset({1}))), *realtime_events(call_id, truth)]
    return shuffled_with_repeats(events, seed, repeats=4)


def is_completion(event: dict) -> bool:
    return event["type"] == "call_completed" and event["source"] == "batch"


def produce(bootstrap: str, topic: str, events: list[dict]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for event in events:
        producer.produce(topic, key=event["call_id"].encode(), value=orjson.dumps(event))
    assert producer.flush(30) == 0


def at_completion(events: list[dict]) -> CallTranscript:
    transcript = CallTranscript()
    for event in events:
        transcript.apply(event)
        if transcript.completed:
            return transcript
    raise AssertionError("the call never completes")


class Lines:
    """A command's stdout read line by line in a thread, so a test can wait for what it prints."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, condition: Callable[[list[str]], bool], what: str) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while not condition(list(self.lines)):
            assert self.proc.poll() is None or self.thread.is_alive(), f"command exited before {what}: {self.lines}"
            assert time.monotonic() < deadline, f"no {what} within {DEADLINE_S:.0f} s: {self.lines}"
            time.sleep(0.05)  # polling interval of a condition with a deadline


def headers(lines: list[str], call_id: str) -> list[str]:
    return [line for line in lines if line.startswith(f"[{call_id}] final transcript")]


def test_tail_final_prints_each_call_once_when_it_completes(kafka_bootstrap: str, make_topic) -> None:  # noqa: ANN001
    topic = make_topic("transcripts", 2)
    a, b, c = (f"call-{uuid.uuid4().hex[:6]}-{n}" for n in "abc")
    events = {call: call_events(call, seed) for seed, call in enumerate((a, b, c))}
    b_completion = next(e for e in events[b] if is_completion(e))
    produce(kafka_bootstrap, topic, [*events[a], *(e for e in events[b] if e is not b_completion)])
    proc = subprocess.Popen([*CLI, "tail", "--final", "--from-beginning", "--topic", topic],
                            env=cli_env(kafka_bootstrap), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = Lines(proc)
    try:
        out.wait_for(lambda lines: headers(lines, a), f"{a}'s transcript")
        assert headers(out.lines, b) == []  # not complete: nothing yet
        produce(kafka_bootstrap, topic, [b_completion])
        out.wait_for(lambda lines: headers(lines, b), f"{b}'s transcript, once its call_completed arrived")
        produce(kafka_bootstrap, topic, [*events[a], *events[c]])  # a replay of a printed call, then a new call
        out.wait_for(lambda lines: headers(lines, c), f"{c}'s transcript")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    text = "\n".join(out.lines)
    for call in (a, b, c):
        assert len(headers(out.lines, call)) == 1, text
        assert render_final(at_completion(events[call])) in text
    assert "Traceback" not in err, err


def test_tail_final_json_prints_one_document_per_completed_call(kafka_bootstrap: str, make_topic) -> None:  # noqa: ANN001
    topic = make_topic("transcripts", 2)
    a, b = (f"call-{uuid.uuid4().hex[:6]}-{n}" for n in "ab")
    done, unfinished = call_events(a, 1), [e for e in call_events(b, 2) if not is_completion(e)]
    produce(kafka_bootstrap, topic, [*done, *unfinished, *done])
    proc = subprocess.run([*CLI, "tail", "--final", "--json", "--from-beginning", "--idle-timeout", "3",
                           "--topic", topic], env=cli_env(kafka_bootstrap), capture_output=True, text=True,
                          timeout=DEADLINE_S)
    assert proc.returncode == 0, proc.stderr
    documents = [json.loads(line) for line in proc.stdout.splitlines()]
    assert documents == [at_completion(done).to_document()]


@pytest.fixture
def exported(kafka_bootstrap: str, make_topic) -> dict:  # noqa: ANN001
    topic = make_topic("transcripts", 2)
    done, unfinished = f"call-{uuid.uuid4().hex[:6]}-done", f"call-{uuid.uuid4().hex[:6]}-open"
    events = {done: call_events(done, 3), unfinished: [e for e in call_events(unfinished, 4) if not is_completion(e)]}
    produce(kafka_bootstrap, topic, [*events[done], *events[unfinished]])
    return {"topic": topic, "done": done, "open": unfinished, "events": events}


def export(bootstrap: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "export", *args], env=cli_env(bootstrap), capture_output=True, text=True,
                          timeout=DEADLINE_S)


def test_export_writes_the_call_in_every_format(kafka_bootstrap: str, exported: dict, tmp_path: Path) -> None:
    topic, call = exported["topic"], exported["done"]
    transcript = CallTranscript.from_events(exported["events"][call])
    assert transcript.completed
    proc = export(kafka_bootstrap, call, "--topic", topic)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout == transcript.to_txt()
    for fmt, render in (("srt", transcript.to_srt), ("vtt", transcript.to_vtt)):
        path = tmp_path / f"call.{fmt}"  # the format comes from the extension
        proc = export(kafka_bootstrap, call, "--topic", topic, "-o", str(path))
        assert proc.returncode == 0 and proc.stdout == "", proc.stderr
        assert path.read_text() == render()
    proc = export(kafka_bootstrap, call, "--topic", topic, "--format", "json", "-o", str(tmp_path / "call.out"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "call.out").read_text()) == transcript.to_document()


def test_export_of_an_unfinished_call_writes_it_and_says_so(kafka_bootstrap: str, exported: dict) -> None:
    call = exported["open"]
    proc = export(kafka_bootstrap, call, "--topic", exported["topic"], "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == CallTranscript.from_events(exported["events"][call]).to_document()
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"export: call {call} is not complete yet"), proc.stderr


def test_export_errors_are_one_line_with_a_non_zero_exit(kafka_bootstrap: str, exported: dict,
                                                          tmp_path: Path) -> None:
    topic = exported["topic"]
    cases = [
        (["no-such-call", "--topic", topic], 1, f"export: call no-such-call is not on topic {topic}"),
        ([exported["done"], "--topic", f"missing-{uuid.uuid4().hex[:8]}"], 2, "does not exist"),
        ([exported["done"], "--topic", topic, "-o", str(tmp_path / "nowhere" / "x.txt")], 2, "cannot write"),
    ]
    for args, code, text in cases:
        proc = export(kafka_bootstrap, *args)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == code and len(lines) == 1 and text in lines[0], (args, proc.stderr)
        assert proc.stdout == ""


def test_export_names_an_unreachable_broker() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    proc = export(f"127.0.0.1:{port}", "some-call")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"export: Kafka at 127.0.0.1:{port} ") and "did not answer" in lines[0]
    assert time.monotonic() - started < 10 + 5  # the probe's limit, plus the interpreter's start
