"""Per-call control end to end: start messages on the audio topic, the flow as an OS process, a real broker, and the
local worker's reference engine, which keeps every job's config (GET /v2/jobs/{id}) so the test sees what each job
really asked for.

One run carries, concurrently: three calls with their own start messages (en / de / fr, each with its own vocabulary;
the French one a two-channel call with channel diarization agent / caller), a call without a start message, a call
whose start message is malformed, and a real-time session on the real-time topic. A second run is killed with
SIGKILL between a call's start message and its first chunk, and resumed from its recovery store.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from e2e_harness import (
    Output,
    OutputReader,
    TruthCall,
    flow_env,
    make_topics,
    start_flow,
    stitched_words,
)
from worker_fixtures import synthetic_call

from bytewax.speechmatics.connectors.cli.publish import CallAudio, frames_of, publish_calls
from bytewax.speechmatics.connectors.worker.control import WorkerProcess
from bytewax.speechmatics.schemas.call_start import encode_start, start_value
from bytewax.speechmatics.schemas.frames import encode_frame

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

DEADLINE_S = 300
SECONDS = 70.0  # three 30 s chunks per call

STARTS = {
    "pc-en": ({"language": "en", "additional_vocab": ["Acme Cloud", {"content": "Zorblax", "sounds_like": ["zor"]}]},
              {"tenant": "acme", "agent": "a-1", "direction": "inbound", "crm": {"case": 4711}}),
    "pc-de": ({"language": "de", "additional_vocab": ["Lisinopril", "Metoprolol"], "operating_point": "enhanced"},
              {"tenant": "globex", "agent": "a-2", "queue": "pharmacy"}),
    "pc-fr": ({"language": "fr", "additional_vocab": ["Orangina"], "diarization": "channel",
               "channel_labels": ["agent", "caller"]},
              {"tenant": "initech", "agent": "a-3", "direction": "outbound"}),
}
PLAIN, REFUSED = "pc-plain", "pc-refused"
#: A misspelt field: the schema refuses it, the call must still be transcribed.
BAD_START = b'{"config": {"language": "de", "diarisation": "channel"}, "metadata": {"tenant": "umbrella"}}'
RT_CALL = "pc-rt"


def vocab(config: dict) -> list[dict]:
    return [{"content": v} if isinstance(v, str) else v for v in config["additional_vocab"]]


def make_call(call_id: str, seed: int, channels: int = 1) -> TruthCall:
    audio, words = synthetic_call(SECONDS, seed=seed, channels=channels)
    return TruthCall(call_id, audio, words, channels=channels)


def register(worker: WorkerProcess, calls: list[TruthCall]) -> None:
    for call in calls:
        worker.admin.register_call(call.call_id, call.audio, call.words, channels=call.channels)


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes, list]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for key, value, headers in messages:
        producer.produce(topic, key=key, value=value, headers=headers)
    assert producer.flush(30) == 0


def rt_session() -> list[bytes]:
    def result(text: str, start: float, end: float) -> dict:
        return {"type": "word", "start_time": start, "end_time": end,
                "alternatives": [{"content": text, "confidence": 0.9, "language": "en", "speaker": "S1"}]}

    hello, there = result("hello", 0.5, 0.9), result("there", 1.0, 1.4)
    messages = [
        {"message": "RecognitionStarted", "id": "rt-session-1"},
        {"message": "AudioAdded", "seq_no": 1},
        {"message": "AddPartialTranscript", "metadata": {"start_time": 0.5, "end_time": 0.9}, "results": [hello]},
        {"message": "AddTranscript", "metadata": {"start_time": 0.5, "end_time": 1.4}, "results": [hello, there]},
        {"message": "AddTranslation", "language": "de", "results": [{"content": "hallo da"}]},
        {"message": "EndOfUtterance", "metadata": {"start_time": 1.4, "end_time": 1.4}},
        {"message": "Info", "type": "recognition_quality", "reason": "ok"},
        {"message": "EndOfTranscript"},
    ]
    return [orjson.dumps(m) for m in messages]


def job_configs(worker: WorkerProcess, events: list[dict]) -> list[dict]:
    """The transcription config each of these segments' jobs asked for (in chunk order), as the worker kept it."""
    jobs = {e["job"]["chunk_index"]: e["job"]["id"] for e in events if e["type"] == "segment" and e["job"]["id"]}
    assert jobs, "no job ids in the call's segments"
    return [worker.job(jobs[index])["config"]["transcription_config"] for index in sorted(jobs)]


def check_call(out: Output, call: TruthCall, metadata: dict | None) -> list[dict]:
    """The call came out complete and exactly as its truth, with call_started first and its metadata everywhere."""
    events = out.by_call()[call.call_id]
    assert stitched_words(events) == call.truth_texts(), call.call_id
    assert events[0]["type"] == "call_started" and events[-1]["type"] == "call_completed", call.call_id
    assert [e["type"] for e in events].count("call_started") == 1
    for event in events:
        assert event.get("metadata") == metadata, (call.call_id, event["type"])
    return events


def test_calls_with_their_own_settings_a_plain_call_a_refused_start_and_a_realtime_session(
        kafka_bootstrap: str, make_topic, reference_worker: WorkerProcess, tmp_path: Path) -> None:  # noqa: ANN001
    topics = make_topics(make_topic)
    own = {cid: make_call(cid, 40 + i, channels=2 if cid == "pc-fr" else 1) for i, cid in enumerate(STARTS)}
    plain, refused = make_call(PLAIN, 50), make_call(REFUSED, 51)
    register(reference_worker, [*own.values(), plain, refused])
    reader = OutputReader(kafka_bootstrap, topics)
    run = start_flow(flow_env(kafka_bootstrap, topics, reference_worker, tmp_path / "journal"), tmp_path / "flow.log")
    try:
        calls = [CallAudio(c.call_id, c.audio, c.sample_rate, c.channels, start_value(*STARTS[c.call_id]))
                 for c in own.values()]
        calls += [plain.as_call_audio(), CallAudio(REFUSED, refused.audio, 16000, 1, BAD_START)]
        publish_calls(calls, topics.audio, frame_ms=20, speed=0.0,
                      producer_config={"bootstrap.servers": kafka_bootstrap})
        produce(kafka_bootstrap, topics.rt, [(RT_CALL.encode(), value, []) for value in rt_session()])
        expected = {*own, PLAIN, REFUSED, RT_CALL}
        out = reader.poll_until(lambda o: o.completed() >= expected and o.letters, DEADLINE_S,
                                check=lambda: None if run.alive() else pytest.fail(run.log()))
    finally:
        run.stop()
        reader.close()

    # Three calls, each with its own language, vocabulary, diarization and metadata, on every job and every event.
    for call_id, call in own.items():
        config, metadata = STARTS[call_id]
        events = check_call(out, call, metadata)
        started = events[0]
        assert started["language"] == config["language"] and started["warnings"] == []
        assert started["settings"]["additional_vocab"] == len(config["additional_vocab"])
        configs = job_configs(reference_worker, events)
        assert len(configs) == 3, call_id
        for asked in configs:
            assert asked["language"] == config["language"], call_id
            assert asked["additional_vocab"] == vocab(config), call_id
        segments = [e for e in events if e["type"] == "segment"]
        assert {e["language"] for e in segments} == {config["language"]}  # the engine answered in the job's language
        if call_id == "pc-fr":  # channel diarization with the call's labels, on a 2-channel call
            assert started["settings"]["diarization"] == "channel"
            assert started["settings"]["channel_labels"] == ["agent", "caller"]
            assert all(a["diarization"] == "channel" and a["channel_diarization_labels"] == ["agent", "caller"]
                       and "speaker_diarization_config" not in a for a in configs)
            labels = {"alice": "agent", "bob": "caller"}
            said = [(w["text"], w["speaker"]) for e in segments for w in e["words"] if w["type"] == "word"]
            truth = [(w["text"], labels[w["speaker"]]) for w in call.words if w.get("type", "word") == "word"]
            assert said == truth
        else:  # the flow's default diarization (speaker, chained with enrolment) still applies
            assert started["settings"]["diarization"] == "speaker"
            assert all(a["diarization"] == "speaker" for a in configs)
            assert configs[0]["speaker_diarization_config"] == {"get_speakers": True}
        if call_id == "pc-de":
            assert all(a["model"] == "enhanced" for a in configs)

    # A call without a start message: as before (the flow's defaults, no metadata), announced by its first frame.
    events = check_call(out, plain, None)
    assert events[0]["settings"] == {"language": "en", "diarization": "speaker", "channel_labels": None,
                                     "operating_point": "enhanced", "additional_vocab": 0}
    assert all(a["language"] == "en" and "additional_vocab" not in a for a in job_configs(reference_worker, events))

    # A malformed start message: on the DLQ naming the field, the call transcribed with the defaults, and a warning.
    (letter,) = [h for key, h in out.letters if key == REFUSED.encode()]
    assert letter["dlq.stage"] == "decode" and "diarisation" in letter["dlq.reason"]
    assert "start message" in letter["dlq.reason"] and letter["kind"] == "start"
    events = check_call(out, refused, None)
    (warning,) = events[0]["warnings"]
    assert "start message refused" in warning and "diarisation" in warning
    assert all(a["language"] == "en" for a in job_configs(reference_worker, events))

    # The real-time session: started, a final, a turn end, completed (source realtime); the rest counted and ignored.
    rt = out.by_call()[RT_CALL]
    assert [(e["type"], e["source"]) for e in rt if e["is_final"]] == [
        ("call_started", "realtime"), ("segment", "realtime"), ("utterance_end", "realtime"),
        ("call_completed", "realtime")]
    assert rt[-1]["counts"]["words"] == 2 and rt[-1]["error"] is None
    assert not [h for key, h in out.letters if key == RT_CALL.encode()]


def committed_snapshot_of(recovery: Path, call_id: str) -> bool:
    """The chunker's state of `call_id` is in a snapshot the recovery store has committed (what a restart resumes)."""
    for part in recovery.glob("part-*.sqlite3"):
        try:
            with sqlite3.connect(part, timeout=5) as db:
                row = db.execute("SELECT MAX(snap_epoch) FROM snaps WHERE step_id LIKE '%.chunk.%' AND state_key = ?",
                                 (call_id,)).fetchone()
                committed = db.execute("SELECT MAX(commit_epoch) FROM commits").fetchone()
        except sqlite3.OperationalError:  # the flow is writing: look again on the next poll
            continue
        if row and row[0] is not None and committed and committed[0] is not None and committed[0] >= row[0]:
            return True
    return False


def test_a_kill_9_between_the_start_message_and_the_first_chunk_keeps_the_calls_settings(
        kafka_bootstrap: str, make_topic, reference_worker: WorkerProcess, tmp_path: Path) -> None:  # noqa: ANN001
    """SIGKILL once the start message (and a few seconds of audio, less than a chunk) is in a committed snapshot: the
    restarted flow never sees that start message again (it resumes after it), yet every job and event of the call
    has the call's settings and metadata."""
    from bytewax.recovery import init_db_dir

    topics = make_topics(make_topic)
    call = make_call("pc-crash", 60)
    register(reference_worker, [call])
    config = {"language": "de", "additional_vocab": ["Lisinopril"], "diarization": "none"}
    metadata = {"tenant": "acme", "agent": "a-9", "crm": {"ticket": "T-1"}}
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)
    env = flow_env(kafka_bootstrap, topics, reference_worker, tmp_path / "journal", BWSM_IDLE_TIMEOUT_SECONDS="120")
    reader = OutputReader(kafka_bootstrap, topics)
    frames = [encode_frame(f) for f in frames_of(call.as_call_audio(), 20)]
    head = 250  # 5 s of audio: far from the first 30 s chunk
    run = start_flow(env, tmp_path / "flow.log", recovery=recovery)
    try:
        produce(kafka_bootstrap, topics.audio, [encode_start(call.call_id, config, metadata), *frames[:head]])
        reader.poll_until(lambda o: call.call_id in o.by_call(), DEADLINE_S,
                          check=lambda: None if run.alive() else pytest.fail(run.log()))
        reader.poll_until(lambda o: committed_snapshot_of(recovery, call.call_id), DEADLINE_S,
                          check=lambda: None if run.alive() else pytest.fail(run.log()))
        assert not [e for e in reader.output.events if e["type"] == "segment"]  # no chunk was cut before the kill
        run.kill()
        run = start_flow(env, tmp_path / "flow.log", recovery=recovery)
        produce(kafka_bootstrap, topics.audio, frames[head:])
        out = reader.poll_until(lambda o: call.call_id in o.completed(), DEADLINE_S,
                                check=lambda: None if run.alive() else pytest.fail(run.log()))
    finally:
        run.stop()
        reader.close()
    events = out.by_call()[call.call_id]
    assert stitched_words(events) == call.truth_texts()
    started = [e for e in events if e["type"] == "call_started"]
    assert started and all(orjson.dumps(e) == orjson.dumps(started[0]) for e in started)  # repeats are identical
    assert started[0]["settings"]["language"] == "de" and started[0]["settings"]["diarization"] == "none"
    assert all(e["metadata"] == metadata for e in events)
    configs = job_configs(reference_worker, events)
    assert len(configs) == 3
    for asked in configs:
        assert asked["language"] == "de" and asked["additional_vocab"] == [{"content": "Lisinopril"}]
        assert "diarization" not in asked and "speaker_diarization_config" not in asked
