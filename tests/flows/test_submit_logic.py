"""The submit operator's state machine (no HTTP): resume, replays, failures, fatal errors, snapshots.

The loop side is replaced by a recorder of the SubmitService interface; the real service is exercised
against the local worker in test_submit_flow.py / test_submit_process.py.
"""

from __future__ import annotations

import pickle

import pytest

from bytewax.speechmatics.connectors.speechmatics.service import ChunkDone, ChunkFailed, FatalSubmitError, JobKnown
from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings
from bytewax.speechmatics.flows.submitter import SubmitLogic, SubmitState
from bytewax.speechmatics.schemas.chunks import Chunk, ChunkResult, ChunkSpan
from bytewax.speechmatics.schemas.dead_letters import DeadLetter


class RecordingService:
    def __init__(self, **settings) -> None:
        self.settings = SubmitSettings(**{"skip_silence": False, **settings})  # these chunks are digital silence
        self.submitted = []
        self.events = []
        self.fatal = None
        self.done = []

    def submit(self, request) -> None:
        self.submitted.append(request)

    def take(self, call_id):
        events, self.events = self.events, []
        return events

    def wait(self, call_id, timeout):
        return self.take(call_id)

    def mark_done(self, reference) -> None:
        self.done.append(reference)


def chunk(index: int, last: bool = False) -> Chunk:
    span = ChunkSpan("call-1", index, index * 100, (index + 1) * 100, 0, 16000, "pcm_s16le", 1, last=last)
    return Chunk(span, bytes(200), (("calls.audio", 0, index, index),))


def test_job_id_enters_state_and_a_resumed_chunk_waits_for_that_job() -> None:
    service = RecordingService()
    logic = SubmitLogic(None, service, None)
    logic.on_item(chunk(0))
    service.events = [JobKnown(0, "job-a", 2)]
    assert logic.on_notify() == ([], False)
    saved = pickle.loads(pickle.dumps(logic.snapshot()))
    resumed_service = RecordingService()
    SubmitLogic(None, resumed_service, saved)
    assert [(r.chunk.span.index, r.job_id, r.attempts) for r in resumed_service.submitted] == [(0, "job-a", 2)]


def test_replayed_chunk_is_not_submitted_twice() -> None:
    service = RecordingService()
    logic = SubmitLogic(None, service, None)
    logic.on_item(chunk(0))
    logic.on_item(chunk(0))
    assert len(service.submitted) == 1
    service.events = [ChunkDone(0, "job-a", {"results": []}, 1)]
    out, discard = logic.on_notify()
    assert [type(o) for o in out] == [ChunkResult] and discard is True
    assert service.done == ["call-1/0"]


def test_failure_yields_a_dead_letter_and_a_failed_result() -> None:
    service = RecordingService()
    logic = SubmitLogic(None, service, None)
    logic.on_item(chunk(0))
    logic.on_item(chunk(1))
    service.events = [ChunkFailed(1, "job rejected: bad audio", "job-b", 2)]
    out, discard = logic.on_notify()
    letter, result = out
    assert isinstance(letter, DeadLetter) and isinstance(result, ChunkResult)
    assert result.error == letter.reason == "job rejected: bad audio" and result.job_id == "job-b"
    assert discard is False and logic.notify_at() is not None  # chunk 0 still pending


def test_fatal_error_is_raised_from_the_operator() -> None:
    service = RecordingService()
    logic = SubmitLogic(None, service, None)
    logic.on_item(chunk(0))
    service.fatal = "authentication failed (HTTP 401/403): SPEECHMATICS_API_KEY is wrong or lacks permission"
    with pytest.raises(FatalSubmitError, match="SPEECHMATICS_API_KEY"):
        logic.on_notify()


def test_speaker_chaining_hands_one_chunk_at_a_time_and_keeps_state_until_the_last() -> None:
    service = RecordingService(diarization="speaker")
    logic = SubmitLogic(None, service, None)
    for i in range(3):
        logic.on_item(chunk(i, last=i == 2))
    assert [r.chunk.span.index for r in service.submitted] == [0]
    assert service.submitted[0].speaker_config == {"get_speakers": True}
    service.events = [ChunkDone(0, "j0", {"results": [], "speakers": []}, 1)]
    logic.on_notify()
    assert [r.chunk.span.index for r in service.submitted] == [0, 1]


def test_snapshot_is_a_copy() -> None:
    service = RecordingService()
    logic = SubmitLogic(None, service, None)
    logic.on_item(chunk(0))
    snap = logic.snapshot()
    logic.on_item(chunk(1))
    assert isinstance(snap, SubmitState) and list(snap.pending) == [0]


def test_an_empty_last_chunk_is_answered_without_a_job() -> None:
    service = RecordingService()
    logic = SubmitLogic(None, service, None)
    span = ChunkSpan("call-1", 0, 0, 0, 0, 16000, "pcm_s16le", 1, last=True)
    out, discard = logic.on_item(Chunk(span, b""))
    assert service.submitted == []
    assert [(r.span.index, r.ok, r.transcript, r.job_id) for r in out] == [(0, True, {"results": []}, None)]
    assert discard is True
