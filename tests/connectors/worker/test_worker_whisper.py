"""The whisper engine through the real SDK on the pyannote sample call: accuracy and real concurrency."""

from __future__ import annotations

import asyncio

import jiwer
import pytest
import soundfile
from speechmatics.batch import AsyncClient

from bytewax.speechmatics.connectors.cli.sample_audio import normalise_for_wer, pyannote_sample, stm_text
from bytewax.speechmatics.schemas.events import event_schema

pytestmark = pytest.mark.slow

FAST = {"polling_interval": 0.5, "min_polling_interval": 0.1, "timeout": 300}


def test_whisper_transcribes_the_sample_call_within_wer_and_runs_jobs_in_parallel_processes(local_worker):
    sample = pyannote_sample()
    duration = soundfile.info(str(sample.wav)).duration
    worker = local_worker(engine="whisper", parallel=2)

    async def go():
        async with AsyncClient(api_key="unused", url=worker.url) as client:
            return await asyncio.gather(*(client.transcribe(str(sample.wav), **FAST) for _ in range(2)))

    transcripts = asyncio.run(go())
    # Exactly the event schema's range: a word Whisper is very unsure of may round to 0.0 on some CPUs.
    confidence = event_schema()["$defs"]["word"]["properties"]["confidence"]
    low, high = confidence["minimum"], confidence["maximum"]
    reference = normalise_for_wer(stm_text(sample.stm))
    for transcript in transcripts:
        words = [r for r in transcript.results if r.type == "word"]
        assert words and all(0 <= w.start_time <= w.end_time <= duration + 0.05 for w in words)
        assert all(low <= w.alternatives[0].confidence <= high for w in words)
        hypothesis = normalise_for_wer(" ".join(w.alternatives[0].content for w in words))
        assert jiwer.wer(reference, hypothesis) <= 0.30
    runs = list(worker.admin.stats()["engine_runs"].values())
    assert len(runs) == 2 and runs[0]["pid"] != runs[1]["pid"]  # two engine processes, not threads
    first, second = sorted(runs, key=lambda r: r["started"])
    assert second["started"] < first["finished"]  # and the two jobs overlapped in time
