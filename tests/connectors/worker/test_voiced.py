"""Whisper's word times kept inside their channel's voice (engines/voiced.py)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bytewax.speechmatics.connectors.worker.engines.voiced import clamp_word, clamp_words, voiced_spans

RATE = 16000


def _tone_between(start: float, end: float, total: float) -> np.ndarray:
    audio = np.zeros(int(total * RATE), dtype=np.float32)
    t = np.arange(int((end - start) * RATE)) / RATE
    voice = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    audio[int(start * RATE): int(start * RATE) + len(voice)] = voice + 0.05 * np.sin(2 * np.pi * 1200 * t)
    return audio


def test_a_word_timed_in_silence_moves_onto_its_channels_voice():
    # the caller's "Hello?" timed 6.44-7.14 s while the caller speaks from 7.55 s
    audio = _tone_between(7.55, 8.4, 10.0)
    spans = voiced_spans(audio, RATE)
    assert spans and abs(spans[0][0] - 7.55) < 0.15
    [(_, start, end, _)] = clamp_words([(" Hello?", 6.44, 7.14, 0.9)], audio, RATE)
    assert start >= spans[0][0] and end <= spans[0][1] and end > start


def test_a_word_overlapping_the_voice_is_clipped_to_it():
    assert clamp_word(1.0, 2.0, [(1.4, 3.0)]) == (1.4, 2.0)
    assert clamp_word(1.0, 2.0, [(0.0, 1.5)]) == (1.0, 1.5)


def test_a_word_far_from_any_voice_keeps_its_times():
    assert clamp_word(1.0, 2.0, [(10.0, 11.0)]) == (1.0, 2.0)
    assert clamp_word(1.0, 2.0, []) == (1.0, 2.0)


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 30), st.floats(0, 3),
       st.lists(st.tuples(st.floats(0, 30), st.floats(0.03, 3)), max_size=6))
def test_a_clamped_word_is_ordered_and_inside_a_voiced_stretch_or_unmoved(start, length, raw):
    spans, last = [], -1.0
    for a, d in sorted(raw):
        if a > last:
            spans.append((a, a + d))
            last = a + d
    lo, hi = clamp_word(start, start + length, spans)
    assert lo <= hi
    assert (lo, hi) == (start, start + length) or any(a <= lo and hi <= b for a, b in spans) or \
        any(a < start + length and b > start for a, b in spans)
