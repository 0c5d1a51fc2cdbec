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


def watermark(bootstrap: str, topic: str) -> int:
    """Messages in partition 0 of `topic` (its high watermark)."""
    from confluent_kafka import TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)[1]
    finally:
        consumer.close()


def test_frames_longer_than_the_flow_accepts_are_refused_before_anything_is_sent(
        kafka_bootstrap, make_topic, tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "mono.wav"
    write_audio(path, 16000, 1, seconds=3.0, seed=5)
    topic = make_topic("audio")
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    cmd = [sys.executable, "-m", "bytewax.speechmatics.connectors.cli", "publish", str(path), "--topic", topic,
           "--speed", "max", "--frame-ms", "5000"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("publish: --frame-ms 5000: ") and "at most 2000 ms (BWSM_MAX_FRAME_SECONDS=2)" in line
    assert proc.stdout == ""
    assert watermark(kafka_bootstrap, topic) == 0  # not one frame the flow would dead-letter

    # The limit the flow is given (BWSM_MAX_FRAME_SECONDS) is the one publish keeps to.
    proc = subprocess.run([*cmd[:-1], "700"], env={**env, "BWSM_MAX_FRAME_SECONDS": "0.5"}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "at most 500 ms" in proc.stderr, proc.stderr
    assert watermark(kafka_bootstrap, topic) == 0


@pytest.mark.parametrize("frame_ms", [2000, 1999])
def test_the_longest_frames_allowed_all_pass_the_flows_frame_check(
        kafka_bootstrap, make_topic, tmp_path, frame_ms) -> None:  # noqa: ANN001
    path = tmp_path / "call.wav"
    pcm = write_audio(path, 48000, 2, seconds=4.5, seed=frame_ms)
    topic = make_topic("audio")
    call_id = f"long-{uuid.uuid4().hex[:6]}"
    publish(kafka_bootstrap, topic, [path], "--call-id", call_id, "--frame-ms", str(frame_ms))
    # consume_calls decodes every message with the flow's own check (decode_frame, default 2 s limit): a frame over
    # the limit would raise there
    frames = sorted(consume_calls(kafka_bootstrap, topic, expected_calls=1)[call_id], key=lambda f: f.seq)
    assert len(frames) == 3 and all(f.samples <= 2 * 48000 for f in frames)
    assert b"".join(f.audio for f in frames) == pcm.tobytes()


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def test_a_44k1_stereo_file_is_resampled_to_16k_with_each_channel_kept(kafka_bootstrap, make_topic, tmp_path) -> None:  # noqa: ANN001
    rate, seconds = 44100, 2.5
    t = np.arange(int(rate * seconds)) / rate
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 1000 * t)
    path = tmp_path / "cd.wav"
    sf.write(str(path), (np.stack([left, right], axis=1) * 32767).astype(np.int16), rate, subtype="PCM_16")
    topic = make_topic("audio")
    call_id = f"cd-{uuid.uuid4().hex[:6]}"
    out = publish(kafka_bootstrap, topic, [path], "--call-id", call_id).stdout
    assert "16000 Hz (resampled from 44100 Hz), 2 channel(s)" in out, out

    frames = sorted(consume_calls(kafka_bootstrap, topic, expected_calls=1)[call_id], key=lambda f: f.seq)
    assert {f.audio_format for f in frames} == {(16000, "pcm_s16le", 2)}
    pcm = np.frombuffer(b"".join(f.audio for f in frames), dtype=np.int16).reshape(-1, 2)
    assert abs(len(pcm) - round(len(t) * 16000 / rate)) <= 1  # same duration
    for channel, (hz, amplitude) in enumerate([(440, 0.5), (1000, 0.25)]):
        assert abs(dominant_hz(pcm[:, channel], 16000) - hz) < 2  # each channel keeps its own tone: not mixed
        rms = np.sqrt(np.mean((pcm[1000:-1000, channel] / 32768.0) ** 2))
        assert abs(rms - amplitude / np.sqrt(2)) < 0.01 * amplitude  # and its level


@pytest.mark.parametrize(("fmt", "rate", "extra", "expected_rate"), [
    ("OGG", 22050, (), 16000), ("MP3", 44100, (), 16000), ("FLAC", 16000, ("--sample-rate", "8000"), 8000),
])
def test_compressed_files_and_forced_rates_publish_at_a_contract_rate(
        kafka_bootstrap, make_topic, tmp_path, fmt, rate, extra, expected_rate) -> None:  # noqa: ANN001
    t = np.arange(int(rate * 1.5)) / rate
    path = tmp_path / f"call.{fmt.lower()}"
    sf.write(str(path), (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), rate, format=fmt)
    topic = make_topic("audio")
    call_id = f"{fmt.lower()}-{uuid.uuid4().hex[:6]}"
    publish(kafka_bootstrap, topic, [path], "--call-id", call_id, *extra)
    frames = sorted(consume_calls(kafka_bootstrap, topic, expected_calls=1)[call_id], key=lambda f: f.seq)
    assert {f.audio_format for f in frames} == {(expected_rate, "pcm_s16le", 1)}
    pcm = np.frombuffer(b"".join(f.audio for f in frames), dtype=np.int16)
    assert abs(len(pcm) / expected_rate - 1.5) < 0.1  # MP3 pads a few ms at either end
    assert abs(dominant_hz(pcm, expected_rate) - 300) < 2
