"""collect_transcripts in real Bytewax dataflows: exactly one final document per completed call, whatever the
order and repeats of its events; a provisional one after an idle timeout (then still the final one); the same
documents after a crash and a resume from recovery; bad events dead-lettered; forgotten calls forgotten.

Events come from the flow's own producers (tests/transcript_events.py): the stitcher and the real-time normaliser.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main
from transcript_events import (
    Chunking,
    batch_events,
    expected_texts,
    realtime_events,
    shuffled_with_repeats,
    spans,
    truth_words,
)

from bytewax.speechmatics.flows import CollectSettings, Produced, collect_transcripts
from bytewax.speechmatics.flows import collector as collector_module
from bytewax.speechmatics.flows.collector import CollectLogic
from bytewax.speechmatics.schemas import CallTranscript
from bytewax.speechmatics.schemas.call_transcript import validate_document
from bytewax.speechmatics.schemas.dead_letters import DeadLetter

DEADLINE_S = 60.0
FAILED = Chunking(failed=frozenset({1}))


def call_events(call_id: str, seed: int, chunking: Chunking = FAILED, rt_finals: int | None = None) -> list[dict]:
    truth = truth_words(18, seed=seed)
    return [*batch_events(call_id, truth, chunking), *realtime_events(call_id, truth, finals=rt_finals)]


def expected(call_id: str, seed: int, chunking: Chunking = FAILED) -> list[str]:
    truth = truth_words(18, seed=seed)
    return expected_texts(truth, spans(call_id, truth, chunking), chunking.failed)


def keyed(events: list[dict]) -> list[tuple[str, dict]]:
    return [(e["call_id"], e) for e in events]


def at_completion(items: list[tuple[str, object]], call_id: str) -> dict:
    """The document a collector must emit for `call_id`: its transcript at the event that completed it, in stream
    order (later events of the call do not change a delivered document)."""
    transcript = CallTranscript()
    for key, item in items:
        if key == call_id:
            transcript.apply(item.event if isinstance(item, Produced) else item)
            if transcript.completed:
                return transcript.to_document()
    raise AssertionError(f"{call_id} never completes in this stream")


def collecting_flow(source: object, documents: list, letters: list, config: CollectSettings | None = None
                    ) -> Dataflow:
    flow = Dataflow("collect_test")
    out = collect_transcripts("collect", op.input("in", flow, source), config)
    op.output("docs", out.oks, TestingSink(documents))
    op.output("letters", out.errs, TestingSink(letters))
    return flow


def test_one_final_document_per_completed_call_whatever_the_order() -> None:
    complete = call_events("call-a", seed=1)
    batch_only = batch_events("call-c", truth_words(18, seed=3))
    unfinished = call_events("call-b", seed=2)[:-8]  # its call_completed and last events have not arrived
    unfinished = [e for e in unfinished if e["type"] != "call_completed" or e["source"] != "batch"]
    items = keyed(shuffled_with_repeats([*complete, *unfinished], seed=7, repeats=20))
    items += [("call-c", Produced(e)) for e in batch_only] + [("call-c", Produced(batch_only[0]))]  # as stitched
    good = list(items)
    items.insert(5, ("call-a", {"event_id": "x", "call_id": "call-a"}))  # not a transcript event
    items.insert(9, ("call-a", {**complete[0], "call_id": "call-z"}))  # keyed to another call
    documents: list = []
    letters: list = []
    run_main(collecting_flow(TestingSource(items), documents, letters))

    assert sorted(call for call, _ in documents) == ["call-a", "call-c"]
    by_call = dict(documents)
    for call_id in ("call-a", "call-c"):
        document = by_call[call_id]
        validate_document(document)
        assert document["completed"] is True
        assert document == at_completion(good, call_id)
    assert [w["text"] for w in CallTranscript.from_events(complete).words] == expected("call-a", 1)
    batch_words = [w for w in by_call["call-a"]["words"] if w["confidence"] == 0.9]  # all in at completion
    assert batch_words == [w for w in CallTranscript.from_events(complete).words if w["confidence"] == 0.9]
    assert [w["text"] for w in by_call["call-c"]["words"]] == [w.text for w in truth_words(18, seed=3)]
    assert len(letters) == 2 and all(isinstance(d, DeadLetter) and d.stage == "collect" for d in letters)
    assert any("another call" in d.reason or "differs" in d.reason for d in letters)


class _Phases(StatefulSourcePartition):
    """Items in phases: a phase goes out once its gate opens (checked every 20 ms, until a deadline)."""

    def __init__(self, phases: list[tuple[Callable[[], bool], list]]) -> None:
        self.phases = list(phases)
        self.deadline = time.monotonic() + DEADLINE_S

    def next_batch(self) -> list:
        if not self.phases:
            raise StopIteration
        gate, items = self.phases[0]
        if not gate():
            if time.monotonic() > self.deadline:
                raise AssertionError("a phase's condition was not met before the deadline")
            return []
        self.phases.pop(0)
        return items

    def next_awake(self) -> datetime:
        return datetime.now(timezone.utc) + timedelta(milliseconds=20)

    def snapshot(self) -> None:
        return None


class PhasedSource(FixedPartitionedSource):
    def __init__(self, phases: list[tuple[Callable[[], bool], list]]) -> None:
        self.phases = phases

    def list_parts(self) -> list[str]:
        return ["only"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Phases:
        return _Phases(self.phases)


def test_an_idle_call_gets_a_provisional_document_then_its_final_one() -> None:
    events = call_events("call-i", seed=4)
    completion = next(e for e in events if e["type"] == "call_completed" and e["source"] == "batch")
    before = [e for e in events if e is not completion]
    documents: list = []

    def seen(n: int) -> Callable[[], bool]:
        return lambda: len(documents) >= n  # run_main: the source and the sink share one worker thread

    phases = [(lambda: True, keyed(before)),
              (seen(1), [("call-i", completion)]),  # only once the provisional document is out
              (seen(2), keyed(events))]  # a replay of everything after the final document: ignored
    letters: list = []
    run_main(collecting_flow(PhasedSource(phases), documents, letters,
                             CollectSettings(idle_seconds=0.2, forget_seconds=600)))
    assert [(call, d["completed"]) for call, d in documents] == [("call-i", False), ("call-i", True)]
    provisional, final = documents[0][1], documents[1][1]
    assert provisional == CallTranscript.from_events(before).to_document()
    assert [w["text"] for w in provisional["words"]] == expected("call-i", 4)  # all words in; only the end missing
    assert final == CallTranscript.from_events(events).to_document()
    assert letters == []


def test_without_an_idle_timeout_an_unfinished_call_gets_no_document_at_the_end_of_input() -> None:
    events = [e for e in call_events("call-u", seed=5) if e["type"] != "call_completed"]
    documents: list = []
    run_main(collecting_flow(TestingSource(keyed(events)), documents, []))
    assert documents == []
    idle = CollectSettings(idle_seconds=3600, forget_seconds=7200)
    run_main(collecting_flow(TestingSource(keyed(events)), documents, [], idle))
    assert [(c, d["completed"]) for c, d in documents] == [("call-u", False)]  # bounded input ended: provisional


def test_a_crashed_and_resumed_collector_emits_each_final_document_once(tmp_path: Path) -> None:
    calls = {f"call-{n}": call_events(f"call-{n}", seed=10 + n) for n in range(4)}
    stream = keyed(shuffled_with_repeats([e for events in calls.values() for e in events], seed=3, repeats=30))
    clean: list = []
    run_main(collecting_flow(TestingSource(stream), clean, []))
    assert sorted(c for c, _ in clean) == sorted(calls)

    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    items = list(stream)
    for at in sorted([len(stream) // 4, len(stream) // 2, 3 * len(stream) // 4], reverse=True):
        items.insert(at, TestingSource.ABORT())
    resumed: list = []
    for _ in range(4):
        flow = collecting_flow(TestingSource(items), resumed, [])
        run_main(flow, epoch_interval=timedelta(0), recovery_config=recovery)
    assert sorted(c for c, _ in resumed) == sorted(calls)  # each call once: none lost, none repeated
    assert dict(resumed) == dict(clean)
    for call_id, document in resumed:
        assert document == at_completion(stream, call_id)


def test_calls_are_forgotten_after_forget_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(collector_module, "_now", lambda: clock[0])
    events = call_events("call-f", seed=6)
    settings = CollectSettings(idle_seconds=5, forget_seconds=60)

    completion = next(e for e in events if e["type"] == "call_completed" and e["source"] == "batch")
    events = [*(e for e in events if e is not completion), completion]  # the completion comes last
    logic = CollectLogic(settings, None)
    for event in events[:-3]:
        logic.on_item(("call-f", event))
    assert logic.notify_at() == datetime.fromtimestamp(1005.0, tz=timezone.utc)  # the idle timeout first
    clock[0] = 1005.0
    out, discard = logic.on_notify()
    assert [d["completed"] for d in out] == [False] and not discard
    assert logic.notify_at() == datetime.fromtimestamp(1060.0, tz=timezone.utc)  # nothing changed since: forget
    state = logic.snapshot()
    clock[0] = 1010.0
    resumed = CollectLogic(settings, state)  # a resume from that snapshot carries on
    finals = [out for e in events[-3:] for out in resumed.on_item(("call-f", e))[0]]
    assert [d["completed"] for d in finals] == [True]
    assert resumed.on_item(("call-f", events[0])) == ([], False)  # a repeat after the final document: ignored
    assert resumed.notify_at() == datetime.fromtimestamp(1070.0, tz=timezone.utc)
    clock[0] = 1070.0
    assert resumed.on_notify() == ([], True)  # the tombstone goes

    silent = CollectLogic(CollectSettings(forget_seconds=60), None)
    silent.on_item(("call-f", events[0]))
    clock[0] = 1130.0
    assert silent.on_notify() == ([], True)  # an open call silent for forget_seconds is dropped without a document


def test_settings_refuse_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="BWSM_COLLECT_IDLE_SECONDS"):
        CollectSettings(idle_seconds=0)
    with pytest.raises(ValueError, match="must exceed"):
        CollectSettings(idle_seconds=10, forget_seconds=5)
