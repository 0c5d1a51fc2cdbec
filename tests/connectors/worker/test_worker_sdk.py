"""The real speechmatics-batch AsyncClient against the local worker's reference engine."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from speechmatics.batch import AsyncClient, FormatType, JobConfig, JobError, JobStatus, JobType, TranscriptionConfig
from speechmatics.batch._models import TrackingConfig
from worker_fixtures import synthetic_call

from bytewax.speechmatics.connectors.speechmatics.wav import encode_wav
from bytewax.speechmatics.schemas.frames import BYTES_PER_SAMPLE


def chunk_wav(audio: bytes, rate: int, encoding: str, channels: int, start: float, end: float) -> tuple[bytes, int]:
    """The WAV a submitter uploads for [start, end) of a call, and its first frame."""
    width = BYTES_PER_SAMPLE[encoding] * channels
    first, last = round(start * rate), round(end * rate)
    return encode_wav(audio[first * width : last * width], rate, encoding, channels), first


def expected_results(truth: list[dict], first: int, last: int, rate: int, by_speaker: bool) -> list[tuple]:
    """The midpoint rule written out independently: (type, text, start, end, speaker) relative to the chunk."""
    c0, c1 = first / rate, last / rate
    out, kept_prev, labels = [], False, {}
    for w in truth:
        if w.get("type", "word") == "word":
            kept_prev = c0 <= (w["start_time"] + w["end_time"]) / 2 < c1
        if not kept_prev:
            continue
        speaker = "UU"
        if by_speaker:
            speaker = labels.setdefault(w["speaker"], f"S{len(labels) + 1}")
        s = min(max(w["start_time"], c0), c1)
        e = min(max(w["end_time"], c0), c1)
        out.append((w.get("type", "word"), w["text"], round(s - c0, 6), round(e - c0, 6), speaker))
    return out


def observed(transcript: Any) -> list[tuple]:
    return [
        (r.type, r.alternatives[0].content, r.start_time, r.end_time, r.alternatives[0].speaker)
        for r in transcript.results
    ]


def run(coro):
    return asyncio.run(coro)


def config(reference: str, diarization: str = "speaker", **tc: Any) -> JobConfig:
    return JobConfig(
        type=JobType.TRANSCRIPTION,
        transcription_config=TranscriptionConfig(language="en", diarization=diarization, **tc),
        tracking=TrackingConfig(reference=reference, tags=["t"]),
    )


FAST = {"polling_interval": 0.3, "min_polling_interval": 0.05, "timeout": 60}


def test_transcribe_returns_the_truth_inside_the_chunk_exactly(reference_worker):
    audio, truth = synthetic_call(60, seed=1)
    reference_worker.admin.register_call("call-a", audio, truth)
    wav, first = chunk_wav(audio, 16000, "pcm_s16le", 1, 10.23, 39.77)
    last = first + round((39.77 - 10.23) * 16000)

    async def go():
        async with AsyncClient(api_key="unused", url=reference_worker.url) as client:
            return await client.transcribe(io.BytesIO(wav), config=config("call-a/1"), **FAST)

    transcript = run(go())
    expected = expected_results(truth, first, last, 16000, by_speaker=True)
    assert len(expected) > 50
    assert observed(transcript) == expected
    assert transcript.job.tracking == {"reference": "call-a/1", "tags": ["t"]}
    stats = reference_worker.admin.stats()
    assert stats["jobs_by_reference"] == {"call-a/1": 1}
    assert stats["located"][transcript.job.id]["start_frame"] == first


@pytest.mark.parametrize(
    ("rate", "encoding", "channels", "diarization"),
    [(8000, "mulaw", 1, "speaker"), (48000, "pcm_s16le", 2, "channel"), (8000, "mulaw", 2, "channel")],
)
def test_every_contract_format_is_located(reference_worker, rate, encoding, channels, diarization):
    audio, truth = synthetic_call(30, sample_rate=rate, encoding=encoding, channels=channels, seed=rate + channels)
    reference_worker.admin.register_call("call-f", audio, truth, sample_rate=rate, encoding=encoding,
                                         channels=channels)
    wav, first = chunk_wav(audio, rate, encoding, channels, 0.0, 12.0)  # opens in the call's digital silence

    async def go():
        async with AsyncClient(api_key="unused", url=reference_worker.url) as client:
            return await client.transcribe(io.BytesIO(wav), config=config("call-f/0", diarization), **FAST)

    transcript = run(go())
    expected = expected_results(truth, first, first + 12 * rate, rate, by_speaker=diarization == "speaker")
    assert observed(transcript) == expected
    if diarization == "channel":
        by_voice = {w["text"]: f"channel_{w['channel']}" for w in truth if w.get("type", "word") == "word"}
        words = [r for r in transcript.results if r.type == "word"]
        assert {r.channel for r in words} == {"channel_1", "channel_2"}
        assert all(r.channel == by_voice[r.alternatives[0].content] for r in words)


def test_enrolled_speakers_keep_their_labels_in_a_later_job(reference_worker):
    audio, truth = synthetic_call(40, voices=("alice", "bob", "carol"), seed=4)
    reference_worker.admin.register_call("call-s", audio, truth)
    first_wav, _ = chunk_wav(audio, 16000, "pcm_s16le", 1, 1.0, 4.0)  # alice, then bob
    later_wav, later_first = chunk_wav(audio, 16000, "pcm_s16le", 1, 4.0, 15.0)  # carol first, then alice, bob

    async def go():
        async with AsyncClient(api_key="unused", url=reference_worker.url) as client:
            first = await client.transcribe(
                io.BytesIO(first_wav), config=config("call-s/0", speaker_diarization_config={"get_speakers": True}),
                **FAST,
            )
            enrol = [{"label": {"S1": "Agent", "S2": "Customer"}[s.label], "speaker_identifiers": s.speaker_identifiers}
                     for s in first.speakers]
            later = await client.transcribe(
                io.BytesIO(later_wav),
                config=config("call-s/1", speaker_diarization_config={"speakers": enrol, "get_speakers": True}),
                **FAST,
            )
            return first, later

    first, later = run(go())
    assert [s.label for s in first.speakers] == ["S1", "S2"]
    assert len({i for s in first.speakers for i in s.speaker_identifiers}) == 2
    voice_of = {w["text"]: w["speaker"] for w in truth}
    label_of = {"alice": "Agent", "bob": "Customer", "carol": "S1"}
    words = [r for r in later.results if r.type == "word"]
    assert voice_of[words[0].alternatives[0].content] == "carol"
    assert {voice_of[r.alternatives[0].content] for r in words} == {"alice", "bob", "carol"}
    assert all(r.alternatives[0].speaker == label_of[voice_of[r.alternatives[0].content]] for r in words)
    assert {s.label for s in later.speakers} == {"Agent", "Customer", "S1"}
    assert later_first == round(4.0 * 16000)


def test_txt_srt_listing_info_and_delete(reference_worker):
    audio, truth = synthetic_call(30, seed=5)
    reference_worker.admin.register_call("call-l", audio, truth)
    wav, _ = chunk_wav(audio, 16000, "pcm_s16le", 1, 2.0, 8.0)
    reference_worker.admin.set_faults(job_duration=3.0)  # so one job is still running when we delete

    async def go():
        async with AsyncClient(api_key="unused", url=reference_worker.url) as client:
            ids = [(await client.submit_job(io.BytesIO(wav), config=config(f"call-l/{n}"))).id for n in range(3)]
            with pytest.raises(JobError, match="still running"):
                await client.delete_job(ids[0])
            listed = await client.list_jobs(limit=2)
            txt = await client.wait_for_completion(ids[2], format_type=FormatType.TXT, **{
                k: v for k, v in FAST.items()})
            srt = await client.get_transcript(ids[2], format_type=FormatType.SRT)
            info = await client.get_job_info(ids[1])
            await client.delete_job(ids[1])
            after = await client.list_jobs()
            deleted = await client.get_job_info(ids[1])
            return ids, listed, txt, srt, info, after, deleted

    ids, listed, txt, srt, info, after, deleted = run(go())
    assert [j.id for j in listed] == [ids[2], ids[1]]
    assert [j.config.tracking.reference for j in listed] == ["call-l/2", "call-l/1"]
    words = [w["text"] for w in truth if w.get("type", "word") == "word" and 2.0 <= w["start_time"] < 7.5]
    assert txt.startswith("SPEAKER S1: ") and all(w in txt for w in words)
    assert srt.startswith("1\n00:00:00,") and " --> " in srt and all(w in srt for w in words)
    assert info.status in (JobStatus.RUNNING, JobStatus.DONE) and info.config.tracking.reference == "call-l/1"
    assert ids[1] not in [j.id for j in after] and ids[0] in [j.id for j in after]
    assert deleted.status == JobStatus.DELETED


def test_unknown_audio_gets_an_empty_transcript_and_wait_embeds_it(reference_worker):
    audio, _ = synthetic_call(10, seed=6)  # never registered

    async def go():
        async with AsyncClient(api_key="unused", url=reference_worker.url) as client:
            return await client.submit_job(io.BytesIO(encode_wav(audio, 16000, "pcm_s16le", 1)),
                                           config=config("unknown/0"), wait=30)

    job = run(go())
    assert job.status == JobStatus.DONE
    assert job.transcript is not None and job.transcript.results == [] and job.transcript.transcript_text == ""
