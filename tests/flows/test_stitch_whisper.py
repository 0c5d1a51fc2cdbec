"""Stitching a real recogniser's chunk transcripts: the pyannote sample call through the whisper engine.

The reference engine's artefacts are exact; a real recogniser re-times and re-words the overlap, hallucinates
at chunk edges and hears half of a cut word. Here the call is cut into 7 s chunks with 1 s overlaps (four seams,
much overlap: many chances to duplicate), each chunk transcribed through the real SDK, and the stitched text is
compared with the reference transcript: the duplicates that plain concatenation has must be gone, and the
result must be about as accurate as transcribing the whole file at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
from pathlib import Path

import jiwer
import jsonschema
import pytest
import soundfile
from speechmatics.batch import AsyncClient

from bytewax.speechmatics.connectors.cli.sample_audio import normalise_for_wer, pyannote_sample, stm_text
from bytewax.speechmatics.connectors.speechmatics.wav import encode_wav
from bytewax.speechmatics.flows.segments import batch_segment
from bytewax.speechmatics.flows.stitching import CallTimeline, Completion, StitchSettings
from bytewax.speechmatics.schemas.chunks import ChunkResult, ChunkSpan

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "transcript_event.schema.json").read_text())
WAIT = {"polling_interval": 0.5, "min_polling_interval": 0.1, "timeout": 300}


def cut(total: int, rate: int, seconds: float, overlap: float) -> list[ChunkSpan]:
    spans, start, ov = [], 0, 0
    while True:
        end = min(total, start + ov + int(seconds * rate))
        spans.append(ChunkSpan("pyannote", len(spans), start, end, ov, rate, "pcm_s16le", 1, last=end == total))
        if end == total:
            return spans
        ov = int(overlap * rate)
        start = end - ov


def test_whisper_chunks_stitch_without_the_overlap_duplicates(local_worker) -> None:  # noqa: ANN001
    sample = pyannote_sample()
    samples, rate = soundfile.read(str(sample.wav), dtype="int16")
    pcm = samples.tobytes()
    spans = cut(len(samples), rate, 7.0, 1.0)
    assert len(spans) >= 4
    worker = local_worker(engine="whisper", parallel=1)

    async def transcribe() -> tuple[str, list[ChunkResult]]:
        async with AsyncClient(api_key="unused", url=worker.url) as client:
            whole = await client.transcribe(str(sample.wav), **WAIT)
            results = []
            for span in spans:
                wav = io.BytesIO(encode_wav(pcm[span.start_sample * 2: span.end_sample * 2], rate, "pcm_s16le", 1))
                wav.name = f"chunk{span.index}.wav"
                done = await client.transcribe(wav, **WAIT)
                results.append(ChunkResult(span, dataclasses.asdict(done)))
        text = " ".join(r.alternatives[0].content for r in whole.results if r.type == "word")
        return text, results

    whole, results = asyncio.run(transcribe())
    timeline, events = CallTimeline("pyannote"), []
    for result in results:
        events += [batch_segment(i) for i in timeline.push(result, StitchSettings()) if not isinstance(i, Completion)]
    for event in events:
        jsonschema.validate(event, SCHEMA)
    words = [w for e in events for w in e["words"] if w["type"] == "word"]
    assert all(0 <= w["start_time"] <= w["end_time"] <= spans[-1].end_time for w in words)
    assert all(a["start_time"] <= b["start_time"] for a, b in zip(words, words[1:], strict=False))

    reference = normalise_for_wer(stm_text(sample.stm))
    naive = " ".join(r["alternatives"][0]["content"] for res in results for r in res.transcript["results"]
                     if r["type"] == "word")
    scores = {name: jiwer.process_words(reference, normalise_for_wer(text))
              for name, text in (("whole", whole), ("naive", naive),
                                 ("stitched", " ".join(w["text"] for w in words)))}
    print({name: (round(s.wer, 3), s.insertions, s.deletions) for name, s in scores.items()})
    assert scores["naive"].insertions >= 6  # the overlaps really were transcribed twice
    assert scores["stitched"].insertions <= scores["naive"].insertions // 3
    assert scores["stitched"].wer <= scores["whole"].wer + 0.05
    assert scores["stitched"].wer < scores["naive"].wer
