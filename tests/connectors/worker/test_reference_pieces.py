"""The reference engine finds a chunk sent with its silences shortened (pieces of the call back to back)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bytewax.speechmatics.connectors.worker.engines.reference import find_start, locate_pieces

FRAME_BYTES = 2


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31), st.lists(st.tuples(st.integers(50, 3000), st.integers(0, 6000)), min_size=1,
                                       max_size=6), st.integers(0, 400))
def test_every_piece_is_found_where_it_lies_in_the_call(seed, bursts, keep):
    """A call of noise bursts and silences; the chunk keeps each burst and at most `keep` frames of each silence
    (half after a burst, half before the next); every burst is located at its place in the call."""
    rng = np.random.default_rng(seed)
    call, sent, where = [], [], []  # where: (sent frame, call frame) of each burst
    at = 0
    for n, (loud, quiet) in enumerate(bursts):
        burst = rng.integers(-8000, 8000, loud).astype("<i2")
        where.append((sum(len(s) for s in sent), at))
        call.append(burst)
        sent.append(burst)
        call.append(np.zeros(quiet, dtype="<i2"))
        if n < len(bursts) - 1:
            sent.append(np.zeros(min(quiet, keep), dtype="<i2"))
        at += loud + quiet
    haystack, needle = np.concatenate(call).tobytes(), np.concatenate(sent).tobytes()
    first = find_start(haystack, needle, FRAME_BYTES)
    assert first == 0
    pieces = locate_pieces(haystack, needle, first, FRAME_BYTES)
    for (sent_at, call_at), (loud, _) in zip(where, bursts, strict=True):
        piece = next(p for p in pieces if p[0] <= sent_at < p[0] + p[2])
        assert piece[1] + (sent_at - piece[0]) == call_at  # the burst's first frame, at its call position
        assert sent_at + loud <= piece[0] + piece[2]  # the whole burst in that one piece
