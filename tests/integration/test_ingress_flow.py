"""The front door end to end: a Twilio session (both tracks, customParameters) and an AudioHook session, played by a
real websocket client into the ingress process, through the real broker and the micro-batch flow (its own process)
with the local worker's reference engine: each call's transcript comes out with its words labelled caller/agent by
channel and the platform's metadata on every event."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from e2e_harness import OutputReader, flow_env, make_topics, start_flow, stitched_words
from ingress_harness import start_ingress
from worker_fixtures import synthetic_call

from bytewax.speechmatics.connectors.ingress.replay import audiohook_session, play, twilio_session
from bytewax.speechmatics.connectors.worker.control import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SECONDS = 12.0
TWILIO_CALL = "CA-e2e-front-door"
AUDIOHOOK_SESSION = "3c0d1a52-0000-4000-8000-00000000e2e0"


def test_twilio_and_audiohook_sessions_come_out_as_labelled_transcripts_with_their_metadata(
        kafka_bootstrap: str, make_topic, reference_worker: WorkerProcess, tmp_path: Path) -> None:  # noqa: ANN001
    topics = make_topics(make_topic)
    calls = {}
    for i, call_id in enumerate((TWILIO_CALL, AUDIOHOOK_SESSION)):
        audio, words = synthetic_call(SECONDS, sample_rate=8000, encoding="mulaw", channels=2, seed=70 + i)
        reference_worker.admin.register_call(call_id, audio, words, sample_rate=8000, encoding="mulaw", channels=2)
        calls[call_id] = (audio[0::2], audio[1::2], words)  # channel 1 = the caller's track, channel 2 = the agent's
    custom = {"tenant": "acme", "crm_case": "4711", "config": orjson.dumps({"language": "en"}).decode()}
    twilio = twilio_session(TWILIO_CALL, calls[TWILIO_CALL][0], calls[TWILIO_CALL][1], custom=custom, swap_every=9)
    audiohook = audiohook_session(AUDIOHOOK_SESSION, *calls[AUDIOHOOK_SESSION][:2], custom={"tenant": "globex"},
                                  conversation_id="c0ffee00-0000-4000-8000-000000000001")

    ingress = start_ingress(kafka_bootstrap, topics.audio, tmp_path / "ingress.log")
    reader = OutputReader(kafka_bootstrap, topics)
    flow = start_flow(flow_env(kafka_bootstrap, topics, reference_worker, tmp_path / "journal"), tmp_path / "flow.log")
    try:
        async def both() -> None:
            await asyncio.gather(play(ingress.url("/twilio"), twilio, speed=0),
                                 play(ingress.url("/audiohook"), audiohook, speed=0))

        asyncio.run(both())
        out = reader.poll_until(lambda o: o.completed() >= set(calls), 240,
                                check=lambda: None if flow.alive() else pytest.fail(flow.log()))
    finally:
        flow.stop()
        ingress.stop()
        reader.close()

    expected_metadata = {
        TWILIO_CALL: {"tenant": "acme", "crm_case": "4711"},
        AUDIOHOOK_SESSION: {"tenant": "globex", "conversationId": "c0ffee00-0000-4000-8000-000000000001",
                            "organizationId": "00000000-0000-0000-0000-000000000001", "language": "en-US",
                            "participant": {"id": "00000000-0000-0000-0000-000000000003", "ani": "+15550100",
                                            "aniName": "Caller", "dnis": "+15550199"}},
    }
    labels = {"alice": "caller", "bob": "agent"}  # synthetic_call: alice speaks on channel 1, bob on channel 2
    for call_id, (_, _, words) in calls.items():
        events = out.by_call()[call_id]
        assert events[0]["type"] == "call_started" and events[-1]["type"] == "call_completed"
        assert all(e["metadata"] == expected_metadata[call_id] for e in events), call_id
        assert events[0]["settings"]["diarization"] == "channel"
        assert events[0]["settings"]["channel_labels"] == ["caller", "agent"]
        assert stitched_words(events) == [w["text"] for w in words]
        said = [(w["text"], w["speaker"]) for e in events if e["type"] == "segment" for w in e["words"]
                if w["type"] == "word"]
        assert said == [(w["text"], labels[w["speaker"]]) for w in words if w.get("type", "word") == "word"]
