"""A real audio file pushed through `bytewax-speechmatics publish` -> Kafka -> a consumer comes back sample-exact."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from confluent_kafka import Consumer

from bytewax.speechmatics.schemas.frames import AudioFrame, decode_frame

pytestmark = pytest.mark.kafka


def write_audio(path: Path, rate: int, channels: int, seconds: float, seed: int) -> np.ndarray:
    """A file of voice-like tones plus noise (so every sample matters), written by libsndfile."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    tones = [np.sin(2 * np.pi * f * t) * (0.3 + 0.2 * np.sin(2 * np.pi * 3 * t)) for f in (220, 330)[:channels]]
    data = np.stack(tones, axis=1) + rng.normal(0, 0.02, (len(t), channels))
    pcm = np.clip(data * 32767, -32768, 32767).astype(np.int16)
    sf.write(str(path), pcm, rate, subtype="PCM_16")
    return pcm


def consume_calls(bootstrap: str, topic: str, expected_calls: int, deadline_s: float = 60) -> dict[str, list]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    calls: dict[str, list[AudioFrame]] = {}
    deadline = time.monotonic() + deadline_s
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                done = [c for c, frames in calls.items() if any(f.end for f in frames)]
                if len(done) == expected_calls:
                    break
                continue
            frame = decode_frame(msg.key(), msg.value(), msg.headers(), topic=msg.topic(),
                                 partition=msg.partition(), offset=msg.offset())
            calls.setdefault(frame.call_id, []).append(frame)
    finally:
        consumer.close()
    return calls


def publish(bootstrap: str, topic: str, files: list[Path], *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    cmd = [sys.executable, "-m", "bytewax.speechmatics.connectors.cli", "publish", *map(str, files),
           "--topic", topic, "--speed", "max", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=True)


@pytest.mark.parametrize(("rate", "channels", "fmt"), [(8000, 2, "wav"), (16000, 1, "wav"), (48000, 1, "flac")])
def test_file_comes_back_sample_exact(kafka_bootstrap, make_topic, tmp_path, rate, channels, fmt) -> None:  # noqa: ANN001
    path = tmp_path / f"call.{fmt}"
    pcm = write_audio(path, rate, channels, seconds=3.37, seed=rate + channels)
    topic = make_topic("audio")
    call_id = f"call-{uuid.uuid4().hex[:6]}"
    publish(kafka_bootstrap, topic, [path], "--call-id", call_id, "--frame-ms", "20")

    frames = consume_calls(kafka_bootstrap, topic, expected_calls=1)[call_id]
    frames.sort(key=lambda f: f.seq)
    assert [f.seq for f in frames] == list(range(len(frames)))
    assert [f.end for f in frames] == [False] * (len(frames) - 1) + [True]
    assert {f.audio_format for f in frames} == {(rate, "pcm_s16le", channels)}
    assert all(f.samples == rate // 50 for f in frames[:-1])
    assert b"".join(f.audio for f in frames) == pcm.tobytes()


def test_several_files_publish_concurrently_as_separate_calls(kafka_bootstrap, make_topic, tmp_path) -> None:  # noqa: ANN001
    paths = [tmp_path / "a.wav", tmp_path / "b.wav"]
    pcms = [write_audio(p, 16000, 1, seconds=s, seed=i) for i, (p, s) in enumerate(zip(paths, (1.5, 2.2), strict=True))]
    topic = make_topic("audio")
    publish(kafka_bootstrap, topic, paths, "--call-id", "pair", "--frame-ms", "100")
    calls = consume_calls(kafka_bootstrap, topic, expected_calls=2)
    assert set(calls) == {"pair-0", "pair-1"}
    for i, pcm in enumerate(pcms):
        frames = sorted(calls[f"pair-{i}"], key=lambda f: f.seq)
        assert b"".join(f.audio for f in frames) == pcm.tobytes()
