"""Property tests of CallTranscript: for generated calls (real-time partials and finals, batch segments with
supersedes spans, held-tail parts, failed chunks, replays), every order of the events, with duplicates, gives the
same timeline, and that timeline is the one computed here independently, word by word:

- a word whose chunk has a published, successful batch segment comes from the batch;
- else from its real-time segment's final, when that final is published;
- else from the open real-time segment's latest partial, when it shows the word;
- else it is not (yet) in the transcript.

The generator works in whole "units" (a word with its punctuation), on a 0.1 s grid, with chunk and real-time
segment boundaries between units, so the oracle never has to compute a midpoint.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st
from referencing import Registry, Resource

from bytewax.speechmatics.schemas import CallTranscript

SCHEMAS = Path(__file__).parents[2] / "schemas"
EVENT_SCHEMA = json.loads((SCHEMAS / "transcript_event.schema.json").read_text())
DOCUMENT_SCHEMA = json.loads((SCHEMAS / "call_transcript.schema.json").read_text())
REGISTRY = Registry().with_resources([(s["$id"], Resource.from_contents(s)) for s in (EVENT_SCHEMA, DOCUMENT_SCHEMA)])
DOCUMENT = jsonschema.Draft202012Validator(DOCUMENT_SCHEMA, registry=REGISTRY)
EVENT = jsonschema.Draft202012Validator(EVENT_SCHEMA)
CALL = "call-prop"
VOCAB = ["yes", "no", "hello", "world", "okay", "thanks", "sure"]
BATCH_CONF, FINAL_CONF, PARTIAL_CONF = 0.9, 0.8, 0.5


@dataclass
class Unit:
    """A truth word with its punctuation: (text, start, end, type, attaches_to, is_eos) per token."""

    tokens: list[tuple]
    start: float
    end: float
    speaker: str


@dataclass
class Call:
    units: list[Unit]
    audio_end: float
    events: list[dict] = field(default_factory=list)
    expected: list[dict] = field(default_factory=list)
    completed: bool = False


def t(ticks: int) -> float:
    return round(ticks / 10, 6)


def words_of(units: list[Unit], source: str) -> list[dict]:
    """The word dicts of units as a source shows them: batch as the truth, real-time in capitals (finals) or
    capitals with a tilde (partials), each with its own confidence."""
    out = []
    for unit in units:
        for text, start, end, kind, attaches, eos in unit.tokens:
            if kind == "word" and source != "batch":
                text = text.upper() + ("~" if source == "partial" else "")
            word = {"text": text, "start_time": start, "end_time": end,
                    "confidence": {"batch": BATCH_CONF, "final": FINAL_CONF, "partial": PARTIAL_CONF}[source],
                    "speaker": unit.speaker, "type": kind}
            if kind == "punctuation":
                word.update(attaches_to=attaches, is_eos=eos)
            out.append(word)
    return out


def base_event(event_id: str, source: str, is_final: bool, start: float, end: float, words: list[dict]) -> dict:
    return {"schema_version": "1.0", "event_id": event_id, "call_id": CALL, "type": "segment", "source": source,
            "is_final": is_final, "start_time": start, "end_time": max(start, end),
            "transcript": " ".join(w["text"] for w in words), "words": words,
            "speakers": sorted({w["speaker"] for w in words}), "language": "en", "channel": None}


def batch_event(event_id: str, index: int, lo: float, hi: float, chunk: tuple[float, float], units: list[Unit],
                error: str | None = None) -> dict:
    words = [] if error else words_of(units, "batch")
    event = base_event(event_id, "batch", True, lo if not error else chunk[0], hi if not error else chunk[1], words)
    event.update(job={"id": f"job-{index}", "chunk_index": index, "chunk_start": chunk[0], "chunk_end": chunk[1],
                      "attempts": 1},
                 supersedes=None if error else {"start_time": lo, "end_time": hi}, error=error)
    return event


@st.composite
def calls(draw) -> Call:  # noqa: ANN001
    units: list[Unit] = []
    tick = draw(st.integers(0, 5))
    for _ in range(draw(st.integers(1, 24))):
        tick += draw(st.integers(0, 3))
        length = draw(st.integers(1, 6))
        start, end = t(tick), t(tick + length)
        tokens = []
        if draw(st.integers(0, 9)) == 0:
            tokens.append(('"', start, start, "punctuation", "next", False))
        tokens.append((draw(st.sampled_from(VOCAB)), start, end, "word", None, None))
        mark = draw(st.sampled_from([None, None, None, ".", ",", "?"]))
        if mark:
            tokens.append((mark, end, end, "punctuation", "previous", mark != ","))
        units.append(Unit(tokens, start, end, draw(st.sampled_from(["S1", "S2"]))))
        tick += length
    n = len(units)
    call = Call(units, t(tick + draw(st.integers(0, 5))))

    def at(j: int) -> float:
        """The time of a cut before unit j (0: the call's start; n: the last unit's end)."""
        return 0.0 if j == 0 else units[j].start if j < n else units[-1].end

    # ---- batch: chunks cut between units (a cut may repeat: a chunk without words)
    cuts = [0, *sorted(draw(st.lists(st.integers(1, n), max_size=5))), None]
    chunks = []
    for k in range(len(cuts) - 1):
        first, last = cuts[k], cuts[k + 1] if cuts[k + 1] is not None else n
        lo, hi = at(first), at(last) if cuts[k + 1] is not None else call.audio_end
        chunks.append((first, last, lo, hi, draw(st.sampled_from(["ok", "ok", "tail", "failed"]))))
    published = draw(st.one_of(st.just(len(chunks)), st.integers(0, len(chunks))))  # often the whole call
    source_of: dict[int, str] = {}
    words = 0
    for k, (first, last, lo, hi, status) in enumerate(chunks[:published]):
        chunk_units = units[first:last]
        if status == "failed":
            call.events.append(batch_event(f"b{k}", k, lo, hi, (lo, hi), [], error="job rejected"))
            continue
        for j in range(first, last):
            source_of[j] = "batch"
        words += sum(1 for u in chunk_units for tok in u.tokens if tok[3] == "word")
        if status == "tail":  # the stitcher's held tail, released apart (its successor failed)
            m = draw(st.integers(first, last))
            mid = at(m) if m > first else lo
            call.events.append(batch_event(f"b{k}", k, lo, mid, (lo, hi), units[first:m]))
            call.events.append(batch_event(f"b{k}-tail", k, mid, hi, (lo, hi), units[m:last]))
        else:
            call.events.append(batch_event(f"b{k}", k, lo, hi, (lo, hi), chunk_units))
    if published == len(chunks) and draw(st.booleans()):
        call.completed = True
        call.events.append({
            "schema_version": "1.0", "event_id": "completed", "call_id": CALL, "type": "call_completed",
            "source": "batch", "is_final": True, "start_time": 0.0, "end_time": call.audio_end, "transcript": "",
            "words": [], "speakers": [], "language": "en", "channel": None,
            "counts": {"chunks": len(chunks), "failed_chunks": sum(1 for c in chunks if c[4] == "failed"),
                       "words": words, "audio_seconds": call.audio_end}})

    # ---- real time: segments of consecutive units; finals published for the first `finals`, partials before
    inner = sorted(draw(st.sets(st.integers(1, n - 1), max_size=6))) if n > 1 else []
    rt_cuts = [0, *inner, n]
    segments = list(zip(rt_cuts, rt_cuts[1:], strict=False))
    finals = draw(st.integers(0, len(segments)))
    shown: set[int] = set()
    for s, (first, last) in enumerate(segments[:finals + 1]):
        partial_end = units[first].start
        latest: list[int] = []
        for _ in range(draw(st.integers(0, 3))):
            upto = draw(st.integers(first, n))  # a partial may show words the next final will confirm (or none)
            partial_end = max(partial_end, units[upto - 1].end if upto > first else partial_end) + 0.01
            call.events.append(base_event(f"rt{s}", "realtime", False, units[first].start, round(partial_end, 6),
                                          words_of(units[first:upto], "partial")))
            latest = list(range(first, upto))
        if s < finals:
            for j in range(first, last):
                source_of.setdefault(j, "final")
            call.events.append(base_event(f"rt{s}", "realtime", True, units[first].start, units[last - 1].end,
                                          words_of(units[first:last], "final")))
        else:
            shown = set(latest)
    if finals >= 1 and draw(st.booleans()):  # an orphan partial (another id) over finalised words: stale
        last_final_end = segments[finals - 1][1]
        a = draw(st.integers(0, last_final_end - 1))
        b = draw(st.integers(a + 1, last_final_end))
        call.events.append(base_event("rt-orphan", "realtime", False, units[a].start, units[b - 1].end,
                                      words_of(units[a:b], "partial")))
    for j in shown:
        source_of.setdefault(j, "partial")

    call.expected = [w for j in range(n) if j in source_of for w in words_of([units[j]], source_of[j])]
    return call


def shuffled_with_repeats(events: list[dict], rng: random.Random, repeats: int) -> list[dict]:
    stream = [*events, *(json.loads(json.dumps(rng.choice(events))) for _ in range(repeats) if events)]
    rng.shuffle(stream)
    return stream


@settings(max_examples=400, deadline=None)
@given(call=calls(), seed=st.integers(0, 2**32 - 1), repeats=st.integers(0, 12))
def test_any_order_with_repeats_gives_the_independently_expected_timeline(call: Call, seed: int,
                                                                          repeats: int) -> None:
    for event in call.events:
        EVENT.validate(event)
    rng = random.Random(seed)
    first = CallTranscript.from_events(shuffled_with_repeats(call.events, rng, repeats))
    second = CallTranscript.from_events(shuffled_with_repeats(call.events, rng, repeats))
    assert first.words == call.expected
    assert second.words == first.words
    assert first.completed is call.completed
    assert second.completed is call.completed
    # Idempotent: applying everything again changes nothing.
    assert not any(first.apply(e) for e in call.events)
    assert first.words == call.expected
    if call.events:
        document = first.to_document()
        DOCUMENT.validate(document)
        assert document["words"] == call.expected
        assert document["completed"] is call.completed
        assert document == second.to_document()


@settings(max_examples=200, deadline=None)
@given(call=calls(), seed=st.integers(0, 2**32 - 1))
def test_completed_only_once_every_counted_word_is_in(call: Call, seed: int) -> None:
    """Applied one by one in any order, the transcript is complete exactly from the event that brings in the last
    piece the call_completed counts, and stays complete."""
    order = shuffled_with_repeats(call.events, random.Random(seed), 0)
    batch = [e for e in call.events if e["source"] == "batch"]
    with_words = {e["event_id"] for e in batch if any(w["type"] == "word" for w in e["words"])}
    transcript = CallTranscript()
    seen: list[dict] = []
    for event in order:
        transcript.apply(event)
        seen.append(event)
        ids = {e["event_id"] for e in seen}
        chunks = {e["job"]["chunk_index"] for e in seen if e["source"] == "batch" and e["type"] == "segment"}
        every_chunk = chunks == {e["job"]["chunk_index"] for e in batch if e["type"] == "segment"}
        expected = call.completed and "completed" in ids and every_chunk and with_words <= ids
        assert transcript.completed is expected, event["event_id"]
    assert transcript.completed is call.completed
    if call.completed:  # without any one event that carries words, or the completion, it is not complete
        for missing in [e for e in batch if e["event_id"] in with_words or e["type"] == "call_completed"]:
            assert not CallTranscript.from_events(e for e in order if e is not missing).completed, missing["event_id"]


@settings(max_examples=200, deadline=None)
@given(call=calls(), seed=st.integers(0, 2**32 - 1))
def test_a_failed_chunk_leaves_the_real_time_words_of_its_span(call: Call, seed: int) -> None:
    """Whatever else happens, a failed chunk's words are the real-time words (finals, or the open partial)."""
    transcript = CallTranscript.from_events(shuffled_with_repeats(call.events, random.Random(seed), 3))
    failed = [e for e in call.events if e["source"] == "batch" and e.get("error")]
    for event in failed:
        lo, hi = event["job"]["chunk_start"], event["job"]["chunk_end"]
        inside = [w for w in transcript.words if w["type"] == "word" and lo <= w["start_time"] < hi]
        assert all(w["confidence"] in (FINAL_CONF, PARTIAL_CONF) for w in inside)
        expected = [w for w in call.expected if w["type"] == "word" and lo <= w["start_time"] < hi]
        assert inside == expected
