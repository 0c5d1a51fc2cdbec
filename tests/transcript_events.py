"""Transcript events of a call as the flow's own producers make them: batch segments from the stitcher
(`CallTimeline` + `batch_segment` / `call_completed`, chunk results shaped like the reference engine's) and
real-time events from the normaliser (`normalize` of Speechmatics RT messages). Real-time words are in capitals,
so a test can tell which source a word of a CallTranscript came from.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from bytewax.speechmatics.connectors.worker.engines.reference import TruthWord, select_words
from bytewax.speechmatics.flows.realtime import RealtimeState, normalize
from bytewax.speechmatics.flows.segments import batch_segment, call_completed
from bytewax.speechmatics.flows.stitching import CallTimeline, Completion, StitchSettings
from bytewax.speechmatics.schemas.chunks import ChunkResult, ChunkSpan

RATE = 16000


def truth_words(words: int, first: float = 0.5, seed: int = 0) -> list[TruthWord]:
    """A word every 0.5 s lasting 0.4 s, turns of three words, a "." after every fourth word."""
    rng = random.Random(seed)
    vocab = ["yes", "no", "hello", "world", "okay", "thanks", "sure", "right"]
    out = []
    for n in range(words):
        start = round(first + 0.5 * n, 3)
        speaker = ("S1", "S2")[(n // 3) % 2]
        out.append(TruthWord(rng.choice(vocab), start, round(start + 0.4, 3), speaker=speaker))
        if n % 4 == 3:
            out.append(TruthWord(".", round(start + 0.4, 3), round(start + 0.4, 3), "punctuation", speaker,
                                 attaches_to="previous", is_eos=True))
    return out


@dataclass(frozen=True)
class Chunking:
    seconds: float = 3.0
    failed: frozenset[int] = frozenset()


def spans(call_id: str, truth: list[TruthWord], chunking: Chunking) -> list[ChunkSpan]:
    total = int((truth[-1].end_time + 0.3) * RATE)
    step = int(chunking.seconds * RATE)
    starts = list(range(0, total, step))
    return [ChunkSpan(call_id=call_id, index=i, start_sample=s, end_sample=min(total, s + step), overlap_samples=0,
                      sample_rate=RATE, encoding="pcm_s16le", channels=1, last=i == len(starts) - 1)
            for i, s in enumerate(starts)]


def engine_result(truth: list[TruthWord], span: ChunkSpan, rule: str) -> ChunkResult:
    """What the reference engine returns for a chunk: kept words clipped, times from the chunk's start."""
    results = []
    for w, s, e in select_words(truth, span.start_time, span.end_time, rule):
        result = {"type": w.type, "start_time": round(s - span.start_time, 6),
                  "end_time": round(e - span.start_time, 6),
                  "alternatives": [{"content": w.text, "confidence": 0.9, "speaker": w.speaker, "language": "en"}]}
        if w.type == "punctuation":
            result.update(attaches_to=w.attaches_to, is_eos=w.is_eos)
        results.append(result)
    return ChunkResult(span, {"format": "2.9", "results": results}, job_id=f"job-{span.index}")


def chunk_result(truth: list[TruthWord], span: ChunkSpan, failed: bool) -> ChunkResult:
    if failed:
        return ChunkResult(span, error="job rejected", job_id=f"job-{span.index}")
    return engine_result(truth, span, "midpoint")


def batch_events(call_id: str, truth: list[TruthWord], chunking: Chunking = Chunking()) -> list[dict]:
    """The call's batch events in emitted order (segments, held tails, failures, call_completed)."""
    timeline = CallTimeline(call_id)
    events = []
    for span in spans(call_id, truth, chunking):
        result = chunk_result(truth, span, span.index in chunking.failed)
        for item in timeline.push(result, StitchSettings()):
            events.append(call_completed(item) if isinstance(item, Completion) else batch_segment(item))
    return events


def _rt_result(w: TruthWord) -> dict:
    result = {"type": w.type, "start_time": w.start_time, "end_time": w.end_time,
              "alternatives": [{"content": w.text.upper(), "confidence": 0.8, "speaker": w.speaker,
                                "language": "en"}]}
    if w.type == "punctuation":
        result.update(attaches_to=w.attaches_to, is_eos=w.is_eos)
    return result


def _rt_message(kind: str, words: list[TruthWord], start: float, end: float) -> dict:
    return {"message": kind, "format": "2.9", "results": [_rt_result(w) for w in words],
            "metadata": {"start_time": start, "end_time": end, "transcript": ""}}


def realtime_events(call_id: str, truth: list[TruthWord], per_final: int = 5, finals: int | None = None) -> list[dict]:
    """The call's real-time events: for each run of `per_final` tokens two growing partials then the final; with
    `finals` set, the session stops after that many finals, showing a partial of the next run."""
    messages: list[dict] = [{"message": "RecognitionStarted", "id": f"session-{call_id}"}]
    runs = [truth[i:i + per_final] for i in range(0, len(truth), per_final)]
    for n, run in enumerate(runs):
        start = run[0].start_time
        half = run[: max(1, len(run) // 2)]
        messages.append(_rt_message("AddPartialTranscript", half, start, half[-1].end_time))
        if finals is not None and n == finals:
            break
        messages.append(_rt_message("AddPartialTranscript", run, start, run[-1].end_time + 0.05))
        messages.append(_rt_message("AddTranscript", run, start, run[-1].end_time))
    else:
        messages.append({"message": "EndOfTranscript"})
    state = RealtimeState()
    return [event for message in messages for event in normalize(call_id, message, state)]


def expected_texts(truth: list[TruthWord], call_spans: list[ChunkSpan], failed: frozenset[int]) -> list[str]:
    """Batch texts, and real-time (capital) texts for words whose midpoint lies in a failed chunk."""
    out: list[str] = []
    host_failed = False
    for w in truth:
        if w.type == "word":
            span = next(s for s in call_spans if s.start_time <= w.midpoint < s.end_time)
            host_failed = span.index in failed
            out.append(w.text.upper() if host_failed else w.text)
        else:
            out.append(w.text)
    return out


def shuffled_with_repeats(events: list[dict], seed: int, repeats: int = 5) -> list[dict]:
    rng = random.Random(seed)
    stream = [*events, *(rng.choice(events) for _ in range(repeats))]
    rng.shuffle(stream)
    return stream
