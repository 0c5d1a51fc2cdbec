"""The diarization benchmark's scoring, and (slow) the whisper engine's speaker accuracy on the pyannote sample.

The figure to quote (0.90 or better, `python -m bench.diarization`) comes from whisper's words and the encoder's
arithmetic, both of which differ a little between CPUs, so the slow test asserts it with a margin (MIN_ACCURACY).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.diarization import best_mapping_accuracy, reference_speakers

#: The target is 0.90; measured 0.917 (bench/diarization.py). Margin for other CPUs' word times.
MIN_ACCURACY = 0.85


def test_best_mapping_accuracy_takes_the_best_one_to_one_mapping() -> None:
    truths = [{"a"}, {"a"}, {"b"}, {"a", "b"}]
    assert best_mapping_accuracy(["S2", "S2", "S1", "S1"], truths) == 1.0
    assert best_mapping_accuracy(["S1", "S1", "S1", "S1"], truths) == 0.75  # one label: one person at most
    assert best_mapping_accuracy(["S1", "S2", "S3", "S3"], truths) == 0.75


def test_a_words_reference_speaker_is_the_turn_holding_it_else_the_nearest() -> None:
    turns = [(0.0, 2.0, "a"), (1.5, 3.0, "b"), (5.0, 6.0, "a")]
    assert reference_speakers(turns, 1.0) == {"a"}
    assert reference_speakers(turns, 1.7) == {"a", "b"}
    assert reference_speakers(turns, 4.5) == {"a"}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_whisper_labels_the_pyannote_samples_speakers(tmp_path: Path) -> None:
    pytest.importorskip("faster_whisper")
    from bench.diarization import load_engine, pyannote_accuracy
    from bytewax.speechmatics.connectors.cli.recordings import cache_dir

    load_engine(cache_dir().parent, threads=2)
    accuracy, words, _, _ = pyannote_accuracy()
    assert words >= 40
    assert accuracy >= MIN_ACCURACY
