"""Fixtures for the local Speechmatics-compatible worker (real subprocess, real HTTP).

`local_worker` is a factory: `local_worker(engine="reference", parallel=2, api_key=None, faults=None,
extra_args=(), env=None)` starts `python -m bytewax.speechmatics.connectors.cli.worker` on a free port,
waits for /ready (deadline 120 s) and returns a `WorkerProcess` with:
  .url    base for the SDK / SPEECHMATICS_BATCH_URL (ends in /v2)
  .base   http://host:port (health endpoints /jobs, /live, /ready)
  .admin  WorkerAdmin: register_call(call_id, audio, words, sample_rate=, encoding=, channels=, edge_rule=),
          set_faults(doc), clear_faults(), faults(), stats(), release(), reset(), engines(),
          ready(), calls()
  .stop() (also done at teardown), .pid
`reference_worker` is one shared reference-engine worker (parallel 4) per session, reset before each test
that uses it: cheaper than a process per test when a test needs no special flags.
`synthetic_call(...)` makes a call's audio (noise, so every stretch is unique, opening in digital silence)
and a word timeline to register as its truth.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

from bytewax.speechmatics.connectors.worker.control import WorkerProcess, start_worker
from bytewax.speechmatics.schemas.frames import BYTES_PER_SAMPLE


def synthetic_call(
    seconds: float = 60.0,
    *,
    sample_rate: int = 16000,
    encoding: str = "pcm_s16le",
    channels: int = 1,
    voices: tuple[str, ...] = ("alice", "bob"),
    leading_silence: float = 1.0,
    seed: int = 0,
) -> tuple[bytes, list[dict]]:
    """(raw audio in the given contract format, truth words): a word every 0.5 s lasting 0.4 s, voices taking
    turns of three words, a "." after every fifth word; on 2 channels each voice speaks on its own channel."""
    rng = np.random.default_rng(seed)
    frames = int(seconds * sample_rate)
    silent = int(leading_silence * sample_rate)
    if encoding == "mulaw":
        audio = rng.integers(0, 256, (frames, channels), dtype=np.uint8)
        audio[:silent] = 0xFF
    else:
        audio = rng.integers(-8000, 8000, (frames, channels)).astype("<i2")
        audio[:silent] = 0
    assert audio.dtype.itemsize == BYTES_PER_SAMPLE[encoding]
    words: list[dict] = []
    n = 0
    t = leading_silence
    while t + 0.4 <= seconds:
        voice = voices[(n // 3) % len(voices)]
        word = {"text": f"word{n}", "start_time": round(t, 3), "end_time": round(t + 0.4, 3), "speaker": voice}
        if channels == 2:
            word["channel"] = 1 + voices.index(voice) % 2
        words.append(word)
        if n % 5 == 4:
            words.append({**word, "text": ".", "type": "punctuation", "start_time": word["end_time"]})
        n += 1
        t += 0.5
    return audio.tobytes(), words


@pytest.fixture
def local_worker() -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(**kwargs) -> WorkerProcess:
        worker = start_worker(**kwargs)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def _shared_reference_worker() -> Iterator[WorkerProcess]:
    worker = start_worker(engine="reference", parallel=4)
    yield worker
    worker.stop()


@pytest.fixture
def reference_worker(_shared_reference_worker: WorkerProcess) -> WorkerProcess:
    _shared_reference_worker.admin.reset()
    return _shared_reference_worker


def with_pauses(audio: bytes, words: list[dict], *, sample_rate: int = 16000, encoding: str = "pcm_s16le",
                channels: int = 1, seed: int = 0, every: tuple[int, int] = (40, 80),
                seconds: tuple[float, float] = (0.6, 6.0)) -> tuple[bytes, list[dict]]:
    """A synthetic call with stretches of digital silence between words (a pause after every `every` words,
    `seconds` long), the later words moved by them: what silence compaction shortens."""
    rng = np.random.default_rng(seed)
    width = BYTES_PER_SAMPLE[encoding] * channels
    quiet = b"\xff" if encoding == "mulaw" else b"\x00"
    out, moved, cursor, shift = [], [], 0, 0.0
    next_pause = int(rng.integers(*every))
    count = 0
    for word in words:
        if word.get("type") != "punctuation":
            count += 1
            if count == next_pause:
                at = int(round((word["start_time"] - 0.05) * sample_rate))
                pause = round(float(rng.uniform(*seconds)), 2)
                out += [audio[cursor * width : at * width], quiet * (int(pause * sample_rate) * width)]
                cursor, shift = at, round(shift + pause, 6)
                next_pause += int(rng.integers(*every))
        moved.append({**word, "start_time": round(word["start_time"] + shift, 6),
                      "end_time": round(word["end_time"] + shift, 6)})
    out.append(audio[cursor * width :])
    return b"".join(out), moved
