"""Speaker diarization of the whisper engine (engines/diarize.py): clustering, labels, speaker identification."""

from __future__ import annotations

import numpy as np
import pytest

from bytewax.speechmatics.connectors.worker.engines.diarize import (
    cluster,
    decode_identifier,
    diarize,
    encode_identifier,
)
from bytewax.speechmatics.connectors.worker.engines.voice_encoder import mel_filters, mel_spectrogram

RATE = 16000


class BandEncoder:
    """Stands in for the voice encoder: a window's "voice" is its loudest mel band (a tone's pitch)."""

    def embed_partials(self, mels: np.ndarray) -> np.ndarray:
        base = np.full(mels.shape[2], 0.1, dtype=np.float32)
        out = np.stack([base + np.eye(mels.shape[2], dtype=np.float32)[int(np.argmax(m.mean(axis=0)))]
                        for m in mels])
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def two_voices() -> tuple[np.ndarray, list[tuple[float, float]], list[int]]:
    """Turns of a low and a high tone (0-4 s low, 4-8 s high, 8-12 s low), a word every 0.5 s."""
    t = np.arange(12 * RATE) / RATE
    pitch = np.where((t >= 4) & (t < 8), 2500.0, 300.0)
    audio = (0.3 * np.sin(2 * np.pi * pitch * t)).astype(np.float32)
    spans = [(s, s + 0.4) for s in np.arange(0.05, 12, 0.5)]
    truth = [int(4 <= s < 8) for s, _ in spans]
    return audio, spans, truth


def test_turns_of_two_voices_get_two_labels_in_order_of_first_word() -> None:
    audio, spans, truth = two_voices()
    found = diarize(BandEncoder(), audio, spans, {})
    assert found.labels[0] == "S1"
    expected = ["S2" if v else "S1" for v in truth]
    agree = np.mean([a == b for a, b in zip(found.labels, expected, strict=True)])
    assert agree >= 0.9  # windows straddling a turn change may go either way
    assert [s["label"] for s in found.speakers] == ["S1", "S2"]


def test_max_speakers_one_gives_one_label() -> None:
    audio, spans, _ = two_voices()
    assert set(diarize(BandEncoder(), audio, spans, {"max_speakers": 1}).labels) == {"S1"}


def test_enrolled_voices_keep_their_labels_in_a_later_job() -> None:
    audio, spans, truth = two_voices()
    first = diarize(BandEncoder(), audio, spans, {"get_speakers": True})
    book = [{"label": "spk_" + s["label"], "speaker_identifiers": s["speaker_identifiers"]} for s in first.speakers]
    # the next job starts with the high voice: unenrolled it would be S1; enrolled it is the first job's S2
    later = [(s - 4.0, e - 4.0) for s, e in spans if 4.0 <= s < 12]
    found = diarize(BandEncoder(), audio[4 * RATE:], later, {"speakers": book})
    assert found.labels[0] == "spk_S2" and found.labels[-1] == "spk_S1"


def test_identifiers_round_trip_and_foreign_ones_are_ignored() -> None:
    vector = np.random.default_rng(1).random(256).astype(np.float32)
    back = decode_identifier(encode_identifier(vector))
    assert back is not None and float(back @ (vector / np.linalg.norm(vector))) > 0.999
    for foreign in ("", "abc", "bwsm-voice-v1:!!", 5):
        assert decode_identifier(foreign) is None  # type: ignore[arg-type]


def test_clustering_stops_at_max_clusters_or_dissimilar_clusters() -> None:
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    vectors = np.stack([a, a, b, b, a])
    labels = cluster(vectors, max_clusters=2, stop_similarity=0.5)
    assert labels[0] == labels[1] == labels[4] != labels[2] == labels[3]
    assert set(cluster(vectors, max_clusters=1, stop_similarity=0.5)) == {0}


@pytest.mark.parametrize("hz", [300.0, 2500.0])
def test_the_mel_spectrogram_puts_a_tone_in_its_band(hz: float) -> None:
    t = np.arange(RATE) / RATE
    mels = mel_spectrogram(np.sin(2 * np.pi * hz * t).astype(np.float32))
    assert mels.shape == (101, 40)
    centres = np.argmax(mel_filters(), axis=1) * (RATE / 2) / 200
    assert abs(centres[int(np.argmax(mels.mean(axis=0)))] - hz) < 150


def test_a_worker_that_cannot_fetch_the_encoder_declares_no_speaker_diarization(tmp_path, monkeypatch) -> None:
    from bytewax.speechmatics.connectors.worker.engines import whisper
    from bytewax.speechmatics.connectors.worker.engines.voice_encoder import EncoderError

    backend = whisper.WhisperBackend(1, whisper.WhisperConfig(cache_dir=tmp_path))
    assert "speaker" in backend.capabilities.diarization

    def offline(cache_dir):  # noqa: ANN001, ANN202
        raise EncoderError("could not download resemblyzer==0.1.4")

    monkeypatch.setattr(whisper, "fetch_encoder", offline)
    assert backend._encoder_path() is None  # noqa: SLF001
    assert backend.capabilities.diarization == ("none", "channel")
