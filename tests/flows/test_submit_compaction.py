"""The submitter with silence compaction (no HTTP): what is handed to the service, what is billed, how times return,
and that a restored state sends the same audio."""

from __future__ import annotations

import pickle

import numpy as np
from prometheus_client import REGISTRY
from test_submit_logic import RecordingService

from bytewax.speechmatics.connectors.speechmatics.service import ChunkDone, JobKnown
from bytewax.speechmatics.connectors.speechmatics.wav import audio_hash
from bytewax.speechmatics.flows.submitter import SubmitLogic
from bytewax.speechmatics.schemas.chunks import Chunk, ChunkResult, ChunkSpan

RATE = 8000


def noise(seconds: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-8000, 8000, int(seconds * RATE)).astype("<i2")


def quiet(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype="<i2")


def chunk(samples: np.ndarray, index: int = 0, channels: int = 1) -> Chunk:
    frames = len(samples) // channels
    span = ChunkSpan("call-c", index, 0, frames, 0, RATE, "pcm_s16le", channels, last=True)
    return Chunk(span, samples.tobytes(), (("calls.audio", 0, 0, 0),))


def test_a_chunk_without_speech_is_not_sent_and_bills_nothing() -> None:
    service = RecordingService(skip_silence=True)
    before = REGISTRY.get_sample_value("bwsm_chunks_silent_total") or 0.0
    out, _ = SubmitLogic(None, service, None).on_item(chunk(quiet(10.0)))
    assert service.submitted == []
    assert REGISTRY.get_sample_value("bwsm_chunks_silent_total") == before + 1
    [result] = out
    assert isinstance(result, ChunkResult) and result.transcript == {"results": []} and result.billed_seconds == 0


def test_pauses_are_shortened_before_sending_and_times_come_back_on_the_chunk() -> None:
    first, second = noise(3.0, 1), noise(2.0, 2)
    audio = np.concatenate([quiet(2.0), first, quiet(4.0), second, quiet(3.0)])
    service = RecordingService(skip_silence=True, silence_keep_seconds=0.5)
    logic = SubmitLogic(None, service, None)
    logic.on_item(chunk(audio))
    [request] = service.submitted
    sent = request.chunk.audio
    assert 5.0 + 1.0 <= len(sent) / 2 / RATE <= 5.0 + 1.0 + 0.5  # speech, 2 x half a keep, a keep, VAD hangover
    # Where the engine hears each burst in the audio it was sent, and a word 0.1 s / 0.2 s into each.
    at = [sent.find(burst[:200].tobytes()) / 2 / RATE for burst in (first, second)]
    heard = {"results": [{"type": "word", "start_time": at[0] + 0.1, "end_time": at[0] + 0.6, "alternatives": []},
                         {"type": "word", "start_time": at[1] + 0.2, "end_time": at[1] + 0.5, "alternatives": []}]}
    service.events = [JobKnown(0, "job-1", 1), ChunkDone(0, "job-1", heard, 1)]
    [result], _ = logic.on_notify()
    times = [(r["start_time"], r["end_time"]) for r in result.transcript["results"]]
    assert np.allclose(times, [(2.1, 2.6), (9.2, 9.5)], atol=1e-3)  # the chunk's own times
    assert result.billed_seconds == len(sent) / 2 / RATE


def test_a_restored_state_sends_the_same_audio_with_the_same_fingerprint() -> None:
    audio = np.concatenate([noise(1.0, 3), quiet(5.0), noise(1.0, 4)])
    first = RecordingService(skip_silence=True)
    logic = SubmitLogic(None, first, None)
    logic.on_item(chunk(audio))
    state = pickle.loads(pickle.dumps(logic.snapshot()))
    again = RecordingService(skip_silence=True)
    SubmitLogic(None, again, state)
    assert again.submitted[0].chunk.audio == first.submitted[0].chunk.audio
    assert audio_hash(again.submitted[0].chunk.audio) == audio_hash(first.submitted[0].chunk.audio)
    assert len(first.submitted[0].chunk.audio) < len(audio.tobytes())


def test_speech_on_either_channel_is_sent_and_compaction_off_sends_everything() -> None:
    left = np.concatenate([noise(1.0, 5), quiet(6.0)])
    right = np.concatenate([quiet(6.0), noise(1.0, 6)])
    stereo = np.stack([left, right], axis=1).reshape(-1)
    service = RecordingService(skip_silence=True)
    SubmitLogic(None, service, None).on_item(chunk(stereo, channels=2))
    sent = service.submitted[0].chunk.audio
    assert 2 * 2 * RATE * 2.0 <= len(sent) < len(stereo.tobytes())  # both parties' second, 5 s of pause shortened
    whole = RecordingService(skip_silence=False)
    SubmitLogic(None, whole, None).on_item(chunk(stereo, channels=2))
    assert whole.submitted[0].chunk.audio == stereo.tobytes()
