"""CallTranscript by example: the coming event types and metadata are tolerated, versions of one event id are
chosen by content (not arrival), channels keep their own finals, text/turns/captions read as a person expects, the
document matches its schema, and what is not a transcript event of the call is refused without changing anything.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
from referencing import Registry, Resource

from bytewax.speechmatics.schemas import CallTranscript
from bytewax.speechmatics.schemas.call_transcript import validate_document
from bytewax.speechmatics.schemas.errors import ContractError

SCHEMAS = Path(__file__).parents[2] / "schemas"
EVENT_SCHEMA = json.loads((SCHEMAS / "transcript_event.schema.json").read_text())
DOCUMENT_SCHEMA = json.loads((SCHEMAS / "call_transcript.schema.json").read_text())
DOCUMENT = jsonschema.Draft202012Validator(DOCUMENT_SCHEMA, registry=Registry().with_resources(
    [(s["$id"], Resource.from_contents(s)) for s in (EVENT_SCHEMA, DOCUMENT_SCHEMA)]))


def w(text: str, start: float, end: float | None = None, speaker: str | None = "S1", conf: float = 0.9,
      attaches: str | None = None) -> dict:
    if text in ('"', "(") or text in ",.?!":
        return {"text": text, "start_time": start, "end_time": start, "confidence": 1.0, "speaker": speaker,
                "type": "punctuation", "attaches_to": attaches or ("next" if text in ('"', "(") else "previous"),
                "is_eos": text in ".?!"}
    return {"text": text, "start_time": start, "end_time": end if end is not None else start + 0.4,
            "confidence": conf, "speaker": speaker, "type": "word"}


def event(event_id: str, words: list[dict], *, source: str = "batch", final: bool = True, start: float | None = None,
          end: float | None = None, chunk: int = 0, span: tuple[float, float] | None = None, error: str | None = None,
          channel: str | None = None, call: str = "c1", **extra: object) -> dict:
    start = start if start is not None else min((x["start_time"] for x in words), default=0.0)
    end = end if end is not None else max((x["end_time"] for x in words), default=start)
    out = {"schema_version": "1.0", "event_id": event_id, "call_id": call, "type": "segment", "source": source,
           "is_final": final, "start_time": start, "end_time": end, "transcript": "", "words": words,
           "speakers": sorted({x["speaker"] for x in words if x["speaker"]}), "language": "en", "channel": channel}
    if source == "batch":
        lo, hi = span if span is not None else (start, end)
        out.update(job={"id": "j", "chunk_index": chunk, "chunk_start": lo, "chunk_end": hi, "attempts": 1},
                   supersedes=None if error else {"start_time": lo, "end_time": hi}, error=error)
    out.update(extra)
    return out


def completed(chunks: int, words: int, event_id: str = "done", **extra: object) -> dict:
    return {"schema_version": "1.0", "event_id": event_id, "call_id": "c1", "type": "call_completed",
            "source": "batch", "is_final": True, "start_time": 0.0, "end_time": 30.0, "transcript": "", "words": [],
            "speakers": [], "language": "en", "channel": None,
            "counts": {"chunks": chunks, "failed_chunks": 0, "words": words, "audio_seconds": 30.0}, **extra}


def texts(transcript: CallTranscript) -> list[str]:
    return [x["text"] for x in transcript.words]


# ------------------------------------------------------------------------------------------ the coming event types


def test_call_started_utterance_end_unknown_types_and_metadata_are_tolerated() -> None:
    meta = {"crm_id": "A-17", "queue": "billing"}
    events = [
        {**event("s", [], source="realtime", start=0.0, end=0.0), "type": "call_started", "schema_version": "1.1",
         "metadata": meta, "warnings": ["config.language: unknown"]},
        {**event("u", [], source="realtime", start=1.0, end=1.0), "type": "utterance_end", "schema_version": "1.1",
         "metadata": meta},
        {**event("x", [w("ghost", 0.0)], source="realtime"), "type": "speaker_changed", "schema_version": "1.3"},
        event("b0", [w("hello", 0.5), w(".", 0.9)], span=(0.0, 5.0), schema_version="1.1", metadata=meta),
        {**completed(1, 1), "schema_version": "1.1", "metadata": meta},
        {**event("rt-end", [], source="realtime", start=0.0, end=5.0), "type": "call_completed", "counts": None},
    ]
    transcript = CallTranscript.from_events(reversed(events))
    assert texts(transcript) == ["hello", "."]
    assert transcript.completed
    assert transcript.metadata == meta
    assert transcript.to_document()["metadata"] == meta
    transcript.metadata["crm_id"] = "changed"  # a copy: the transcript keeps its own
    assert transcript.metadata == meta


def test_a_real_time_end_of_transcript_does_not_complete_the_call() -> None:
    rt_end = {**event("rt-end", [], source="realtime", start=0.0, end=5.0), "type": "call_completed",
              "counts": None}
    transcript = CallTranscript.from_events([event("r0", [w("hi", 0.5)], source="realtime"), rt_end])
    assert texts(transcript) == ["HI".lower()] and not transcript.completed
    assert transcript.metadata is None


# ------------------------------------------------------------------------------------------ versions and sources


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0), (1, 0, 2)])
def test_the_final_beats_its_partials_and_the_later_partial_beats_the_earlier(order: tuple[int, ...]) -> None:
    versions = [
        event("r0", [w("hel", 0.5, 0.7)], source="realtime", final=False, start=0.5, end=0.7),
        event("r0", [w("hello", 0.5, 0.9), w("word", 1.0)], source="realtime", final=False, start=0.5, end=1.4),
        event("r0", [w("hello", 0.5, 0.9), w(".", 0.9)], source="realtime", start=0.5, end=1.0),
    ]
    partials = CallTranscript.from_events(versions[i] for i in order if i != 2)
    assert texts(partials) == ["hello", "word"]
    assert texts(CallTranscript.from_events(versions[i] for i in order)) == ["hello", "."]


def test_partials_count_only_past_their_channels_last_final() -> None:
    events = [
        event("a0", [w("agent", 0.5, speaker="agent")], source="realtime", channel="agent", end=4.0),
        event("a-stale", [w("stale", 1.0, speaker="agent")], source="realtime", final=False, channel="agent"),
        event("a1", [w("later", 4.5, speaker="agent")], source="realtime", final=False, channel="agent"),
        event("c0", [w("caller", 2.0, speaker="caller")], source="realtime", final=False, channel="caller"),
    ]
    transcript = CallTranscript.from_events(events)
    assert texts(transcript) == ["agent", "caller", "later"]  # the caller's partial is not cut by the agent's final
    assert transcript.to_document()["counts"] | {"events": 0} == {
        "words": 3, "batch_words": 0, "realtime_words": 1, "partial_words": 2, "chunks": 0, "failed_chunks": 0,
        "events": 0}


def test_batch_replaces_real_time_in_its_span_and_a_failed_chunk_keeps_real_time() -> None:
    realtime = [event(f"r{i}", [w(f"RT{i}", i + 0.2)], source="realtime") for i in range(9)]
    batch = [
        event("b0", [w("b0", 0.2), w("b1", 1.2), w("b2", 2.2)], chunk=0, span=(0.0, 3.0)),
        event("b1", [], chunk=1, span=(3.0, 6.0), error="job rejected"),
        event("b2", [w("b6", 6.2), w("b7", 7.2), w("b8", 8.2)], chunk=2, span=(6.0, 9.0)),
    ]
    transcript = CallTranscript.from_events([*batch, *realtime, completed(3, 6)])
    assert texts(transcript) == ["b0", "b1", "b2", "RT3", "RT4", "RT5", "b6", "b7", "b8"]
    assert transcript.completed
    document = transcript.to_document()
    assert document["failed_spans"] == [{"start_time": 3.0, "end_time": 6.0, "error": "job rejected"}]
    assert document["counts"]["failed_chunks"] == 1 and document["counts"]["chunks"] == 3
    DOCUMENT.validate(document)


def test_completion_waits_for_every_counted_word_and_for_a_reopened_call() -> None:
    first = event("b0", [w("one", 0.2), w("two", 1.2)], chunk=0, span=(0.0, 2.0))
    tail = event("b0t", [w("three", 2.2)], chunk=0, span=(2.0, 3.0))
    failed = event("b1", [], chunk=1, span=(3.0, 6.0), error="rejected")
    transcript = CallTranscript.from_events([first, failed, completed(2, 3)])
    assert not transcript.completed  # the held tail's word is counted but missing
    transcript.apply(tail)
    assert transcript.completed
    again = event("b2", [w("four", 7.2)], chunk=2, span=(6.0, 9.0))  # the call spoke again after an idle flush
    transcript.apply(again)
    assert not transcript.completed
    transcript.apply(completed(3, 4, event_id="done-2"))
    assert transcript.completed and texts(transcript) == ["one", "two", "three", "four"]


# ------------------------------------------------------------------------------------------ text, turns, captions


def conversation() -> CallTranscript:
    words = [w("Hello", 0.0), w(",", 0.4), w("how", 0.5), w("are", 1.0), w("you", 1.5), w("?", 1.9),
             w('"', 2.5, speaker="S2"), w("Fine", 2.5, speaker="S2"), w('"', 2.9, speaker="S2", attaches="previous"),
             w("thanks", 3.0, speaker="S2"), w(".", 3.4, speaker="S2"), w("Good", 4.0), w(".", 4.4)]
    return CallTranscript.from_events([event("b0", words, span=(0.0, 5.0))])


def test_turns_and_text_attach_punctuation() -> None:
    transcript = conversation()
    assert transcript.text == 'Hello, how are you? "Fine" thanks. Good.'
    assert [(t.speaker, t.start_time, t.end_time, t.text) for t in transcript.turns] == [
        ("S1", 0.0, 1.9, "Hello, how are you?"), ("S2", 2.5, 3.4, '"Fine" thanks.'), ("S1", 4.0, 4.4, "Good.")]
    assert transcript.to_txt() == ('[00:00:00] S1: Hello, how are you?\n[00:00:02] S2: "Fine" thanks.\n'
                                   "[00:00:04] S1: Good.\n")
    assert transcript.speakers == ["S1", "S2"]


def test_captions_split_long_turns_at_a_sensible_length() -> None:
    words = []
    for i in range(60):  # one speaker for 36 s, a sentence every 7 words
        words.append(w(f"word{i}", i * 0.6, i * 0.6 + 0.5))
        if i % 7 == 6:
            words.append(w(".", i * 0.6 + 0.5))
    words.append(w("<b>&", 40.0, 40.3, speaker="S2"))
    transcript = CallTranscript.from_events([event("b0", words, span=(0.0, 41.0))])
    srt = transcript.to_srt()
    blocks = srt.strip().split("\n\n")
    cues = []
    for n, block in enumerate(blocks, 1):
        lines = block.split("\n")
        assert lines[0] == str(n)
        start, end = re.fullmatch(r"(\d\d:\d\d:\d\d,\d\d\d) --> (\d\d:\d\d:\d\d,\d\d\d)", lines[1]).groups()
        assert start < end
        text = " ".join(lines[2:])
        assert 1 <= len(lines[2:]) <= 2 and all(len(line) <= 42 + 10 for line in lines[2:])
        assert len(text) <= 84, text
        cues.append((start, text))
    assert len(cues) >= 6  # 36 s of speech cannot be one cue
    assert [c[0] for c in cues] == sorted(c[0] for c in cues)
    spoken = " ".join(text.removeprefix("S1: ") for _, text in cues[:-1])
    assert spoken == transcript.turns[0].text
    assert cues[-1][1] == "S2: <b>&"
    vtt = transcript.to_vtt()
    assert vtt.startswith("WEBVTT\n\n") and "," not in vtt.split("\n")[2]
    assert "<v S2>&lt;b&gt;&amp;" in vtt and "<b>" not in vtt
    assert vtt.count(" --> ") == len(cues)


def test_document_matches_its_schema_and_the_package_validator() -> None:
    document = conversation().to_document()
    DOCUMENT.validate(document)
    assert validate_document(document) is document
    with pytest.raises(ContractError, match="words/0"):
        validate_document({**document, "words": [{"text": "x"}]})
    assert json.loads(conversation().to_json()) == document
    with pytest.raises(ContractError):
        CallTranscript().to_document()


# ------------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize(("bad", "field"), [
    ("not an event", "JSON object"),
    ({"event_id": "", "call_id": "c1"}, "event_id"),
    ({**event("x", []), "call_id": "other"}, "another call"),
    ({**event("x", []), "schema_version": "2.0"}, "schema_version"),
    ({**event("x", []), "words": "hello"}, "words"),
    ({**event("x", []), "words": [{"text": "hi", "start_time": "0", "end_time": 1, "type": "word"}]}, "words[0]"),
    ({**event("x", []), "job": None}, "chunk_index"),
    ({**completed(1, 1), "counts": {"chunks": -1}}, "counts"),
    ({**event("x", []), "metadata": [1]}, "metadata"),
])
def test_what_is_not_a_transcript_event_of_the_call_is_refused_and_changes_nothing(bad: object, field: str) -> None:
    transcript = CallTranscript.from_events([event("b0", [w("hi", 0.1)])])
    before = transcript.to_document()
    with pytest.raises(ContractError, match=re.escape(field)):
        transcript.apply(bad)  # type: ignore[arg-type]
    assert transcript.to_document() == before
