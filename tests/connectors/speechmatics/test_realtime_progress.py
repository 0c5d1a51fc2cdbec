"""The bridge's persisted progress (pure): what is committed lets a restart resume every call exactly."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bytewax.speechmatics.connectors.speechmatics.realtime_progress import (
    MAX_METADATA_BYTES,
    CallProgress,
    PartitionProgress,
    decode_metadata,
    encode_metadata,
)


def test_commit_holds_at_the_oldest_open_call_and_lists_what_lies_ahead():
    p = PartitionProgress()
    a, _ = p.seen("a", 10)
    b, _ = p.seen("b", 11)
    p.seen("a", 12)
    p.seen("b", 13)
    a.acked_seq, a.sessions = 1, 1
    b.done = True
    offset, meta = p.commit_point()
    assert offset == 10
    assert decode_metadata(meta) == {"a": (1, 1, False), "b": (-1, 0, True)}
    a.done = True
    offset, meta = p.commit_point()
    assert offset == 14 and decode_metadata(meta) == {}  # every call behind the position: forgotten


def test_restored_progress_applies_when_the_call_is_read_again_and_survives_commits_until_then():
    p = PartitionProgress({"a": (7, 2, False), "b": (3, 1, True)})
    p.seen("x", 5)
    offset, meta = p.commit_point()
    assert offset == 5 and decode_metadata(meta) == {"x": (-1, 0, False), "a": (7, 2, False), "b": (3, 1, True)}
    a, new = p.seen("a", 6)
    assert new and (a.acked_seq, a.sessions, a.done) == (7, 2, False)


def test_unreadable_metadata_starts_afresh():
    assert decode_metadata(None) == {} and decode_metadata("x") == {} and decode_metadata('{"v": 9}') == {}


@given(st.dictionaries(st.text(min_size=1, max_size=60), st.tuples(st.integers(-1, 10**9), st.integers(0, 99),
                                                                    st.booleans()), max_size=200))
def test_metadata_round_trips_within_budget_open_calls_first(progress):
    calls = [CallProgress(c, i, i, *v) for i, (c, v) in enumerate(progress.items())]
    meta = encode_metadata(calls)
    assert len(meta.encode()) <= MAX_METADATA_BYTES + 16
    decoded = decode_metadata(meta)
    assert all(progress[c] == v for c, v in decoded.items())
    if any(v[2] for v in decoded.values()):  # a finished call is kept only when every open one is
        assert all(c in decoded for c, v in progress.items() if not v[2])
