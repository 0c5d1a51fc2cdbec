"""FrameMarks answers what the plain list of (sample, source) pairs it replaced answered, for any frames."""

from __future__ import annotations

import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from bytewax.speechmatics.flows.frame_marks import FrameMarks

Source = tuple[str, int, int] | None


def naive_sources(marks: list[tuple[int, Source]], end: int, lo: int, hi: int) -> tuple:
    ends = [m[0] for m in marks[1:]] + [end][: len(marks)]
    ranges: dict[tuple[str, int], list[int]] = {}
    for (b, src), e in zip(marks, ends, strict=True):
        if src is None or not ((b < hi and e > lo) or (b == e and lo <= b <= hi)):
            continue
        seen = ranges.setdefault(src[:2], [src[2], src[2]])
        seen[0], seen[1] = min(seen[0], src[2]), max(seen[1], src[2])
    return tuple((t, p, a, b) for (t, p), (a, b) in ranges.items())


def naive_kept(marks: list[tuple[int, Source]], end: int, cut: int) -> list[tuple[int, Source]]:
    ends = [m[0] for m in marks[1:]] + [end][: len(marks)]
    return [(b, s) for (b, s), e in zip(marks, ends, strict=True) if e > cut or b >= cut]


frames = st.lists(st.tuples(st.integers(0, 400),  # frame length in samples (0: an empty end frame)
                            st.one_of(st.none(), st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 2),
                                                           st.integers(0, 10_000)))), max_size=40)


@settings(max_examples=300, deadline=None)
@given(frames, st.integers(0, 20_000), st.integers(0, 20_000), st.booleans())
def test_marks_match_the_list_of_pairs(spec: list, x: int, y: int, include_hi: bool) -> None:
    marks, pairs, pos = FrameMarks(), [], 0
    for length, src in spec:
        marks.add(pos, None) if src is None else marks.add(pos, *src)
        pairs.append((pos, src))
        pos += length
    lo, hi = min(x, y, pos), min(max(x, y), pos)
    assert marks.source_ranges(lo, hi, pos) == naive_sources(pairs, pos, lo, hi)
    assert marks.gaps(lo, hi, include_hi) == sum(1 for b, s in pairs if s is None and lo <= b and
                                                 (b < hi or (include_hi and b == hi)))
    restored = FrameMarks(pickle.loads(pickle.dumps(marks.state())))
    restored.drop_before(restored.first_kept(lo, pos))
    kept = naive_kept(pairs, pos, lo)
    assert list(restored.begins) == [b for b, _ in kept]
    assert restored.source_ranges(lo, pos, pos) == naive_sources(kept, pos, lo, pos)
