"""Real-time normalisation: real-shaped Speechmatics RT messages become transcript events in the batch schema,
partials are replaced by their finals, and bad messages become dead letters without stopping the call."""

from __future__ import annotations

import json
from pathlib import Path

import bytewax.operators as op
import jsonschema
import orjson
import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import given, settings
from hypothesis import strategies as st

from bytewax.speechmatics.flows.realtime import RealtimeState, normalize, normalize_realtime
from bytewax.speechmatics.schemas.dead_letters import DeadLetter
from bytewax.speechmatics.schemas.errors import ContractError

SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "transcript_event.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def _result(text: str, start: float, end: float, speaker: str = "S1") -> dict:
    if text in ",.?":
        return {"type": "punctuation", "start_time": end, "end_time": end, "attaches_to": "previous",
                "is_eos": text != ",",
                "alternatives": [{"content": text, "confidence": 1.0, "language": "en", "speaker": speaker}]}
    return {"type": "word", "start_time": start, "end_time": end,
            "alternatives": [{"content": text, "confidence": 0.93, "language": "en", "speaker": speaker}]}


def transcript(kind: str, words: list[tuple[str, float, float]], *, start: float | None = None,
               channel: str | None = None) -> dict:
    """An AddPartialTranscript / AddTranscript message as the RT API sends it."""
    results = [_result(*w) for w in words]
    text = " ".join(w[0] for w in words).replace(" ,", ",").replace(" .", ".")
    meta_start = start if start is not None else (words[0][1] if words else 0.0)
    message = {"message": kind, "format": "2.9",
               "metadata": {"start_time": meta_start, "end_time": words[-1][2] if words else meta_start,
                            "transcript": text},
               "results": results}
    if channel is not None:
        message["channel"] = channel
    return message


GOOD = ("Good", 0.48, 0.80)
MORNING = ("morning", 0.80, 1.20)
COMMA = (",", 1.20, 1.20)
EVERYONE = ("everyone", 1.30, 1.80)
DOT = (".", 1.80, 1.80)
LETS = ("Let's", 2.00, 2.20)
BEGIN = ("begin", 2.20, 2.50)

#: Seed 001's session: partials grow, finals confirm a prefix, the rest comes back in the next partials.
SESSION = [
    {"message": "RecognitionStarted", "id": "abc"},
    transcript("AddPartialTranscript", [GOOD]),
    transcript("AddPartialTranscript", [GOOD, MORNING]),
    transcript("AddPartialTranscript", [("Good", 0.44, 0.80), MORNING, EVERYONE], start=0.44),  # start shifted
    transcript("AddTranscript", [GOOD, MORNING, COMMA]),
    transcript("AddPartialTranscript", [EVERYONE, DOT, LETS]),
    {"message": "SpeakersResult", "speakers": [{"label": "S1", "speaker_identifiers": ["x"]}]},
    transcript("AddTranscript", [], start=1.2),  # nothing finalised: must not end the segment
    transcript("AddTranscript", [EVERYONE, DOT]),
    {"message": "EndOfUtterance", "metadata": {"start_time": 1.8, "end_time": 1.8}},
    transcript("AddPartialTranscript", [LETS, BEGIN]),
    transcript("AddTranscript", [LETS, BEGIN, (".", 2.5, 2.5)]),
    {"message": "EndOfTranscript"},
]


def run(messages: list[dict], call_id: str = "call-rt") -> tuple[list[dict], RealtimeState]:
    state = RealtimeState()
    events = [e for m in messages for e in normalize(call_id, m, state)]
    for event in events:
        VALIDATOR.validate(event)
    return events, state


def segments(events: list[dict]) -> list[dict]:
    return [e for e in events if e["type"] == "segment"]


def latest_by_id(events: list[dict]) -> dict[str, dict]:
    """What a consumer that keeps the latest event per id ends up with."""
    out: dict[str, dict] = {}
    for event in events:
        out[event["event_id"]] = event
    return out


def test_partials_are_replaced_by_their_finals() -> None:
    everything, state = run(SESSION)
    assert state.ended
    assert [e["type"] for e in everything] == ["call_started", *["segment"] * 6, "utterance_end", "segment",
                                               "segment", "call_completed"]
    assert all(e["source"] == "realtime" for e in everything)
    events = segments(everything)
    assert [e["is_final"] for e in events] == [False, False, False, True, False, True, False, True]
    kept = latest_by_id(events)
    assert all(e["is_final"] for e in kept.values())
    assert [e["transcript"] for e in kept.values()] == ["Good morning,", "everyone.", "Let's begin."]
    # Each final took over the id of the partials it confirmed, including the one whose start time shifted.
    ids = [e["event_id"] for e in events]
    assert ids[0] == ids[1] == ids[2] == ids[3]
    assert ids[4] == ids[5] != ids[3]
    assert ids[6] == ids[7] != ids[5]


def test_words_speakers_and_times_follow_the_messages() -> None:
    all_events, _ = run(SESSION)
    events = segments(all_events)
    final = events[3]
    assert [(w["text"], w["type"], w["start_time"], w["end_time"]) for w in final["words"]] == [
        ("Good", "word", 0.48, 0.8), ("morning", "word", 0.8, 1.2), (",", "punctuation", 1.2, 1.2)]
    assert final["words"][2]["attaches_to"] == "previous"
    assert final["speakers"] == ["S1"] and final["language"] == "en"
    assert (final["start_time"], final["end_time"]) == (0.48, 1.2)
    assert events[2]["start_time"] == 0.44


def test_ids_are_deterministic_and_per_call_and_channel() -> None:
    first, _ = run(SESSION)
    again, _ = run(SESSION)
    assert orjson.dumps(first) == orjson.dumps(again)
    other, _ = run(SESSION, call_id="call-other")
    assert {e["event_id"] for e in first}.isdisjoint(e["event_id"] for e in other)
    agent = transcript("AddTranscript", [GOOD], channel="agent")
    caller = transcript("AddTranscript", [GOOD], channel="caller")
    events, _ = run([agent, caller])
    assert events[0]["event_id"] != events[1]["event_id"]
    assert [e["channel"] for e in events] == ["agent", "caller"]


def test_a_reconnected_session_never_reuses_ids() -> None:
    first, _ = run([{"message": "RecognitionStarted", "id": "s1"}, transcript("AddTranscript", [GOOD])])
    again, _ = run([{"message": "RecognitionStarted", "id": "s2"}, transcript("AddTranscript", [GOOD])])
    assert first[0]["event_id"] != again[0]["event_id"]
    state = RealtimeState()
    events = [e for m in [*SESSION, {"message": "RecognitionStarted", "id": "next"}, *SESSION[1:5]]
              for e in normalize("call-rt", m, state)]
    assert len({e["event_id"] for e in segments(events)}) == 4
    started = [e["event_id"] for e in events if e["type"] == "call_started"]
    assert len(started) == 2 and len(set(started)) == 2


def test_an_emptied_partial_clears_what_it_showed() -> None:
    events, _ = run([transcript("AddPartialTranscript", []),  # nothing shown yet: no event
                     transcript("AddPartialTranscript", [GOOD]),
                     transcript("AddPartialTranscript", [], start=0.8)])
    assert [e["transcript"] for e in events] == ["Good", ""]
    assert events[0]["event_id"] == events[1]["event_id"]


@pytest.mark.parametrize("message", [
    {"message": "Nonsense"},
    {"no": "message"},
    {"message": "AddTranscript", "results": "x"},
    {"message": "AddTranscript", "results": [{"type": "word", "start_time": "0", "end_time": 1,
                                              "alternatives": [{"content": "a"}]}]},
])
def test_malformed_messages_are_contract_errors(message: dict) -> None:
    with pytest.raises(ContractError):
        normalize("c", message, RealtimeState())


def test_realtime_branch_in_a_dataflow() -> None:
    """The branch inside Bytewax: events in order per call, a bad message dead-lettered, the call unaffected."""
    pairs = [(b"call-a", orjson.dumps(m)) for m in SESSION[:5]]
    pairs.insert(2, (b"call-a", b"\x00not json"))
    pairs += [(b"call-b", orjson.dumps(SESSION[4])), (None, b"{}"), (b"call-c", None)]
    inputs = [KafkaSourceMessage(key=k, value=v, topic="calls.rt", partition=0, offset=i)
              for i, (k, v) in enumerate(pairs)]
    flow = Dataflow("rt_test")
    stream = op.input("in", flow, TestingSource(inputs))
    outputs = normalize_realtime("rt", stream)
    events, dead = [], []
    op.output("events", outputs.oks, TestingSink(events))
    op.output("dead", outputs.errs, TestingSink(dead))
    run_main(flow)
    a = [p.event for key, p in events if key == "call-a" and p.event["type"] == "segment"]
    assert [e["transcript"] for e in a] == ["Good", "Good morning", "Good morning everyone", "Good morning,"]
    assert [p.event["transcript"] for key, p in events if key == "call-b"] == ["Good morning,"]
    assert all(p.closed_at is None for _, p in events)
    assert len(dead) == 3
    letter = next(d for d in dead if d.key == b"call-a")
    assert isinstance(letter, DeadLetter)
    assert letter.stage == "realtime" and "not JSON" in letter.reason and letter.value == b"\x00not json"
    assert any("no key" in d.reason for d in dead) and any("tombstone" in d.reason for d in dead)
    for _, p in events:
        VALIDATOR.validate(p.event)


@given(st.data())
@settings(max_examples=100, deadline=None)
def test_a_consumer_keeping_the_latest_event_per_id_ends_with_exactly_the_finals(data) -> None:  # noqa: ANN001
    """Random sessions: partials show growing (re-timed) prefixes of what is pending, finals confirm a prefix."""
    n = data.draw(st.integers(1, 25))
    words = [(f"w{i}", i * 0.5, i * 0.5 + 0.4) for i in range(n)]
    messages, done = [], 0
    while done < n:
        confirm = data.draw(st.integers(1, n - done))
        for shown in sorted(data.draw(st.lists(st.integers(1, n - done), max_size=4))):
            shift = data.draw(st.sampled_from([0.0, -0.04, 0.03]))
            pending = [(t, max(0.0, s + shift), e) for t, s, e in words[done:done + shown]]
            messages.append(transcript("AddPartialTranscript", pending))
        if data.draw(st.booleans()):
            messages.append(transcript("AddTranscript", [], start=words[done][1]))
        messages.append(transcript("AddTranscript", words[done:done + confirm]))
        done += confirm
    events, _ = run(messages)
    kept = latest_by_id(events)
    assert all(e["is_final"] for e in kept.values())
    assert " ".join(e["transcript"] for e in kept.values()) == " ".join(t for t, _, _ in words)
    assert all(not e["is_final"] for e in events if e["event_id"] not in kept or kept[e["event_id"]] is not e)


@pytest.mark.parametrize("raw", [b'{"message": ["x"]}', b'{"message": 7}', b'{"message": "AddTranscript", '
                                 b'"results": [{"type": "word", "start_time": "x"}]}', b"[1]", b"\xff"])
def test_malformed_rt_messages_are_dead_lettered_not_fatal(raw: bytes) -> None:
    from bytewax.speechmatics.flows.realtime import RealtimeLogic
    from bytewax.speechmatics.schemas.dead_letters import DeadLetter

    out, discard = RealtimeLogic(None).on_item(("call-rt", raw))
    assert len(out) == 1 and isinstance(out[0], DeadLetter) and out[0].value == raw
    assert "call-rt" in out[0].reason and discard is True  # refused on a call never seen: no state is created
    live = RealtimeLogic(None)
    live.on_item(("call-rt", b'{"message": "RecognitionStarted", "id": "s1"}'))
    out, discard = live.on_item(("call-rt", raw))
    assert isinstance(out[0], DeadLetter) and discard is False  # a live session goes on


def test_a_session_that_goes_silent_is_forgotten_after_the_idle_time() -> None:
    from bytewax.speechmatics.flows.realtime import RealtimeLogic

    logic = RealtimeLogic(None, idle_seconds=3600)
    logic.on_item(("call-rt", b'{"message": "RecognitionStarted", "id": "s1"}'))
    assert logic.notify_at().timestamp() == pytest.approx(logic.state.last_seen + 3600, abs=1e-3)
    assert logic.on_notify() == ([], False)  # not yet
    logic.state.last_seen -= 3601
    assert logic.on_notify() == ([], True)


# ---- the session lifecycle: every ServerMessageType of the speechmatics-rt SDK has a mapping ------------------

#: The SDK's ServerMessageType values (speechmatics-rt, speechmatics/rt/_models.py), with a minimal real message.
SDK_MESSAGES = {
    "RecognitionStarted": {"message": "RecognitionStarted", "id": "s-9", "orchestrator_version": "x",
                           "language_pack_info": {"language_description": "English", "word_delimiter": " "}},
    "AudioAdded": {"message": "AudioAdded", "seq_no": 3},
    "AddPartialTranscript": transcript("AddPartialTranscript", [GOOD]),
    "AddTranscript": transcript("AddTranscript", [GOOD]),
    "EndOfTranscript": {"message": "EndOfTranscript"},
    "EndOfUtterance": {"message": "EndOfUtterance", "format": "2.9", "metadata": {"start_time": 0.8, "end_time": 0.8}},
    "AudioEventStarted": {"message": "AudioEventStarted", "event": {"type": "music", "start_time": 1.0}},
    "AudioEventEnded": {"message": "AudioEventEnded", "event": {"type": "music", "end_time": 2.0}},
    "AddTranslation": {"message": "AddTranslation", "language": "de", "results": [{"content": "Guten Morgen"}]},
    "AddPartialTranslation": {"message": "AddPartialTranslation", "language": "de", "results": []},
    "SpeakersResult": {"message": "SpeakersResult", "speakers": []},
    "Info": {"message": "Info", "type": "recognition_quality", "reason": "Running recognition"},
    "Warning": {"message": "Warning", "type": "duration_limit_exceeded", "reason": "close to the limit"},
    "Error": {"message": "Error", "type": "invalid_audio_type", "reason": "audio type not supported"},
    "ChannelAudioAdded": {"message": "ChannelAudioAdded", "channel": "left", "seq_no": 1},
}


def test_every_sdk_message_type_has_a_documented_mapping() -> None:
    from bytewax.speechmatics.flows import realtime

    assert set(realtime.MAPPING) == set(SDK_MESSAGES)
    for kind, message in SDK_MESSAGES.items():
        events = normalize("call-rt", message, RealtimeState())
        becomes = realtime.MAPPING[kind]
        assert [e["type"] for e in events] == ([] if becomes == realtime.IGNORED else [becomes]), kind
        for event in events:
            VALIDATOR.validate(event)
        assert kind in realtime.__doc__  # the module docstring documents it (and the README's table)


def test_a_session_starts_has_turn_ends_and_completes() -> None:
    events, state = run(SESSION)
    started, completed = events[0], events[-1]
    assert (started["type"], started["source"], started["event_id"]) == (
        "call_started", "realtime", event_id_of("call-rt", "abc/started"))
    (turn,) = [e for e in events if e["type"] == "utterance_end"]
    assert (turn["start_time"], turn["end_time"], turn["words"], turn["language"]) == (1.8, 1.8, [], "en")
    assert completed["type"] == "call_completed" and completed["source"] == "realtime"
    assert completed["counts"] == {"chunks": 0, "failed_chunks": 0, "words": 5, "audio_seconds": 2.5}
    assert completed["speakers"] == ["S1"] and completed["error"] is None and state.ended
    again, _ = run(SESSION)
    assert orjson.dumps(again) == orjson.dumps(events)  # replays repeat every event byte for byte


def event_id_of(call_id: str, part: str) -> str:
    from bytewax.speechmatics.schemas.events import event_id

    return event_id(call_id, "realtime", part)


def test_turn_ends_are_numbered_per_channel_and_session() -> None:
    eou = {"message": "EndOfUtterance", "metadata": {"start_time": 1.0, "end_time": 1.2}}
    events, _ = run([{"message": "RecognitionStarted", "id": "s1"}, eou, eou, {**eou, "channel": "agent"},
                     {"message": "RecognitionStarted", "id": "s2"}, eou])
    turns = [e for e in events if e["type"] == "utterance_end"]
    assert len({e["event_id"] for e in turns}) == 4 and turns[2]["channel"] == "agent"
    with pytest.raises(ContractError):
        normalize("c", {"message": "EndOfUtterance", "metadata": {"end_time": "late"}}, RealtimeState())


def test_an_error_ends_the_session_with_a_completion_that_says_why() -> None:
    from bytewax.speechmatics.flows.realtime import RealtimeLogic

    logic = RealtimeLogic(None)
    logic.on_item(("call-rt", orjson.dumps(SESSION[0])))
    out, discard = logic.on_item(("call-rt", orjson.dumps(SDK_MESSAGES["Error"])))
    (completed,) = [p.event for p in out]
    assert completed["type"] == "call_completed" and discard is True
    assert completed["error"] == "real-time session error: invalid_audio_type: audio type not supported"


def test_ignored_messages_are_counted() -> None:
    from prometheus_client import REGISTRY

    from bytewax.speechmatics.flows.realtime import RealtimeLogic

    def count() -> float:
        return REGISTRY.get_sample_value("bwsm_realtime_messages_total",
                                         {"type": "AddTranslation", "outcome": "ignored"}) or 0.0

    before = count()
    logic = RealtimeLogic(None)
    out, _ = logic.on_item(("call-rt", orjson.dumps(SDK_MESSAGES["AddTranslation"])))
    assert out == [] and count() == before + 1
