"""The public stages composed in one in-process dataflow (no Kafka), against the local worker's reference engine:
a start message's settings shape the jobs of its call only, and its metadata reaches every event of the call."""

from __future__ import annotations

from bytewax.connectors.kafka import KafkaSourceMessage
from stage_flow import run_stages
from worker_fixtures import synthetic_call

from bytewax.speechmatics.connectors.cli.publish import CallAudio, frames_of
from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings
from bytewax.speechmatics.flows import ChunkConfig
from bytewax.speechmatics.schemas.call_start import encode_start
from bytewax.speechmatics.schemas.frames import encode_frame


def test_start_messages_shape_their_calls_jobs_and_events(reference_worker, tmp_path) -> None:  # noqa: ANN001
    calls = {}
    for i, call_id in enumerate(("st-de", "st-plain")):
        audio, words = synthetic_call(12.0, seed=70 + i)
        reference_worker.admin.register_call(call_id, audio, words)
        calls[call_id] = (CallAudio(call_id, audio, 16000, 1), words)
    metadata = {"tenant": "acme", "ids": [1, 2]}
    messages = [KafkaSourceMessage(*encode_start("st-de", {"language": "de", "additional_vocab": ["Zorblax"]},
                                                 metadata)[:2], headers=[("kind", b"start")], topic="a", offset=0)]
    for call, _ in calls.values():
        for frame in frames_of(call, 100):
            key, value, headers = encode_frame(frame)
            messages.append(KafkaSourceMessage(key, value, headers=headers, topic="a", offset=len(messages)))
    settings = SubmitSettings(api_key=reference_worker.api_key or "k", batch_url=reference_worker.url,
                              journal_dir=str(tmp_path / "journal"))
    out, _ = run_stages(messages, settings, ChunkConfig(policy="fixed", chunk_seconds=5.0, overlap_seconds=0.3))

    for call_id, (_, words) in calls.items():
        mine = [e for e in out if e["call_id"] == call_id]
        assert [e["type"] for e in mine][0] == "call_started" and mine[-1]["type"] == "call_completed"
        said = [w["text"] for e in mine if e["type"] == "segment" for w in e["words"]]
        assert said == [w["text"] for w in words]
        jobs = [reference_worker.job(e["job"]["id"])["config"]["transcription_config"]
                for e in mine if e["type"] == "segment"]
        assert len(jobs) == 3
        if call_id == "st-de":
            assert all(e["metadata"] == metadata for e in mine)
            assert all(j["language"] == "de" and j["additional_vocab"] == [{"content": "Zorblax"}] for j in jobs)
            assert {e["language"] for e in mine} == {"de"}
        else:
            assert all("metadata" not in e for e in mine)
            assert all(j["language"] == "en" and "additional_vocab" not in j for j in jobs)
