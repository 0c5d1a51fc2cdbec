"""No dropped speech (engines/coverage.py): voiced audio without words is recognised again."""

from __future__ import annotations

import itertools

import numpy as np

from bytewax.speechmatics.connectors.worker.engines.coverage import fill_gaps, uncovered

RATE = 16000


def voice(total: float, stretches: list[tuple[float, float]]) -> np.ndarray:
    audio = np.zeros(int(total * RATE), dtype=np.float32)
    for a, b in stretches:
        t = np.arange(int((b - a) * RATE)) / RATE
        audio[int(a * RATE): int(a * RATE) + len(t)] = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(6 * t))
    return audio


def test_voiced_audio_no_word_reaches_is_uncovered() -> None:
    voiced = [(0.0, 4.0), (10.0, 20.0)]
    words = [(0.5, 1.0), (1.2, 3.8), (10.1, 12.0)]  # the engine stopped at 12 s
    assert uncovered(voiced, words) == [(12.5, 20.0)]
    assert uncovered(voiced, words + [(12.2, 19.9)]) == []
    assert uncovered([(0.0, 1.5)], []) == []  # too short to matter


def test_an_early_stop_is_filled_by_a_second_pass_in_time_order() -> None:
    audio = voice(30.0, [(1.0, 8.0), (15.0, 25.0)])
    first = [(" one", 1.1, 1.6, 0.9), (" two.", 1.7, 2.2, 0.9), (" three", 2.4, 7.9, 0.9)]
    clips = []

    def recognise(clip: np.ndarray) -> list[tuple[str, float, float, float]]:
        clips.append(len(clip) / RATE)
        return [(" four", 0.4, 1.0, 0.8), (" three", 0.0, 0.2, 0.5)]  # times from the clip's start

    words = fill_gaps(recognise, audio, first, RATE)
    assert len(clips) == 1 and 9.5 < clips[0] < 11.5  # the silent tail of the voice, with margins
    assert [w[0] for w in words] == [" one", " two.", " three", " three", " four"]
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(words))
    assert 14.5 < words[-1][1] < 16.5


def test_full_coverage_asks_for_nothing() -> None:
    audio = voice(10.0, [(1.0, 5.0)])
    words = [(" a", 1.0, 2.5, 0.9), (" b", 2.6, 5.0, 0.9)]
    assert fill_gaps(lambda clip: [(" x", 0.0, 1.0, 1.0)], audio, words, RATE) == words
