"""Property tests: word timelines cut into overlapping chunks with the reference engine's edge artefacts
stitch back to exactly the truth, whatever order the chunks complete in.

The artefacts come from the reference engine's own selection (`select_words`: `midpoint`, `drop` or `keep`,
times clipped to the chunk). "Truth" for a word is what the chunks that kept it heard together: a word that
no chunk kept (under `drop`, one straddling both ends of an overlap) cannot come back, and a word is only
known within the audio of the chunks that kept it (the union of its clipped copies). The oracle below
computes that per word, independently of the stitcher.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from transcript_events import engine_result

from bytewax.speechmatics.connectors.worker.engines.reference import TruthWord, select_words
from bytewax.speechmatics.flows.segments import batch_segment, call_completed
from bytewax.speechmatics.flows.stitching import CallTimeline, Completion, StitchSettings
from bytewax.speechmatics.schemas.chunks import ChunkResult, ChunkSpan

SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "transcript_event.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
RATE = 16000
VOCAB = ["yes", "no", "the", "a", "hello", "world"]
TOLERANCE = 0.010


@st.composite
def timelines(draw) -> list[TruthWord]:  # noqa: ANN001
    """Words of one voice at a time (no overlap within a channel), sometimes touching, with punctuation."""
    words, t = [], draw(st.floats(0, 1))
    for _ in range(draw(st.integers(1, 60))):
        t += draw(st.sampled_from([0.0, 0.0, draw(st.floats(0, 1.5))]))
        duration = draw(st.floats(0.05, 1.0))
        speaker = draw(st.sampled_from(["agent_voice", "caller_voice"]))
        if draw(st.integers(0, 9)) == 0:
            words.append(TruthWord('"', t, t, "punctuation", speaker, attaches_to="next"))
        words.append(TruthWord(draw(st.sampled_from(VOCAB)), t, t + duration, speaker=speaker))
        t += duration
        if draw(st.integers(0, 4)) == 0:
            mark = draw(st.sampled_from([".", ",", "?"]))
            words.append(TruthWord(mark, t, t, "punctuation", speaker, attaches_to="previous",
                                   is_eos=mark != ","))
    return words


@st.composite
def cuts(draw, duration: float) -> list[ChunkSpan]:  # noqa: ANN001
    """Chunks of 2-8 s with 0-1 s overlaps covering [0, duration]."""
    total = int(duration * RATE) + 1
    spans, start, overlap = [], 0, 0
    while True:
        end = min(total, start + overlap + int(draw(st.floats(2.0, 8.0)) * RATE))
        last = end >= total
        spans.append(ChunkSpan("call-p", len(spans), start, end, overlap, RATE, "pcm_s16le", 1, last=last,
                               closed_at=float(len(spans))))
        if last:
            return spans
        overlap = int(draw(st.sampled_from([0.0, 0.1, 0.3, 0.5, 1.0])) * RATE)
        start = end - overlap


def expected_words(truth: list[TruthWord], spans: list[ChunkSpan], rule: str) -> list[tuple[str, float, float, str]]:
    """Per truth word kept by at least one chunk: (text, start, end, speaker), times = union of its copies."""
    heard: dict[int, tuple[float, float]] = {}
    index = {id(w): i for i, w in enumerate(truth)}
    for span in spans:
        for w, s, e in select_words(truth, span.start_time, span.end_time, rule):
            i = index[id(w)]
            lo, hi = heard.get(i, (s, e))
            heard[i] = (min(lo, s), max(hi, e))
    out = []
    for i, w in enumerate(truth):
        if i in heard:
            s, e = heard[i]
            out.append((w.text, s, e, w.speaker))
    return out


def stitch(results: list[ChunkResult], hold: float, context: float) -> list[dict]:
    timeline = CallTimeline("call-p")
    cfg = StitchSettings(hold_seconds=hold, context_seconds=context)
    events = []
    for result in results:
        for item in timeline.push(result, cfg):
            events.append(call_completed(item) if isinstance(item, Completion) else batch_segment(item))
    return events


@settings(max_examples=300, deadline=None)
@given(data=st.data(), rule=st.sampled_from(["midpoint", "drop", "keep"]),
       hold=st.floats(0.01, 1.0), context=st.floats(2.0, 10.0))
def test_chunked_timeline_stitches_back_to_the_truth(data, rule: str, hold: float, context: float) -> None:  # noqa: ANN001
    truth = data.draw(timelines())
    duration = max(w.end_time for w in truth) + data.draw(st.floats(0, 2))
    spans = data.draw(cuts(duration))
    assume(not _ambiguous(truth, spans, rule))
    results = [engine_result(truth, span, rule) for span in spans]
    events = stitch(results, hold, context)

    for event in events:
        VALIDATOR.validate(event)
    assert [e["type"] for e in events].count("call_completed") == 1
    assert events[-1]["type"] == "call_completed"
    segments = [e for e in events if e["type"] == "segment"]
    assert [e["job"]["chunk_index"] for e in segments] == list(range(len(spans)))

    got = [w for e in segments for w in e["words"]]
    got_words = [w for w in got if w["type"] == "word"]
    want = expected_words([w for w in truth if w.type == "word"], spans, rule)
    assert [(w["text"], w["speaker"]) for w in got_words] == [(t, spk) for t, _, _, spk in want]
    for w, (_, s, e, _) in zip(got_words, want, strict=True):
        assert abs(w["start_time"] - s) <= TOLERANCE and abs(w["end_time"] - e) <= TOLERANCE, (w, s, e)
    assert events[-1]["counts"]["words"] == len(want)

    # Punctuation comes back once, beside the word it attaches to, whenever that word came back.
    want_all = [(t.text, t.type) for t in truth if _host_kept(truth, t, spans, rule)]
    assert [(w["text"], w["type"]) for w in got] == want_all

    # Supersedes spans tile the call in order, without overlaps.
    spans_out = [(e["supersedes"]["start_time"], e["supersedes"]["end_time"]) for e in segments]
    for (lo1, hi1), (lo2, _) in zip(spans_out, spans_out[1:], strict=False):
        assert lo1 <= hi1 <= lo2 + 1e-9

    # Any completion order gives the same events.
    order = data.draw(st.permutations(results))
    assert stitch(order, hold, context) == events


@settings(max_examples=150, deadline=None)
@given(data=st.data(), rule=st.sampled_from(["midpoint", "drop", "keep"]), hold=st.floats(0.01, 1.0))
def test_failed_chunks_lose_only_what_no_other_chunk_heard(data, rule: str, hold: float) -> None:  # noqa: ANN001
    truth = data.draw(timelines())
    spans = data.draw(cuts(max(w.end_time for w in truth) + 0.5))
    assume(len(spans) >= 2 and not _ambiguous(truth, spans, rule))
    failed = data.draw(st.sets(st.sampled_from(range(len(spans))), min_size=1))
    results = [ChunkResult(s, error="rejected") if s.index in failed else engine_result(truth, s, rule)
               for s in spans]
    events = stitch(data.draw(st.permutations(results)), hold, 5.0)
    for event in events:
        VALIDATOR.validate(event)
    segments = [e for e in events if e["type"] == "segment"]
    indices = [e["job"]["chunk_index"] for e in segments]
    assert indices == sorted(indices) and set(indices) == set(range(len(spans)))
    assert [e["job"]["chunk_index"] for e in segments if e["error"]] == sorted(failed)
    assert all(not e["words"] and e["supersedes"] is None for e in segments if e["error"])
    assert events[-1]["type"] == "call_completed" and events[-1]["counts"]["failed_chunks"] == len(failed)

    heard_by = [s for s in spans if s.index not in failed]
    want = expected_words([w for w in truth if w.type == "word"], heard_by, rule)
    got = [w for e in segments for w in e["words"] if w["type"] == "word"]
    assert [w["text"] for w in got] == [t for t, _, _, _ in want]
    for w, (_, s, e, _) in zip(got, want, strict=True):
        assert abs(w["start_time"] - s) <= TOLERANCE and abs(w["end_time"] - e) <= TOLERANCE, (w, s, e)


def _host_kept(truth: list[TruthWord], token: TruthWord, spans: list[ChunkSpan], rule: str) -> bool:
    """Whether any chunk kept the word this token is (a word) or attaches to (punctuation)."""
    i = next(j for j, w in enumerate(truth) if w is token)
    words = [j for j, w in enumerate(truth) if w.type == "word"]
    if token.type == "word":
        host = i
    elif token.attaches_to == "next":
        host = next((j for j in words if j > i), None)
    else:
        host = next((j for j in reversed(words) if j < i), None)
    if host is None:
        return False
    return any(truth[host] is w for span in spans for w, _, _ in select_words(truth, span.start_time,
                                                                             span.end_time, rule))


def _ambiguous(truth: list[TruthWord], spans: list[ChunkSpan], rule: str) -> bool:
    """At a seam without overlap, one chunk's word ends exactly there and the next chunk's word with the same
    text starts exactly there: one word cut in two and two touching words look the same, so no stitcher can
    tell which the truth was (a measure-zero case, ruled out here)."""
    for left, right in zip(spans, spans[1:], strict=False):
        if right.overlap_samples:
            continue
        seam = right.start_time
        ends = [w for w, _, e in select_words(truth, left.start_time, seam, rule)
                if w.type == "word" and abs(e - seam) <= 1e-3]
        starts = [w for w, s, _ in select_words(truth, seam, right.end_time, rule)
                  if w.type == "word" and abs(s - seam) <= 1e-3]
        if any(x is not y and x.text == y.text for x in ends for y in starts):
            return True
    return False
