"""The overlap merge with a real recogniser's artefacts: each chunk mishears the word its edge cuts, times move a
little between the chunks, a chunk may invent a word at its edge. The merge aligns the two chunks' words in the
overlap and hands over where both agree, so the damaged edge words of either chunk never reach the transcript.
(The reference engine's exact properties are in test_stitch_properties.py.)"""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bytewax.speechmatics.flows.stitching import (
    CallTimeline,
    Completion,
    StitchSettings,
    Token,
    Unit,
    _align,
    normalised,
)
from bytewax.speechmatics.schemas.chunks import ChunkResult, ChunkSpan

RATE = 16000
VOCAB = ["the", "and", "of", "words", "ecclesiastical", "corpus", "but", "first", "a"]


def unit(text: str, start: float, end: float, channel: str | None = None) -> Unit:
    return Unit(Token(text, start, end, 0.9, None, "word", channel))


def span(index: int, start: float, end: float, overlap: float, last: bool) -> ChunkSpan:
    return ChunkSpan("call-m", index, round(start * RATE), round(end * RATE), round(overlap * RATE), RATE,
                     "pcm_s16le", 1, last=last, closed_at=float(index))


def result(s: ChunkSpan, words: list[tuple[str, float, float]]) -> ChunkResult:
    results = [{"type": "word", "start_time": round(a - s.start_time, 6), "end_time": round(b - s.start_time, 6),
                "alternatives": [{"content": t, "confidence": 0.9}]} for t, a, b in words]
    return ChunkResult(s, {"format": "2.9", "results": results}, job_id=f"job-{s.index}", attempts=1)


def stitch(results: list[ChunkResult], cfg: StitchSettings) -> list[str]:
    timeline, out = CallTimeline("call-m"), []
    for r in results:
        for item in timeline.push(r, cfg):
            if not isinstance(item, Completion):
                out += [u.host.text for u in item.units]
    return out


def test_normalised_ignores_case_and_punctuation_but_keeps_apostrophes() -> None:
    assert normalised("Don't,") == "don't"
    assert normalised("ECCLESIASTICAL.") == "ecclesiastical"
    assert normalised("...") == ""


def test_repeated_words_pair_with_their_own_copies() -> None:
    left = [unit("words", 10.0, 10.3), unit("words", 10.4, 10.7), unit("words", 10.8, 11.1)]
    right = [unit("words", 10.45, 10.72), unit("words", 10.82, 11.05), unit("words", 11.2, 11.5)]
    assert _align(left, right) == [(1, 0), (2, 1)]


def test_copies_that_do_not_intersect_or_differ_in_channel_are_not_paired() -> None:
    assert _align([unit("but", 1.0, 1.2)], [unit("but", 1.2, 1.4)]) == []
    assert _align([unit("but", 1.0, 1.2, "agent")], [unit("but", 1.0, 1.2, "caller")]) == []


def test_a_word_misheard_at_either_edge_is_taken_from_the_chunk_that_heard_it_whole() -> None:
    # Chunk 0 is [0, 12]; chunk 1 starts at 10 (2 s overlap). Chunk 0 mishears "ecclesiastical", cut at 12;
    # chunk 1 mishears "corpus", cut at 10, and invents "uh" at its very start.
    s0, s1 = span(0, 0, 12, 0, False), span(1, 10, 20, 2, True)
    truth = [("the", 8.0, 8.3), ("corpus", 9.7, 10.3), ("of", 10.5, 10.7), ("the", 10.8, 11.0),
             ("first", 11.1, 11.5), ("ecclesiastical", 11.6, 12.4), ("court", 12.5, 12.9)]
    r0 = result(s0, [*truth[:5], ("ecclesiast", 11.6, 12.0)])
    r1 = result(s1, [("uh", 10.0, 10.1), ("cork", 10.1, 10.3), *truth[2:]])
    cfg = StitchSettings(hold_seconds=1.5)
    assert stitch([r0, r1], cfg) == [t for t, _, _ in truth]
    assert stitch([r1, r0], cfg) == [t for t, _, _ in truth]


@st.composite
def recognised_seam(draw):  # noqa: ANN001, ANN201
    """A truth of words on one channel, two chunks overlapping by 2-6 s, and what a recogniser returns for each:
    every word it heard whole (times jittered a little), the word cut by its edge misheard and clipped,
    sometimes a word it invents at its edge, and words inside the overlap the two chunks hear differently
    (the new chunk splits one in two), which the alignment cannot pair."""
    words, t = [], draw(st.floats(0.0, 0.5))
    for _ in range(draw(st.integers(8, 40))):
        t += draw(st.floats(0.05, 0.6))
        duration = draw(st.floats(0.2, 0.8))
        words.append((draw(st.sampled_from(VOCAB)), round(t, 3), round(t + duration, 3)))
        t += duration
    end = t + 0.5
    overlap = draw(st.floats(2.0, 6.0))
    b = draw(st.floats(overlap + 0.5, max(overlap + 0.6, end - 0.5)))
    a = b - overlap
    assume(a > 0.5 and b < end)
    jitter = st.floats(-0.05, 0.05)
    disputed = {n for n, (_, s, e) in enumerate(words) if a + 0.2 < s and e < b - 0.2 and draw(st.integers(0, 4)) == 0}

    def heard(lo: float, hi: float, edge_lo: bool, edge_hi: bool, new: bool) -> list[tuple[str, float, float]]:
        out = []
        for n, (text, s, e) in enumerate(words):
            if e <= lo or s >= hi:
                continue
            if s < lo and edge_lo or e > hi and edge_hi:  # cut by the edge: misheard, clipped
                out.append((text[:2] + "~", max(s, lo), min(e, hi)))
            elif n in disputed and new:
                mid = (s + e) / 2
                out += [(text + "_r1", s, mid), (text + "_r2", mid, e)]
            elif n in disputed:
                out.append((text + "_l", s, e))
            else:
                out.append((text, max(lo, s + draw(jitter)), min(hi, e + draw(jitter))))
        return out

    left = heard(0.0, b, False, True, False)
    right = heard(a, end, True, False, True)
    if draw(st.booleans()):
        right.insert(0, ("uh", a, a + 0.05))
    if draw(st.booleans()):
        left.append(("mm", b - 0.05, b))
    agreed = [w for n, w in enumerate(words) if n not in disputed and a + 0.3 < w[1] and w[2] < b - 0.3]
    assume(len(agreed) >= 1)  # the overlap holds a word both chunks heard whole and alike
    return words, disputed, a, b, end, left, right, overlap


@settings(max_examples=300, deadline=None)
@given(case=recognised_seam())
def test_edge_damage_never_reaches_the_transcript_and_no_word_is_lost_or_doubled(case) -> None:  # noqa: ANN001
    words, disputed, a, b, end, left, right, overlap = case
    s0, s1 = span(0, 0.0, b, 0.0, False), span(1, a, end, overlap, True)
    cfg = StitchSettings(hold_seconds=overlap / 2 + 0.5, context_seconds=overlap + 2)
    got = stitch([result(s0, left), result(s1, right)], cfg)
    # Each word once; a disputed word as one chunk's version whole (never both, never half of each).
    rest = list(got)
    for n, (text, _, _) in enumerate(words):
        if n in disputed and rest[:1] == [text + "_l"]:
            rest = rest[1:]
        elif n in disputed:
            assert rest[:2] == [text + "_r1", text + "_r2"], (n, got)
            rest = rest[2:]
        else:
            assert rest[:1] == [text], (n, got)
            rest = rest[1:]
    assert rest == []


def test_forced_vad_cuts_overlap_and_go_through_the_same_merge() -> None:
    """Speech without pauses makes the VAD policy force cuts at its maximum, with the fixed overlap; the stitcher
    merges those seams like fixed windows' (it knows no policy, only the spans' overlap)."""
    import numpy as np

    from bytewax.speechmatics.flows.chunking import CallChunker, ChunkConfig
    from bytewax.speechmatics.schemas.chunks import Chunk
    from bytewax.speechmatics.schemas.frames import AudioFrame

    cfg = ChunkConfig(policy="vad", vad_min_seconds=4.0, vad_max_seconds=6.0, overlap_seconds=1.0)
    noise = (np.random.default_rng(1).standard_normal(16 * RATE) * 8000).astype("<i2").tobytes()
    chunker, out = CallChunker(cfg, clock=lambda: 0.0), []
    frames = [noise[i:i + 640] for i in range(0, len(noise), 640)]
    for seq, frame in enumerate(frames):
        chunker.push(AudioFrame("call-m", seq, frame, RATE, end=seq == len(frames) - 1), out)
    spans = [c.span for c in out if isinstance(c, Chunk)]
    assert len(spans) >= 3 and all(s.overlap_samples == RATE for s in spans[1:])  # forced, with 1 s overlap

    truth = [(VOCAB[n % len(VOCAB)], 0.2 + 0.5 * n, 0.2 + 0.5 * n + 0.4) for n in range(31)]

    def heard(s: ChunkSpan) -> list[tuple[str, float, float]]:
        lo, hi = s.start_time, s.end_time
        return [(t[:2] + "~" if (a < lo and s.index) or (b > hi and not s.last) else t, max(a, lo), min(b, hi))
                for t, a, b in truth if b > lo and a < hi]

    results = [result(s, heard(s)) for s in spans]
    assert stitch(results, StitchSettings()) == [t for t, _, _ in truth]
