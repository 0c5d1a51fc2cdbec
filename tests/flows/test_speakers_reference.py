"""Stable speakers across chunks with the reference engine, through the real speechmatics-batch AsyncClient.

A two-voice call is registered with the local worker, cut into overlapping chunks, and each chunk is
submitted in order with the SpeakerBook's enrolment (as the submitter chains them), relabelled by the book,
and stitched. Each job labels voices S1, S2, ... in order of appearance, so without the book the labels
would swap between chunks; with it, each voice keeps one label for the whole call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import random
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from speechmatics.batch import AsyncClient, TranscriptionConfig

from bytewax.speechmatics.connectors.speechmatics.wav import encode_wav
from bytewax.speechmatics.flows.segments import batch_segment, call_completed
from bytewax.speechmatics.flows.speakers import SpeakerBook, is_reserved, speaker_config
from bytewax.speechmatics.flows.stitching import CallTimeline, Completion, StitchSettings
from bytewax.speechmatics.schemas.chunks import ChunkResult, ChunkSpan

SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "transcript_event.schema.json").read_text())
RATE = 16000
CHUNK_SECONDS = 12.0
OVERLAP_SECONDS = 0.3

pytestmark = pytest.mark.timeout(300)


def conversation(seconds: float, seed: int) -> list[dict]:
    """Two voices taking turns; the caller speaks first in some chunks and second in others."""
    rng = random.Random(seed)
    words, t, voice = [], 0.2, "caller"
    vocab = ["hello", "yes", "account", "number", "please", "thanks", "right", "okay", "the", "a"]
    while t < seconds - 1.5:
        turn_end = min(seconds - 1.0, t + rng.uniform(1.0, 5.0))
        while t < turn_end:
            duration = rng.uniform(0.15, 0.6)
            words.append({"text": rng.choice(vocab), "start_time": round(t, 3), "end_time": round(t + duration, 3),
                          "speaker": voice, "type": "word"})
            t += duration + rng.choice([0.0, 0.05, 0.2])
        if rng.random() < 0.5:
            words.append({"text": ".", "start_time": words[-1]["end_time"], "end_time": words[-1]["end_time"],
                          "speaker": voice, "type": "punctuation", "attaches_to": "previous", "is_eos": True})
        voice = "agent" if voice == "caller" else "caller"
        t += rng.uniform(0.1, 0.8)
    return words


def spans(call_id: str, total: int) -> list[ChunkSpan]:
    out, start, overlap = [], 0, 0
    step, ov = int(CHUNK_SECONDS * RATE), int(OVERLAP_SECONDS * RATE)
    while True:
        end = min(total, start + overlap + step)
        out.append(ChunkSpan(call_id, len(out), start, end, overlap, RATE, "pcm_s16le", 1, last=end == total))
        if end == total:
            return out
        start, overlap = end - ov, ov


async def transcribe_in_order(url: str, audio: bytes, chunk_spans: list[ChunkSpan],
                              book: SpeakerBook | None) -> list[ChunkResult]:
    """Submit chunk after chunk (speaker chaining), enrolling what the book knows; relabel each result."""
    results = []
    async with AsyncClient(api_key="local", url=url) as client:
        for span in chunk_spans:
            data = audio[span.start_sample * 2: span.end_sample * 2]
            config = TranscriptionConfig(language="en", diarization="speaker",
                                         speaker_diarization_config=speaker_config(book or SpeakerBook()))
            wav = io.BytesIO(encode_wav(data, RATE, "pcm_s16le", 1))
            wav.name = f"{span.reference.replace('/', '_')}.wav"
            job = await client.submit_job(wav, transcription_config=config)
            done = await client.wait_for_completion(job.id, polling_interval=0.2, min_polling_interval=0.05,
                                                    timeout=60)
            transcript = dataclasses.asdict(done)
            if book is not None:
                transcript = book.relabel(span, transcript)
            results.append(ChunkResult(span, transcript, job_id=job.id))
    return results


def stitched(results: list[ChunkResult]) -> list[dict]:
    timeline, cfg, events = CallTimeline(results[0].span.call_id), StitchSettings(), []
    for result in results:
        for item in timeline.push(result, cfg):
            events.append(call_completed(item) if isinstance(item, Completion) else batch_segment(item))
    for event in events:
        jsonschema.validate(event, SCHEMA)
    return events


def same_voice_same_label(truth: list[dict], words: list[dict]) -> float:
    """Share of words whose label is their voice's label (each voice's most common one; voices distinct)."""
    pairs = list(zip([w["speaker"] for w in truth], [w["speaker"] for w in words], strict=True))
    best: dict[str, str] = {}
    for voice in {v for v, _ in pairs}:
        labels = [label for v, label in pairs if v == voice]
        best[voice] = max(set(labels), key=labels.count)
    assert len(set(best.values())) == len(best), f"two voices share a label: {best}"
    return sum(1 for v, label in pairs if label == best[v]) / len(pairs)


@pytest.mark.parametrize("edge_rule", ["midpoint", "drop"])
def test_two_voices_keep_their_labels_across_chunks(reference_worker, edge_rule: str) -> None:  # noqa: ANN001
    seconds = 55.0
    total = int(seconds * RATE)
    audio = np.random.default_rng(7).integers(-20000, 20000, total, dtype=np.int16).tobytes()
    truth = conversation(seconds, seed=11)
    call_id = f"spk-{edge_rule}"
    reference_worker.admin.register_call(call_id, audio, truth, edge_rule=edge_rule)
    chunk_spans = spans(call_id, total)
    assert len(chunk_spans) >= 4

    book = SpeakerBook()
    events = stitched(asyncio.run(transcribe_in_order(reference_worker.url, audio, chunk_spans, book)))
    words = [w for e in events if e["type"] == "segment" for w in e["words"] if w["type"] == "word"]
    heard = [w for w in truth if w["type"] == "word" and _kept(w, chunk_spans, edge_rule)]
    assert [w["text"] for w in words] == [w["text"] for w in heard]

    labels = {w["speaker"] for w in words}
    assert len(labels) == 2 and not any(is_reserved(label) for label in labels)
    assert same_voice_same_label(heard, words) >= 0.99
    assert events[-1]["type"] == "call_completed" and sorted(events[-1]["speakers"]) == sorted(labels)
    # The enrolment the next job would get: both voices, within the API's identifier limit.
    enrolled = book.enrollment()
    assert sorted(e["label"] for e in enrolled) == sorted(labels)
    assert sum(len(e["speaker_identifiers"]) for e in enrolled) <= 50


def test_without_the_book_labels_are_per_job(reference_worker) -> None:  # noqa: ANN001
    """The control: raw labels are only per job, so the stable labels above are the book's doing."""
    seconds = 55.0
    total = int(seconds * RATE)
    audio = np.random.default_rng(8).integers(-20000, 20000, total, dtype=np.int16).tobytes()
    truth = conversation(seconds, seed=12)
    reference_worker.admin.register_call("spk-raw", audio, truth)
    chunk_spans = spans("spk-raw", total)
    results = asyncio.run(transcribe_in_order(reference_worker.url, audio, chunk_spans, None))
    words = [w for e in stitched(results) if e["type"] == "segment" for w in e["words"] if w["type"] == "word"]
    heard = [w for w in truth if w["type"] == "word" and _kept(w, chunk_spans, "midpoint")]
    assert [w["text"] for w in words] == [w["text"] for w in heard]
    labels_of: dict[str, set[str]] = {}
    for truth_word, word in zip(heard, words, strict=True):
        labels_of.setdefault(truth_word["speaker"], set()).add(word["speaker"])
    assert all(labels <= {"S1", "S2"} for labels in labels_of.values())
    assert any(len(labels) > 1 for labels in labels_of.values()), labels_of


def _kept(word: dict, chunk_spans: list[ChunkSpan], rule: str) -> bool:
    """Whether any chunk's job could return this word under the edge rule (the audio's truth)."""
    mid = (word["start_time"] + word["end_time"]) / 2
    for span in chunk_spans:
        if rule == "drop" and span.start_time <= word["start_time"] and word["end_time"] <= span.end_time:
            return True
        if rule == "midpoint" and span.start_time <= mid < span.end_time:
            return True
    return False
