"""The real-time bridge as users run it (`bytewax-speechmatics realtime`, its own process), with a real broker, the
official speechmatics-rt SDK and the local worker's real-time endpoint (reference engine).

Per call: the server's messages land on the real-time topic unchanged and in order, keyed by the call id, with the
call's own settings; errors are retried or end the call's real-time path; a dropped socket and a kill -9 resume in a
new session from the audio not acknowledged, with session times moved onto the call's timeline.
"""

from __future__ import annotations

import threading
import time
import zlib
from pathlib import Path

import pytest
from realtime_fixtures import (
    RtReader,
    bridge_env,
    ended,
    final_words,
    rt_stats,
    set_rt_faults,
    start_bridge,
)
from worker_fixtures import synthetic_call

from bytewax.speechmatics.connectors.cli.publish import CallAudio, publish_calls
from bytewax.speechmatics.schemas.call_start import start_value

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


def _words(words: list[dict], since: float = 0.0) -> list[tuple[str, float, float]]:
    return [(w["text"], round(w["start_time"], 3), round(w["end_time"], 3)) for w in words
            if w.get("type", "word") == "word" and (w["start_time"] + w["end_time"]) / 2 >= since]


@pytest.fixture
def rt_worker(reference_worker):
    set_rt_faults(reference_worker, {})
    yield reference_worker
    set_rt_faults(reference_worker, {})


def _publish(bootstrap: str, topic: str, calls: list[CallAudio], speed: float = 0.0) -> None:
    publish_calls(calls, topic, frame_ms=20, speed=speed, producer_config={"bootstrap.servers": bootstrap})


def _one_call(bootstrap: str, make_topic, worker, tmp_path: Path, call: CallAudio, **env: str):
    """Run a bridge over one published call until its real-time path ends: (its messages, the bridge's log)."""
    audio_topic, rt_topic = make_topic("audio", 1), make_topic("rt", 1)
    bridge = start_bridge(bridge_env(bootstrap, audio_topic, rt_topic, worker, **env), tmp_path / "bridge.log")
    reader = RtReader(bootstrap, rt_topic)
    try:
        _publish(bootstrap, audio_topic, [call])
        got = reader.poll_until(lambda c: ended(c.get(call.call_id, [])), 60)[call.call_id]
    finally:
        bridge.stop()
        reader.close()
    return got, bridge.log()


def test_bridge_relays_every_call_in_order_with_its_settings(kafka_bootstrap, make_topic, rt_worker,
                                                            tmp_path: Path):
    audio_topic, rt_topic = make_topic("audio", 2), make_topic("rt", 2)
    calls, truths = [], {}
    for i in range(3):
        audio, words = synthetic_call(5.0, seed=40 + i)
        call_id = f"rtb-{i}"
        rt_worker.admin.register_call(call_id, audio, words)
        start = start_value({"language": "de", "diarization": "speaker"}, {"tenant": "t"}) if i == 0 else None
        calls.append(CallAudio(call_id, audio, 16000, 1, start))
        truths[call_id] = words
    bridge = start_bridge(bridge_env(kafka_bootstrap, audio_topic, rt_topic, rt_worker), tmp_path / "bridge.log")
    reader = RtReader(kafka_bootstrap, rt_topic)
    try:
        _publish(kafka_bootstrap, audio_topic, calls)
        got = reader.poll_until(lambda c: len(c) == 3 and all(ended(m) for m in c.values()), 60,
                                check=lambda: bridge.proc.poll() is None or pytest.fail(bridge.log()))
    finally:
        bridge.stop()
        reader.close()
    for call_id, messages in got.items():
        kinds = [m.kind for m in messages]
        assert kinds[0] == "RecognitionStarted" and kinds[-1] == "EndOfTranscript", call_id
        assert [m.message["seq_no"] for m in messages if m.kind == "AudioAdded"] == list(range(1, 251))
        assert {m.headers["rt_session"] for m in messages} == {"1"}
        assert {m.headers["rt_offset"] for m in messages} == {"0.000000"}
        assert final_words(messages) == _words(truths[call_id])
        alternatives = [r["alternatives"][0] for m in messages if m.kind == "AddTranscript"
                        for r in m.message["results"]]
        if call_id == "rtb-0":  # its start message: German, speaker diarization
            assert {a["language"] for a in alternatives} == {"de"}
            assert {a["speaker"] for a in alternatives} == {"S1", "S2"}
        else:
            assert {a["language"] for a in alternatives} == {"en"}
            assert {a["speaker"] for a in alternatives} == {"UU"}
        assert [m for m in messages if m.kind == "AddPartialTranscript"]
    log = bridge.log()
    assert "word1" not in log and "tenant" not in log  # no transcript text, no metadata in logs


@pytest.mark.parametrize(("faults", "sessions", "outcome"), [
    ({"errors": ["invalid_config"]}, 1, "invalid_config"),
    ({"errors": ["not_authorised"]}, 1, "not_authorised"),
    ({"errors": ["quota_exceeded"]}, 2, "EndOfTranscript"),
    ({"errors": ["quota_exceeded"] * 3}, 3, "quota_exceeded"),
])
def test_errors_are_retried_or_end_the_call(kafka_bootstrap, make_topic, rt_worker, tmp_path: Path, faults,
                                            sessions, outcome):
    audio, words = synthetic_call(3.0, seed=50)
    rt_worker.admin.register_call("rt-err", audio, words)
    set_rt_faults(rt_worker, faults)
    before = rt_stats(rt_worker)["counts"]
    got, log = _one_call(kafka_bootstrap, make_topic, rt_worker, tmp_path, CallAudio("rt-err", audio, 16000, 1),
                         BWSM_RT_MAX_ATTEMPTS="3")
    tried = sum(rt_stats(rt_worker)["counts"].get(k, 0) - before.get(k, 0) for k in ("sessions",)) + sum(
        rt_stats(rt_worker)["counts"].get(f"error.{t}", 0) - before.get(f"error.{t}", 0)
        for t in ("invalid_config", "not_authorised", "quota_exceeded"))
    assert tried == sessions
    last = got[-1]
    if outcome == "EndOfTranscript":
        assert last.kind == "EndOfTranscript" and not [m for m in got if m.kind == "Error"]
        assert final_words(got) == _words(words)
    else:
        assert last.kind == "Error" and last.message["type"] == outcome
        assert [m.kind for m in got] == ["Error"]  # refused at the start: nothing else
    assert f"type={outcome}" in log or outcome == "EndOfTranscript"


def test_dropped_socket_resumes_in_a_new_session(kafka_bootstrap, make_topic, rt_worker, tmp_path: Path):
    audio, words = synthetic_call(6.0, seed=60)
    rt_worker.admin.register_call("rt-drop", audio, words)
    set_rt_faults(rt_worker, {"drop_after": 120})
    got, _ = _one_call(kafka_bootstrap, make_topic, rt_worker, tmp_path, CallAudio("rt-drop", audio, 16000, 1))
    _check_resumed(got, words, frames=300)


def _check_resumed(got, words, frames: int, resumed_from: int = 0) -> None:
    """Two sessions or more; each later one starts at the first frame its predecessors had not acknowledged, with
    times on the call's timeline; no frame twice in one session; the sessions' finals cover the call."""
    sessions: dict[str, list] = {}
    for m in got:
        sessions.setdefault(m.headers["rt_session"], []).append(m)
    assert len(sessions) >= 2 and got[-1].kind == "EndOfTranscript"
    ids = [m.message["id"] for m in got if m.kind == "RecognitionStarted"]
    assert len(ids) == len(set(ids)) == len(sessions)
    acked_until = -1  # the call's last frame acknowledged so far
    for number in sorted(sessions, key=int):
        messages = sessions[number]
        first = int(messages[0].headers["rt_first_seq"])
        assert 0 <= first <= acked_until + 1 and (number != "1" or first == 0)
        assert number != "2" or first >= resumed_from
        assert float(messages[0].headers["rt_offset"]) == pytest.approx(first * 0.02)
        acks = [m.message["seq_no"] for m in messages if m.kind == "AudioAdded"]
        assert acks == list(range(1, len(acks) + 1))  # each frame once into this session
        acked_until = max(acked_until, first + len(acks) - 1)
        offset = float(messages[0].headers["rt_offset"])
        clipped = {(t, round(max(a, offset), 3), b) for t, a, b in _words(words)}  # a word cut by the session edge
        assert set(final_words(messages)) <= set(_words(words)) | clipped  # times moved onto the call's timeline
    assert acked_until == frames - 1
    truth = _words(words)
    boundaries = [float(ms[0].headers["rt_offset"]) for n, ms in sessions.items() if n != "1"]
    missing = {w[0] for w in truth} - {w[0] for w in final_words(got)}
    missing = {w for w in truth if w[0] in missing}
    # only a word cut by a session boundary may be lost (its end came after the last acknowledgement committed)
    assert all(any(abs((w[1] + w[2]) / 2 - b) < 0.6 for b in boundaries) for w in missing), missing


def wait_committed(bootstrap: str, group: str, topic: str, call_id: str, seq: int, deadline_s: float) -> None:
    """Until the bridge's group has committed progress for the call past frame `seq` (its kill -9 safe state)."""
    from confluent_kafka import Consumer, TopicPartition

    from bytewax.speechmatics.connectors.speechmatics.realtime_progress import decode_metadata

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    deadline = time.monotonic() + deadline_s
    try:
        while True:
            [tp] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
            if decode_metadata(tp.metadata).get(call_id, (-1,))[0] >= seq:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no committed progress past frame {seq} within {deadline_s:.0f}s")
            time.sleep(0.1)
    finally:
        consumer.close()


def test_kill_9_resumes_from_unacknowledged_audio(kafka_bootstrap, make_topic, rt_worker, tmp_path: Path):
    audio_topic, rt_topic = make_topic("audio", 1), make_topic("rt", 1)
    audio, words = synthetic_call(8.0, seed=70)
    rt_worker.admin.register_call("rt-kill", audio, words)
    env = bridge_env(kafka_bootstrap, audio_topic, rt_topic, rt_worker)
    bridge = start_bridge(env, tmp_path / "bridge1.log")
    reader = RtReader(kafka_bootstrap, rt_topic)
    publisher = threading.Thread(target=_publish, args=(kafka_bootstrap, audio_topic,
                                                        [CallAudio("rt-kill", audio, 16000, 1)], 2.0))
    try:
        publisher.start()  # 8 s of audio in 4 s

        def acked_for_a_while(calls) -> bool:
            acks = [m for m in calls.get("rt-kill", []) if m.kind == "AudioAdded"]
            return len(acks) >= 120

        reader.poll_until(acked_for_a_while, 60)
        wait_committed(kafka_bootstrap, env["BWSM_RT_GROUP"], audio_topic, "rt-kill", 100, 30)
        bridge.kill()
        bridge = start_bridge(env, tmp_path / "bridge2.log")
        publisher.join(60)
        got = reader.poll_until(lambda c: ended(c.get("rt-kill", [])), 90)["rt-kill"]
    finally:
        bridge.stop()
        reader.close()
    _check_resumed(got, words, frames=400, resumed_from=101)


@pytest.mark.parametrize("overflow", ["wait", "batch"])
def test_calls_beyond_max_sessions_wait_or_go_batch_only(kafka_bootstrap, make_topic, rt_worker, tmp_path: Path,
                                                         overflow):
    audio_topic, rt_topic = make_topic("audio", 1), make_topic("rt", 1)
    calls = []
    for i in range(2):
        audio, words = synthetic_call(3.0, seed=90 + i)
        rt_worker.admin.register_call(f"rt-over-{i}", audio, words)
        calls.append(CallAudio(f"rt-over-{i}", audio, 16000, 1))
    bridge = start_bridge(bridge_env(kafka_bootstrap, audio_topic, rt_topic, rt_worker, BWSM_RT_MAX_SESSIONS="1",
                                     BWSM_RT_OVERFLOW=overflow), tmp_path / "bridge.log")
    reader = RtReader(kafka_bootstrap, rt_topic)
    try:
        bridge.wait_assigned()
        _publish(kafka_bootstrap, audio_topic, calls)
        want = 2 if overflow == "wait" else 1
        got = reader.poll_until(lambda c: sum(ended(m) for m in c.values()) >= want, 60)
        if overflow == "batch":
            deadline = time.monotonic() + 10
            while "batch only" not in bridge.log() and time.monotonic() < deadline:
                time.sleep(0.1)
    finally:
        bridge.stop()
        reader.close()
    if overflow == "wait":  # one after the other, both complete
        assert all(m[-1].kind == "EndOfTranscript" for m in got.values()) and len(got) == 2
        first, second = (got[c.call_id] for c in calls)
        assert first[-1].timestamp <= second[0].timestamp or second[-1].timestamp <= first[0].timestamp
    else:  # the second call is left to the batch path: nothing on the real-time topic, one log line
        assert len(got) == 1 and next(iter(got.values()))[-1].kind == "EndOfTranscript"
        assert "beyond BWSM_RT_MAX_SESSIONS=1: batch only" in bridge.log()


def test_two_bridges_share_the_calls_through_a_rebalance(kafka_bootstrap, make_topic, rt_worker, tmp_path: Path):
    audio_topic, rt_topic = make_topic("audio", 2), make_topic("rt", 2)
    calls, truths = [], {}
    ids = [f"rt-reb-{i}" for i in range(40)]
    # two calls on each partition (librdkafka's default partitioner: CRC32 of the key), so one of them changes owner
    ids = [c for c in ids if zlib.crc32(c.encode()) % 2 == 0][:2] + [c for c in ids if zlib.crc32(c.encode()) % 2][:2]
    for i, call_id in enumerate(ids):
        audio, words = synthetic_call(6.0, seed=110 + i)
        rt_worker.admin.register_call(call_id, audio, words)
        calls.append(CallAudio(call_id, audio, 16000, 1))
        truths[call_id] = words
    env = bridge_env(kafka_bootstrap, audio_topic, rt_topic, rt_worker)
    first = start_bridge(env, tmp_path / "bridge1.log")
    second = None
    reader = RtReader(kafka_bootstrap, rt_topic)
    publisher = threading.Thread(target=_publish, args=(kafka_bootstrap, audio_topic, calls, 2.0))
    try:
        first.wait_assigned()
        publisher.start()
        reader.poll_until(lambda c: sum(m.kind == "AddTranscript" for ms in c.values() for m in ms) >= 4, 60)
        second = start_bridge(env, tmp_path / "bridge2.log")  # joins the group: the partitions are shared out
        publisher.join(60)
        got = reader.poll_until(lambda c: len(c) == 4 and all(m[-1].kind == "EndOfTranscript" for m in c.values()),
                                90)
    finally:
        for bridge in (first, second):
            if bridge is not None:
                bridge.stop()
        reader.close()
    assert "session starting" in second.log()  # the second bridge took calls over
    for call_id, messages in got.items():
        starts = [m.headers for m in messages if m.kind == "RecognitionStarted"]
        numbers = [h["rt_session"] for h in starts]
        assert len(numbers) == len(set(numbers)), (call_id, numbers)  # a moved call continues its numbering
        assert [h["rt_first_seq"] for h in starts].count("0") == 1, (call_id, starts)  # and resumes, not restarts
        said = {w[0] for w in final_words(messages)}
        truth = _words(truths[call_id])
        boundaries = [float(m.headers["rt_offset"]) for m in messages if m.kind == "RecognitionStarted"]
        assert all(any(abs((w[1] + w[2]) / 2 - b) < 0.6 for b in boundaries) for w in truth if w[0] not in said)


def test_two_channel_call_is_a_multichannel_session_with_channel_labels(kafka_bootstrap, make_topic, rt_worker,
                                                                        tmp_path: Path):
    audio, words = synthetic_call(5.0, seed=120, channels=2)
    rt_worker.admin.register_call("rt-stereo", audio, words, channels=2)
    start = start_value({"diarization": "channel", "channel_labels": ["agent", "customer"]})
    got, _ = _one_call(kafka_bootstrap, make_topic, rt_worker, tmp_path, CallAudio("rt-stereo", audio, 16000, 2, start))
    assert got[0].kind == "RecognitionStarted" and got[0].message["channel_ids"] == ["agent", "customer"]
    assert got[-1].kind == "EndOfTranscript"
    for n, label in ((1, "agent"), (2, "customer")):
        said = [w for m in got if m.kind == "AddTranscript" and m.message["channel"] == label
                for w in final_words([m])]
        assert said == _words([w for w in words if w["channel"] == n]), label
        acks = [m.message["seq_no"] for m in got if m.kind == "ChannelAudioAdded" and m.message["channel"] == label]
        assert acks == list(range(1, 251))
    # the flow's normalization turns them into per-channel segments whose words carry the channel's label
    from bytewax.speechmatics.flows.realtime import RealtimeState, normalize

    state = RealtimeState()
    events = [e for m in got for e in normalize("rt-stereo", m.message, state, float(m.headers["rt_offset"]))]
    speakers = {w["speaker"] for e in events if e["type"] == "segment" and e["is_final"] for w in e["words"]}
    assert speakers == {"agent", "customer"}
