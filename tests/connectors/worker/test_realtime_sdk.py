"""The local worker's real-time endpoint, driven by the official speechmatics-rt SDK (real websockets).

Session lifecycle, partials before finals with the reference engine's exact words, a session that starts mid-call,
mid-session reconfiguration, the audio formats, and every error type of the spec.
"""

from __future__ import annotations

import asyncio
import io
import wave

import numpy as np
import pytest
from aiohttp import ClientSession, WSMsgType
from realtime_fixtures import assert_partials_before_finals, record_all, rt_stats, rt_url, set_rt_faults, stream
from speechmatics.rt import (
    AsyncClient,
    AsyncMultiChannelClient,
    AudioEncoding,
    AudioFormat,
    ConversationConfig,
    ServerMessageType,
    TranscriptionConfig,
    TranscriptionError,
)
from worker_fixtures import synthetic_call

from bytewax.speechmatics.connectors.worker.realtime_faults import ERROR_TYPES

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def rt_worker(reference_worker):
    set_rt_faults(reference_worker, {})
    yield reference_worker
    set_rt_faults(reference_worker, {})


def _truth_words(words, since=0.0):
    return [(w["text"], round(w["start_time"] - since, 6), round(w["end_time"] - since, 6)) for w in words
            if (w["start_time"] + w["end_time"]) / 2 >= since and w.get("type", "word") == "word"]


def test_session_lifecycle_partials_then_exact_finals(rt_worker):
    audio, words = synthetic_call(8.0, seed=1)
    rt_worker.admin.register_call("rt-life", audio, words)
    rec = asyncio.run(stream(rt_url(rt_worker), audio, frame_bytes=640))
    kinds = [m["message"] for m in rec.messages]
    assert kinds[0] == "RecognitionStarted" and rec.messages[0]["id"]
    assert kinds[-1] == "EndOfTranscript"
    frames = -(-len(audio) // 640)
    assert [m["seq_no"] for m in rec.of("AudioAdded")] == list(range(1, frames + 1))
    finals = rec.of("AddTranscript")
    assert all(m["format"] == "2.1" for m in finals)
    got = [w for w in rec.words() if w[0] != "."]
    assert got == _truth_words(words)
    dots = [r for m in finals for r in m["results"] if r["type"] == "punctuation"]
    assert dots and all(r["is_eos"] and r["attaches_to"] == "previous" for r in dots)
    assert all(r["alternatives"][0]["speaker"] == "UU" for m in finals for r in m["results"])
    assert_partials_before_finals(rec.messages)
    assert rec.of("AddPartialTranscript")


def test_session_mid_call_has_session_times_and_no_earlier_words(rt_worker):
    audio, words = synthetic_call(8.0, seed=2)
    rt_worker.admin.register_call("rt-mid", audio, words)
    since = 3.0
    rec = asyncio.run(stream(rt_url(rt_worker), audio[int(since * 16000) * 2:], frame_bytes=3200))
    assert [w for w in rec.words() if w[0] != "."] == _truth_words(words, since)


def test_partials_off_speakers_and_end_of_utterance(rt_worker):
    audio, words = synthetic_call(6.0, seed=3)
    rt_worker.admin.register_call("rt-spk", audio, words)
    config = TranscriptionConfig(language="en", enable_partials=False, diarization="speaker", max_delay=1.0,
                                 conversation_config=ConversationConfig(end_of_utterance_silence_trigger=0.05))
    rec = asyncio.run(stream(rt_url(rt_worker), audio, frame_bytes=1600, config=config))
    assert not rec.of("AddPartialTranscript")
    speakers = [r["alternatives"][0]["speaker"] for m in rec.of("AddTranscript") for r in m["results"]]
    assert set(speakers) == {"S1", "S2"}
    assert rec.of("EndOfUtterance")


@pytest.mark.parametrize("encoding", ["pcm_f32le", "mulaw", "file"])
def test_audio_formats(rt_worker, encoding):
    if encoding == "mulaw":
        audio, words = synthetic_call(4.0, seed=4, encoding="mulaw", sample_rate=8000)
        rt_worker.admin.register_call("rt-mulaw", audio, words, encoding="mulaw", sample_rate=8000)
        rec = asyncio.run(stream(rt_url(rt_worker), audio, frame_bytes=160, encoding=AudioEncoding.MULAW,
                                 sample_rate=8000))
    else:
        audio, words = synthetic_call(4.0, seed=5)
        rt_worker.admin.register_call(f"rt-{encoding}", audio, words)
        if encoding == "pcm_f32le":
            sent = (np.frombuffer(audio, "<i2").astype("<f4") / 32768.0).tobytes()
            rec = asyncio.run(stream(rt_url(rt_worker), sent, frame_bytes=1280, encoding=AudioEncoding.PCM_F32LE))
        else:
            buf = io.BytesIO()
            with wave.open(buf, "wb") as wav:
                wav.setnchannels(1)
                wav.setsampwidth(2)
                wav.setframerate(16000)
                wav.writeframes(audio)
            rec = asyncio.run(stream(rt_url(rt_worker), buf.getvalue(), frame_bytes=4000, encoding=None))
    assert [w for w in rec.words() if w[0] != "."] == _truth_words(words)


def test_set_recognition_config(rt_worker):
    audio, words = synthetic_call(4.0, seed=6)
    rt_worker.admin.register_call("rt-set", audio, words)

    async def run() -> tuple[list, list]:
        client = AsyncClient(api_key="k", url=rt_url(rt_worker))
        rec = record_all(client)
        await client.start_session(transcription_config=TranscriptionConfig(language="en", enable_partials=True),
                                   audio_format=AudioFormat(encoding=AudioEncoding.PCM_S16LE, sample_rate=16000))
        await client.send_message({"message": "SetRecognitionConfig",
                                   "transcription_config": {"enable_partials": False, "max_delay": 2.0}})
        for i in range(0, len(audio), 3200):
            await client.send_audio(audio[i:i + 3200])
        await client.stop_session()
        bad = AsyncClient(api_key="k", url=rt_url(rt_worker))
        errors = record_all(bad)
        await bad.start_session(transcription_config=TranscriptionConfig(language="en"),
                                audio_format=AudioFormat(encoding=AudioEncoding.PCM_S16LE, sample_rate=16000))
        await bad.send_message({"message": "SetRecognitionConfig", "transcription_config": {"language": "de"}})
        await asyncio.wait_for(bad._session_done_evt.wait(), 10)
        await bad.close()
        return rec.messages, errors.of("Error")

    messages, errors = asyncio.run(run())
    assert not [m for m in messages if m["message"] == "AddPartialTranscript"]
    assert [m for m in messages if m["message"] == "AddTranscript"]
    assert [e["type"] for e in errors] == ["invalid_config"]


async def _refused(url: str, *, api_key: str = "k", config: TranscriptionConfig | None = None,
                   fmt: AudioFormat | None = None) -> tuple[str, list[dict]]:
    client = AsyncClient(api_key=api_key, url=url)
    rec = record_all(client)
    with pytest.raises(TranscriptionError) as caught:
        await client.start_session(transcription_config=config or TranscriptionConfig(language="en"),
                                   audio_format=fmt or AudioFormat(encoding=AudioEncoding.PCM_S16LE,
                                                                   sample_rate=16000))
    await client.close()
    return str(caught.value), rec.of("Error")


@pytest.mark.parametrize("kind", ERROR_TYPES)
def test_every_error_type_reaches_the_sdk(rt_worker, kind):
    set_rt_faults(rt_worker, {"errors": [kind]})
    reason, errors = asyncio.run(_refused(rt_url(rt_worker)))
    assert [e["type"] for e in errors] == [kind] and kind in reason
    assert rt_stats(rt_worker)["counts"][f"error.{kind}"] >= 1


def test_natural_errors(rt_worker):
    url = rt_url(rt_worker)
    _, errors = asyncio.run(_refused(url, config=TranscriptionConfig(language="en", max_delay=9.0)))
    assert [e["type"] for e in errors] == ["invalid_config"]
    _, errors = asyncio.run(_refused(url, config=TranscriptionConfig(language="e n!")))
    assert [e["type"] for e in errors] == ["invalid_language"]
    _, errors = asyncio.run(_refused(url, fmt=AudioFormat(encoding="opus", sample_rate=16000)))
    assert [e["type"] for e in errors] == ["invalid_audio_type"]

    async def raw(first: bytes | str) -> dict:
        async with ClientSession() as http, http.ws_connect(url) as ws:
            await (ws.send_bytes(first) if isinstance(first, bytes) else ws.send_str(first))
            msg = await ws.receive(timeout=10)
            assert msg.type == WSMsgType.TEXT
            return msg.json()

    assert asyncio.run(raw(b"\0\0"))["type"] == "protocol_error"
    assert asyncio.run(raw("not json"))["type"] == "invalid_message"
    assert asyncio.run(raw('{"message": "Nonsense"}'))["type"] == "protocol_error"


def test_quota_exceeded_when_sessions_are_taken(rt_worker):
    set_rt_faults(rt_worker, {"max_sessions": 1})

    async def run() -> list[dict]:
        first = AsyncClient(api_key="k", url=rt_url(rt_worker))
        await first.start_session(transcription_config=TranscriptionConfig(language="en"),
                                  audio_format=AudioFormat(encoding=AudioEncoding.PCM_S16LE, sample_rate=16000))
        try:
            _, errors = await _refused(rt_url(rt_worker))
        finally:
            await first.stop_session()
        return errors

    assert [e["type"] for e in asyncio.run(run())] == ["quota_exceeded"]


def test_not_authorised_with_a_wrong_key(local_worker):
    worker = local_worker(engine="reference", parallel=1, api_key="the-key")
    _, errors = asyncio.run(_refused(rt_url(worker), api_key="wrong"))
    assert [e["type"] for e in errors] == ["not_authorised"]
    rec = asyncio.run(stream(rt_url(worker), b"\0\0" * 1600, api_key="the-key"))
    assert rec.of("EndOfTranscript")


def test_dropped_socket(rt_worker):
    audio, words = synthetic_call(3.0, seed=7)
    rt_worker.admin.register_call("rt-drop", audio, words)
    set_rt_faults(rt_worker, {"drop_after": 5})

    async def run() -> tuple[list, bool]:
        client = AsyncClient(api_key="k", url=rt_url(rt_worker))
        rec = record_all(client)
        await client.start_session(transcription_config=TranscriptionConfig(language="en"),
                                   audio_format=AudioFormat(encoding=AudioEncoding.PCM_S16LE, sample_rate=16000))
        try:
            for i in range(0, len(audio), 640):
                await client.send_audio(audio[i:i + 640])
                await asyncio.sleep(0)
        except Exception:  # noqa: BLE001 - the SDK raises its own or websockets' error on a cut socket
            pass
        done = await asyncio.wait_for(client._session_done_evt.wait(), 10)
        await client.close()
        return rec.messages, done

    messages, done = asyncio.run(run())
    assert done and not [m for m in messages if m["message"] == "EndOfTranscript"]
    # an aborted socket may lose acknowledgements still in flight, never add one past the cut
    assert max((m["seq_no"] for m in messages if m["message"] == "AudioAdded"), default=0) <= 5
    assert rt_stats(rt_worker)["counts"]["dropped"] >= 1


def test_multichannel_session_with_the_sdk_multichannel_client(rt_worker):
    audio, words = synthetic_call(6.0, seed=11, channels=2)
    rt_worker.admin.register_call("rt-stereo", audio, words, channels=2)
    pair = np.frombuffer(audio, "<i2").reshape(-1, 2)
    sources = {"left": io.BytesIO(pair[:, 0].tobytes()), "right": io.BytesIO(pair[:, 1].tobytes())}

    async def run() -> list[dict]:
        client = AsyncMultiChannelClient(api_key="k", url=rt_url(rt_worker))
        rec = record_all(client)
        config = TranscriptionConfig(language="en", enable_partials=True, diarization="channel",
                                     channel_diarization_labels=["agent", "caller"])
        done = asyncio.Event()
        client.on(ServerMessageType.END_OF_TRANSCRIPT, lambda _m: done.set())
        await asyncio.wait_for(client.transcribe(
            sources, transcription_config=config,
            audio_format=AudioFormat(encoding=AudioEncoding.PCM_S16LE, sample_rate=16000, chunk_size=1280)), 60)
        await asyncio.wait_for(done.wait(), 30)  # transcribe returns once EndOfChannel is sent
        await client.close()
        return rec.messages

    messages = asyncio.run(run())
    assert messages[0]["message"] == "RecognitionStarted" and messages[0]["channel_ids"] == ["agent", "caller"]
    assert messages[-1]["message"] == "EndOfTranscript"
    for n, label in ((1, "agent"), (2, "caller")):
        finals = [(r["alternatives"][0]["content"], r["start_time"], r["end_time"]) for m in messages
                  if m["message"] == "AddTranscript" and m["channel"] == label for r in m["results"]
                  if r["type"] == "word"]
        assert finals == _truth_words([w for w in words if w.get("channel") == n])
        acks = [m["seq_no"] for m in messages if m["message"] == "ChannelAudioAdded" and m["channel"] == label]
        assert acks == list(range(1, len(acks) + 1)) and acks
