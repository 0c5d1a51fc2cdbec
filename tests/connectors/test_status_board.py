"""The status board: a call is shown while its audio is uncut or its chunks are in flight, ids and counts only."""

from __future__ import annotations

from bytewax.speechmatics.connectors import metrics
from bytewax.speechmatics.connectors.status import CallBoard


def test_a_call_is_shown_until_cut_and_transcribed() -> None:
    board = CallBoard()
    board.chunker("c1", 12.5, 0, True)
    assert board.view(100.0)["calls"] == [{"call_id": "c1", "audio_seconds": 12.5, "chunks_cut": 0,
                                           "jobs_in_flight": 0, "oldest_pending_seconds": None}]
    board.chunker("c1", 30.0, 1, False)  # cut, flushed
    board.submitter("c1", 1, 95.0)
    view = board.view(100.0)
    assert (view["open_calls"], view["jobs_in_flight"]) == (1, 1)
    assert view["calls"][0]["oldest_pending_seconds"] == 5.0
    board.submitter("c1", 0, None)
    assert board.view(100.0) == {"open_calls": 0, "jobs_in_flight": 0, "calls": []}


def test_oldest_pending_job_first_and_gauges() -> None:
    board = CallBoard()
    board.submitter("young", 1, 99.0)
    board.submitter("old", 2, 10.0)
    board.chunker("idle", 3.0, 0, True)
    assert [c["call_id"] for c in board.view(100.0)["calls"]] == ["old", "young", "idle"]
    board.publish()
    assert metrics.OPEN_CALLS._value.get() == 3  # noqa: SLF001
    assert metrics.CHUNKS_PENDING._value.get() == 3  # noqa: SLF001
