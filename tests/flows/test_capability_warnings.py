"""Honest capability: a call asking the local whisper engine for what it cannot do is told so in its call_started.

The composed stages (decode -> chunk -> transcribe -> stitch, as the README composes them) against a real local
worker with the whisper engine, over real HTTP, on the first seconds of the real pyannote call: speaker diarization
runs (no warning, speakers on the words), a language the engine lacks is rejected as the real API rejects it (a 400 the
flow dead-letters) and says so, a plain call has no warning, and a second run repeats call_started byte for byte.
"""

from __future__ import annotations

import json
import urllib.request

import orjson
import pytest
import soundfile
from bytewax.connectors.kafka import KafkaSourceMessage
from stage_flow import run_stages

from bytewax.speechmatics.connectors.cli.sample_audio import pyannote_sample
from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings
from bytewax.speechmatics.flows import ChunkConfig
from bytewax.speechmatics.schemas.call_start import encode_start
from bytewax.speechmatics.schemas.frames import AudioFrame, encode_frame

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
SECONDS = 8
FRAME_SAMPLES = 16000 // 10  # 100 ms frames


def messages(call_id: str, pcm: bytes, config: dict | None) -> list[KafkaSourceMessage]:
    out = []
    if config is not None:
        key, value, headers = encode_start(call_id, config)
        out.append(KafkaSourceMessage(key, value, headers=headers, topic="calls.audio"))
    step = FRAME_SAMPLES * 2
    count = len(pcm) // step
    for seq in range(count):
        key, value, headers = encode_frame(AudioFrame(call_id, seq, pcm[seq * step:(seq + 1) * step],
                                                      end=seq == count - 1))
        out.append(KafkaSourceMessage(key, value, headers=headers, topic="calls.audio"))
    return out


def run(source: list[KafkaSourceMessage], settings: SubmitSettings) -> tuple[list[dict], list]:
    return run_stages(source, settings, ChunkConfig(policy="fixed", chunk_seconds=30.0, overlap_seconds=1.0))


def test_the_whisper_engine_says_what_it_cannot_do_in_call_started(local_worker) -> None:  # noqa: ANN001
    samples, rate = soundfile.read(str(pyannote_sample().wav), dtype="int16")
    assert rate == 16000
    pcm = samples[: SECONDS * rate].tobytes()
    worker = local_worker(engine="whisper", parallel=1)
    discovery = json.load(urllib.request.urlopen(f"{worker.base}/v1/discovery/features", timeout=10))
    assert discovery["local_engine"]["diarization"] == ["none", "channel", "speaker"]
    assert "xx" not in discovery["batch"]["transcription"][0]["languages"]

    source = [*messages("spk", pcm, {"diarization": "speaker"}), *messages("plain", pcm, None),
              *messages("xx", pcm, {"language": "xx"})]
    # No key: the batch URL is a self-hosted worker, so the flow needs none.
    settings = SubmitSettings(batch_url=worker.url, max_in_flight=1)  # one engine: one job at a time
    events, letters = run(source, settings)
    by_call: dict[str, list[dict]] = {}
    for event in events:
        by_call.setdefault(event["call_id"], []).append(event)
    started = {cid: evs[0] for cid, evs in by_call.items()}
    assert {cid: e["type"] for cid, e in started.items()} == dict.fromkeys(("spk", "plain", "xx"), "call_started")

    # Speaker diarization is among what whisper does (engines/diarize.py): no warning, and speakers.
    assert started["spk"]["warnings"] == [] and started["spk"]["settings"]["diarization"] == "speaker"
    words = [w for e in by_call["spk"] if e["type"] == "segment" for w in e["words"]]
    assert [w for w in words if w["type"] == "word"]  # whisper heard the call ...
    assert None not in {w["speaker"] for w in words if w["type"] == "word"}  # ... and gave each word a speaker
    spk_job = next(e["job"]["id"] for e in by_call["spk"] if e["type"] == "segment")
    transcript = json.load(urllib.request.urlopen(f"{worker.url}/jobs/{spk_job}/transcript", timeout=10))
    assert not transcript["metadata"].get("warnings")
    # speaker identification, as the flow asks for it (get_speakers): an identifier per voice for the next job
    assert transcript["speakers"] and all(s["speaker_identifiers"][0].startswith("bwsm-voice-v1:")
                                          for s in transcript["speakers"])

    assert started["plain"]["warnings"] == []

    (warning,) = started["xx"]["warnings"]
    assert warning == "language 'xx' is not available in the local whisper engine: the call's jobs are rejected"
    (failed,) = [e for e in by_call["xx"] if e["type"] == "segment"]
    assert "HTTP 400" in failed["error"] and not failed["words"]  # refused at POST, as the real API refuses it
    assert [letter.stage for letter in letters] == ["submit"]

    # Replayed input, replayed call_started: byte for byte (the warnings depend on the config and the engine only).
    again, _ = run([m for m in source if m.key == b"spk"], settings)
    assert orjson.dumps(again[0]) == orjson.dumps(started["spk"])
