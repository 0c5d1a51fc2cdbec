"""Property tests of the chunking policy over random formats, frame sizes, orders, duplicates, gaps and lengths."""

from __future__ import annotations

import random

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_chunking_helpers import (
    add_duplicates,
    bounded_shuffle,
    encode_call,
    frames_for,
    quiet,
    run_chunker,
    speech_like,
    strip_clock,
)

from bytewax.speechmatics.flows.chunking import ChunkConfig, silence
from bytewax.speechmatics.schemas.chunks import CallStarted, Chunk
from bytewax.speechmatics.schemas.frames import BYTES_PER_SAMPLE, SAMPLE_RATES, AudioFrame

FORMATS = st.tuples(st.sampled_from(SAMPLE_RATES), st.sampled_from(sorted(BYTES_PER_SAMPLE)), st.sampled_from([1, 2]))


def expected_audio(frames: list[AudioFrame], lost: set[int], arrivals: list[AudioFrame]) -> bytes:
    """The call as the chunker must rebuild it: lost frames are silence as long as the frame before them
    (or, before any frame, the first frame received)."""
    width = frames[0].frame_bytes
    first_received = arrivals[0].samples
    parts, previous = [], None
    for f in frames:
        if f.seq in lost:
            samples = previous if previous is not None else first_received
            parts.append(silence(f.encoding, samples * width))
        else:
            parts.append(f.audio)
            previous = f.samples if f.audio else previous
    return b"".join(parts)


def check_chunks(chunks: list[Chunk], config: ChunkConfig) -> None:
    """Structure every run must have: contiguous indices, overlaps that repeat, spans within the maximum."""
    assert [c.span.index for c in chunks] == list(range(len(chunks)))
    assert [c.span.last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    previous = None
    for c in chunks:
        s = c.span
        width = BYTES_PER_SAMPLE[s.encoding] * s.channels
        assert len(c.audio) == (s.end_sample - s.start_sample) * width
        assert s.end_sample - s.start_sample <= round(config.max_seconds * s.sample_rate)
        if previous is None:
            assert s.start_sample == 0 and s.overlap_samples == 0
        else:
            assert s.start_sample == previous.span.end_sample - s.overlap_samples
            head = s.overlap_samples * width
            assert c.audio[:head] == previous.audio[len(previous.audio) - head :]
        previous = c


@st.composite
def calls(draw: st.DrawFn) -> tuple[ChunkConfig, list[AudioFrame], list[AudioFrame], set[int]]:
    rate, encoding, channels = draw(FORMATS)
    config = ChunkConfig(
        chunk_seconds=draw(st.sampled_from([0.25, 0.5, 1.0])),
        overlap_seconds=draw(st.sampled_from([0.0, 0.01, 0.1])),
        reorder_window_frames=draw(st.integers(1, 8)),
    )
    width = BYTES_PER_SAMPLE[encoding] * channels
    sizes = draw(st.one_of(
        st.lists(st.sampled_from([rate // 100, rate // 50, rate // 10]), min_size=1, max_size=1),  # steady
        st.lists(st.integers(1, rate // 5), min_size=1, max_size=12),  # ragged
    ))
    seconds = draw(st.floats(0.0, 3.0))
    rng = random.Random(draw(st.integers(0, 2**32)))
    audio = rng.randbytes(int(seconds * rate) * width)
    frames = frames_for("call-1", audio, sizes, (rate, encoding, channels), first_offset=draw(st.integers(0, 10**9)))
    lost = set(draw(st.lists(st.sampled_from(range(len(frames) - 1)), max_size=5))) if len(frames) > 1 else set()
    arrivals = bounded_shuffle([f for f in frames if f.seq not in lost], config.reorder_window_frames, rng)
    arrivals = add_duplicates(arrivals, draw(st.integers(0, 10)), rng)
    return config, frames, arrivals, lost


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls(), st.data())
def test_chunks_minus_overlaps_rebuild_the_call_exactly(call, data) -> None:
    config, frames, arrivals, lost = call
    out = run_chunker(config, arrivals)
    chunks = [o for o in out if isinstance(o, Chunk)]
    assert len(chunks) == len(out) - 1 and isinstance(out[0], CallStarted)  # announced first, nothing refused
    check_chunks(chunks, config)
    assert b"".join(c.new_audio for c in chunks) == expected_audio(frames, lost, arrivals)
    assert sum(c.span.gaps_filled for c in chunks) == len(lost)
    covered = {o for c in chunks for (_, _, lo, hi) in c.source for o in range(lo, hi + 1)}
    assert {f.offset for f in frames if f.seq not in lost} <= covered
    # A chunker restored from snapshots taken anywhere cuts the very same chunks.
    stops = data.draw(st.lists(st.integers(0, len(arrivals) - 1), max_size=4))
    # The call is announced exactly once, however often it is restored.
    assert [strip_clock(c) for c in run_chunker(config, arrivals, restore_at=stops)] == [strip_clock(c) for c in out]


@st.composite
def spoken_calls(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, int]], tuple[int, str, int], list[int]]:
    """Speech-like regions separated by silences (some shorter than the minimum pause), with their bounds."""
    rate, encoding, channels = draw(FORMATS)
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    level = draw(st.sampled_from([0.0, 3.0]))
    parts, silences, pos = [], [], 0
    for _ in range(draw(st.integers(2, 12))):
        n = int(draw(st.floats(0.3, 6.0)) * rate)
        parts.append(speech_like(n, rate, rng))
        pos += n
        gap = int(draw(st.floats(0.05, 1.2)) * rate)
        parts.append(quiet(gap, rng, level))
        silences.append((pos, pos + gap))
        pos += gap
    audio = encode_call(np.concatenate(parts), encoding, channels)
    sizes = [draw(st.sampled_from([rate // 50, rate // 10, rate // 4]))]
    return audio, silences, (rate, encoding, channels), sizes


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spoken_calls(), st.sampled_from([10, 20, 30]), st.sampled_from([0, 2, 3]), st.data())
def test_unforced_vad_cuts_lie_in_silence(call, frame_ms: int, aggressiveness: int, data) -> None:
    audio, silences, fmt, sizes = call
    config = ChunkConfig(policy="vad", vad_min_seconds=3.0, vad_max_seconds=5.0, vad_min_silence_seconds=0.3,
                         overlap_seconds=0.2, vad_frame_ms=frame_ms, vad_aggressiveness=aggressiveness)
    frames = frames_for("call-1", audio, sizes, fmt)
    out = run_chunker(config, frames)
    chunks = [o for o in out if isinstance(o, Chunk)]
    check_chunks(chunks, config)
    assert b"".join(c.new_audio for c in chunks) == audio
    for before, after in zip(chunks, chunks[1:], strict=False):
        if after.span.overlap_samples == 0:  # unforced: cut at a pause
            cut = before.span.end_sample
            assert any(lo <= cut < hi for lo, hi in silences), f"cut at {cut} is not in a silence: {silences}"
            assert before.span.end_sample - before.span.start_sample >= 3.0 * fmt[0]
        else:  # forced: at the maximum exactly
            assert before.span.end_sample - before.span.start_sample == 5 * fmt[0]
    stops = data.draw(st.lists(st.integers(0, len(frames) - 1), max_size=3))
    assert [strip_clock(c) for c in run_chunker(config, frames, restore_at=stops)] == [strip_clock(c) for c in out]
