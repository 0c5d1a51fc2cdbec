"""Silence compaction (flows/compaction.py): what is kept, what is sent, and that every time maps back exactly."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bytewax.speechmatics.flows.compaction import TimeMap, cut, keep_plan, map_transcript
from bytewax.speechmatics.flows.vad import speech_frames

RATE = 8000
FRAME = 240  # 30 ms at 8 kHz


@st.composite
def chunks(draw):
    """(speech flags per VAD frame, total samples, keep samples)."""
    speech = draw(st.lists(st.booleans(), min_size=1, max_size=300))
    tail = draw(st.integers(0, FRAME - 1))
    keep = draw(st.integers(0, 40)) * 100
    return speech, len(speech) * FRAME + tail, keep


def _runs(flags: list[bool], total: int) -> list[tuple[int, int, bool]]:
    """(first sample, end sample, speech) of each run of equal flags; the partial frame at the end is non-speech."""
    per_sample = np.repeat(np.array(flags, dtype=bool), FRAME)
    per_sample = np.concatenate([per_sample, np.zeros(total - len(per_sample), dtype=bool)])
    edges = [0, *(np.flatnonzero(np.diff(per_sample)) + 1).tolist(), total]
    return [(lo, hi, bool(per_sample[lo])) for lo, hi in zip(edges, edges[1:], strict=False)]


def _kept(plan: TimeMap, total: int) -> np.ndarray:
    kept = np.zeros(total, dtype=bool)
    for first, n in plan.pieces:
        kept[first : first + n] = True
    return kept


@settings(max_examples=300, deadline=None)
@given(chunks())
def test_speech_is_kept_whole_and_every_silence_shortened_to_the_keep(case):
    speech, total, keep = case
    plan = keep_plan(speech, FRAME, total, keep, RATE)
    if not any(speech):
        assert plan is None  # nothing to send
        return
    assert plan is not None
    ends = [first + n for first, n in plan.pieces]
    assert all(n > 0 for _, n in plan.pieces)
    assert all(e < first for e, (first, _) in zip(ends, plan.pieces[1:], strict=False))  # ordered, apart
    assert ends[-1] <= total
    kept = _kept(plan, total)
    for lo, hi, is_speech in _runs(speech, total):
        if is_speech:
            assert kept[lo:hi].all()
        else:
            allowed = keep - keep // 2 if lo == 0 else keep // 2 if hi == total else keep
            assert kept[lo:hi].sum() == min(hi - lo, allowed)


@settings(max_examples=300, deadline=None)
@given(chunks(), st.data())
def test_every_time_inside_a_kept_piece_maps_back_exactly(case, data):
    speech, total, keep = case
    plan = keep_plan(speech, FRAME, total, keep, RATE)
    if plan is None:
        return
    at = 0
    for first, n in plan.pieces:
        lo = data.draw(st.integers(0, n - 1))  # a start at a piece's end is the next piece's start
        hi = data.draw(st.integers(max(lo, 1), n))  # and an end at its start the end of the piece before
        sent_start, sent_end = (at + lo) / RATE, (at + hi) / RATE
        assert abs(plan.to_chunk(sent_start, end=False) - (first + lo) / RATE) < 1e-9
        assert abs(plan.to_chunk(sent_end, end=True) - (first + hi) / RATE) < 1e-9
        at += n
    assert at == plan.sent_samples


@settings(max_examples=200, deadline=None)
@given(chunks(), st.data())
def test_a_transcripts_words_and_punctuation_come_back_at_their_chunk_times(case, data):
    """Words inside the speech (anywhere: seams, gaps, chunk edges), a punctuation mark at each word's end."""
    speech, total, keep = case
    plan = keep_plan(speech, FRAME, total, keep, RATE)
    if plan is None:
        return
    sent_at, truth, results = 0, [], []
    for first, n in plan.pieces:
        cuts = sorted(data.draw(st.lists(st.integers(0, n), min_size=2, max_size=6, unique=True)))
        for lo, hi in zip(cuts[::2], cuts[1::2], strict=False):
            truth.append(((first + lo) / RATE, (first + hi) / RATE))
            results.append({"type": "word", "start_time": (sent_at + lo) / RATE, "end_time": (sent_at + hi) / RATE})
            truth.append(((first + hi) / RATE, (first + hi) / RATE))
            results.append({"type": "punctuation", "start_time": (sent_at + hi) / RATE,
                            "end_time": (sent_at + hi) / RATE})
        sent_at += n
    mapped = map_transcript({"results": results}, plan)["results"]
    for (start, end), result in zip(truth, mapped, strict=True):
        assert abs(result["start_time"] - start) < 1e-3 and abs(result["end_time"] - end) < 1e-3
        assert result["start_time"] <= result["end_time"]


@given(chunks(), st.sampled_from([(1, 2), (2, 2), (1, 1), (2, 1)]))
def test_the_audio_sent_is_the_kept_pieces_back_to_back_for_any_channel_count(case, shape):
    speech, total, keep = case
    channels, width = shape
    plan = keep_plan(speech, FRAME, total, keep, RATE)
    if plan is None:
        return
    frame_bytes = channels * width
    audio = np.arange(total * frame_bytes, dtype=np.uint32).astype(np.uint8).tobytes()
    sent = cut(audio, plan, frame_bytes)
    assert len(sent) == plan.sent_samples * frame_bytes
    kept = _kept(plan, total)
    expected = np.frombuffer(audio, dtype=np.uint8).reshape(total, frame_bytes)[kept].tobytes()
    assert sent == expected


def _tone(seconds: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    voice = np.sin(2 * np.pi * 180 * t) + 0.6 * np.sin(2 * np.pi * 360 * t) + 0.3 * np.sin(2 * np.pi * 720 * t)
    return (voice * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) * 8000).astype("<i2")


def test_speech_in_either_channel_is_speech():
    """A stereo chunk: the caller speaks in the first half, the agent in the second; neither half is silence."""
    quiet = np.zeros(RATE * 2, dtype="<i2")
    left = np.concatenate([_tone(2.0), quiet])
    right = np.concatenate([quiet, _tone(2.0)])
    stereo = np.stack([left, right], axis=1).reshape(-1).tobytes()
    flags = speech_frames(stereo, RATE, "pcm_s16le", 2, 2, 30)
    half = len(flags) // 2
    assert any(flags[:half]) and any(flags[half + 20 :])  # past any hangover of the first party
    assert not any(speech_frames(np.zeros(RATE * 8, dtype="<i2").tobytes(), RATE, "pcm_s16le", 2, 2, 30))


def test_a_word_at_a_seam_of_two_pieces_keeps_its_own_side() -> None:
    """Speech, 3 s of silence cut to 0.5 s, speech: a word starting where the second piece starts, a mark at the
    first piece's end, and a word across the seam (its start in the first piece, its end in the second)."""
    speech = [True] * 10 + [False] * 100 + [True] * 10  # 30 ms frames at 8 kHz
    plan = keep_plan(speech, FRAME, 120 * FRAME, RATE // 2, RATE)
    assert plan is not None and [n for _, n in plan.pieces] == [10 * FRAME + 2000, 2000 + 10 * FRAME]
    seam = (10 * FRAME + 2000) / RATE  # sent time of the seam
    second = (110 * FRAME - 2000) / RATE  # chunk time the second piece starts at
    results = [{"type": "punctuation", "start_time": seam, "end_time": seam},
               {"type": "word", "start_time": seam, "end_time": seam + 0.1},
               {"type": "word", "start_time": seam - 0.1, "end_time": seam + 0.1}]
    mapped = [(r["start_time"], r["end_time"]) for r in map_transcript({"results": results}, plan)["results"]]
    assert mapped == [(round(seam, 6), round(seam, 6)), (round(second, 6), round(second + 0.1, 6)),
                      (round(seam - 0.1, 6), round(second + 0.1, 6))]
