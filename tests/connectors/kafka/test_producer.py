"""The producer API against the real broker: what a platform's code streams arrives as contract messages, in order,
with bounded bytes in flight, and a refused message fails its own call only."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections import defaultdict

import numpy as np
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic
from e2e_harness import free_port

from bytewax.speechmatics.producer import (
    AsyncCallPublisher,
    CallPublisher,
    ContractError,
    DeliveryError,
)
from bytewax.speechmatics.schemas.call_start import decode_start, message_kind
from bytewax.speechmatics.schemas.frames import decode_frame

pytestmark = pytest.mark.kafka


def read_all(bootstrap: str, topic: str, count: int, deadline_s: float = 30.0) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    out: list = []
    deadline = time.monotonic() + deadline_s
    try:
        while len(out) < count:
            assert time.monotonic() < deadline, f"{len(out)} of {count} messages within {deadline_s} s"
            out += [m for m in consumer.consume(500, 0.2) if not m.error()]
    finally:
        consumer.close()
    return out


def by_call(messages: list) -> dict[str, list]:
    """call id -> [start settings or None, frames...] in topic order, each decoded by the flow's own decoders."""
    calls: dict[str, list] = defaultdict(list)
    for m in messages:
        if message_kind(m.headers()) == "start":
            calls[m.key().decode()].append(decode_start(m.key(), m.value(), m.headers()))
        else:
            calls[m.key().decode()].append(decode_frame(m.key(), m.value(), m.headers()))
    return calls


def noise(n: int, seed: int) -> bytes:
    return bytes(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8))


def test_calls_arrive_as_contract_messages_in_order(kafka_bootstrap: str, make_topic) -> None:  # noqa: ANN001
    topic = make_topic("prod", 3)
    audio = {f"call-{i}": noise(8000 * 2 * 2 * 3 + 3, i) for i in range(4)}  # 3 s of 8 kHz 2-channel PCM + 3 bytes
    with CallPublisher(kafka_bootstrap, topic=topic, frame_seconds=0.25, linger_ms=1) as publisher:
        def stream(call_id: str, seed: int) -> None:
            rng = np.random.default_rng(seed)
            data = audio[call_id]
            with publisher.start(call_id, config={"language": "en", "channel_labels": ["caller", "agent"]},
                                 metadata={"tenant": "acme", "n": seed}, sample_rate=8000, channels=2) as call:
                at = 0
                while at < len(data):
                    size = int(rng.integers(1, 9000))
                    piece = data[at:at + size]
                    if seed % 2 and len(piece) % 4 == 0:  # numpy for some pieces
                        call.send(np.frombuffer(piece, "<i2").reshape(-1, 2))
                    else:
                        call.send(piece)
                    at += size
        threads = [threading.Thread(target=stream, args=(cid, i)) for i, cid in enumerate(audio)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    calls = by_call(read_all(kafka_bootstrap, topic, 4 * (1 + 13)))
    assert set(calls) == set(audio)
    for i, (call_id, data) in enumerate(audio.items()):
        start, *frames = calls[call_id]
        assert start.settings.metadata == {"tenant": "acme", "n": i}
        assert start.settings.config.channel_labels == ("caller", "agent")
        assert [f.seq for f in frames] == list(range(13))  # 12 frames of 0.25 s, then the end frame with the rest
        assert [f.end for f in frames] == [False] * 12 + [True]
        assert all(f.sample_rate == 8000 and f.channels == 2 and f.encoding == "pcm_s16le" for f in frames)
        assert b"".join(f.audio for f in frames) == data[:-3]  # the trailing partial sample is no audio


def test_async_calls_and_mulaw(kafka_bootstrap: str, make_topic) -> None:  # noqa: ANN001
    topic = make_topic("aprod", 2)
    data = noise(8000 * 2, 7)  # 2 s of 8 kHz mu-law

    async def main() -> None:
        async with AsyncCallPublisher(kafka_bootstrap, topic=topic) as publisher:
            async def stream(call_id: str) -> None:
                async with await publisher.start(call_id, sample_rate=8000, encoding="mulaw") as call:
                    for at in range(0, len(data), 160):  # 20 ms RTP payloads
                        await call.send(data[at:at + 160])
            await asyncio.gather(stream("a-1"), stream("a-2"))

    asyncio.run(main())
    calls = by_call(read_all(kafka_bootstrap, topic, 2 * 21))
    for call_id in ("a-1", "a-2"):
        frames = calls[call_id]  # no config and no metadata: no start message
        assert [f.seq for f in frames] == list(range(21)) and frames[-1].end and frames[-1].audio == b""
        assert all(f.encoding == "mulaw" and len(f.audio) == 800 for f in frames[:-1])  # 100 ms frames
        assert b"".join(f.audio for f in frames) == data


def test_a_bad_start_message_is_refused_before_anything_is_sent(kafka_bootstrap: str, make_topic) -> None:  # noqa: ANN001
    topic = make_topic("bad")
    with CallPublisher(kafka_bootstrap, topic=topic) as publisher:
        with pytest.raises(ContractError, match="diarisation"):
            publisher.start("c", config={"diarisation": "channel"})
        with pytest.raises(ContractError, match="metadata"):
            publisher.start("c", metadata={"blob": "x" * 9000})
        with pytest.raises(ValueError, match="encoding"):
            publisher.start("c", encoding="opus")
        with publisher.start("ok", metadata={"a": 1}):
            pass
    assert len(read_all(kafka_bootstrap, topic, 2)) == 2  # only the good call's start and end


def test_bytes_in_flight_stay_under_the_cap(kafka_bootstrap: str, make_topic) -> None:  # noqa: ANN001
    topic = make_topic("cap")
    cap = 3 * 3200  # three 100 ms frames of 16 kHz PCM
    with CallPublisher(kafka_bootstrap, topic=topic, max_in_flight_bytes=cap, linger_ms=20) as publisher:
        with publisher.start("capped") as call:
            for i in range(50):
                call.send(noise(3200 * 4, i))  # 4 frames per send
        peak = publisher.peak_in_flight_bytes
    assert 0 < peak <= cap
    assert len(read_all(kafka_bootstrap, topic, 201)) == 201


def test_an_unreachable_broker_blocks_send_then_fails_the_call() -> None:
    """Nothing listens on the port: the first frames fill the cap, the next send blocks instead of queueing, and
    when librdkafka gives up on the frames (message.timeout.ms) the call gets DeliveryError."""
    publisher = CallPublisher(f"127.0.0.1:{free_port()}", topic="nowhere", max_in_flight_bytes=6400,
                              message_timeout_ms=3000)
    call = publisher.start("stuck")
    outcome: list[BaseException | None] = []

    def sender() -> None:
        try:
            for i in range(10):
                call.send(noise(3200, i))
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=sender)
    thread.start()
    deadline = time.monotonic() + 10
    while publisher.in_flight_bytes < 6400:
        assert time.monotonic() < deadline, "the first frames never filled the cap"
        time.sleep(0.01)
    assert thread.is_alive() and not outcome  # the third frame waits for room
    thread.join(30)
    assert not thread.is_alive()
    assert isinstance(outcome[0], DeliveryError) and outcome[0].call_id == "stuck"
    assert "timed out" in outcome[0].reason.lower()
    assert publisher.peak_in_flight_bytes <= 6400
    publisher.close(1)


@pytest.fixture
def small_topic(kafka_bootstrap: str):  # noqa: ANN201
    """A topic whose broker refuses record batches above 2,000 bytes."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    name = f"small-{uuid.uuid4().hex[:10]}"
    for future in admin.create_topics([NewTopic(name, 1, 1, config={"max.message.bytes": "2000"})]).values():
        future.result(timeout=30)
    yield name
    for future in admin.delete_topics([name]).values():
        with contextlib.suppress(Exception):
            future.result(timeout=30)


def test_a_refused_message_fails_its_own_call_only(kafka_bootstrap: str, small_topic: str) -> None:
    """20 ms frames: 160 bytes for the 8 kHz mu-law call (taken), 3,840 for the 48 kHz stereo one (refused by the
    broker): the refusal is raised on the stereo call, and the other call goes on and ends cleanly."""
    with CallPublisher(kafka_bootstrap, topic=small_topic, frame_seconds=0.02, compression_type="none",
                       linger_ms=0) as publisher:
        good = publisher.start("good", sample_rate=8000, encoding="mulaw")
        good.send(noise(160, 1))
        good.wait()
        bad = publisher.start("bad", sample_rate=48000, channels=2)
        bad.send(noise(3840, 2))
        with pytest.raises(DeliveryError) as refused:
            bad.wait()
        assert refused.value.call_id == "bad" and "too large" in refused.value.reason.lower()
        with pytest.raises(DeliveryError):  # and on every later use of that call
            bad.send(noise(3840, 3))
        good.send(noise(160, 4))
        good.end()  # the other call is unaffected
    frames = by_call(read_all(kafka_bootstrap, small_topic, 3))["good"]
    assert [f.seq for f in frames] == [0, 1, 2] and frames[-1].end


def test_a_full_librdkafka_queue_waits_and_loses_nothing(kafka_bootstrap: str, make_topic) -> None:  # noqa: ANN001
    """librdkafka's own queue holds 2 messages here: `send` waits for room (sync and async), in order."""
    topic = make_topic("queue")
    data = noise(3200 * 30, 11)
    with (CallPublisher(kafka_bootstrap, topic=topic, queue_buffering_max_messages=2, linger_ms=0) as publisher,
          publisher.start("sync-q") as call):
        call.send(data)

    async def main() -> None:
        async with (AsyncCallPublisher(kafka_bootstrap, topic=topic, queue_buffering_max_messages=2,
                                       linger_ms=0) as publisher,
                    await publisher.start("async-q") as call):
            await call.send(data)

    asyncio.run(main())
    calls = by_call(read_all(kafka_bootstrap, topic, 2 * 31))
    for call_id in ("sync-q", "async-q"):
        assert [f.seq for f in calls[call_id]] == list(range(31))
        assert b"".join(f.audio for f in calls[call_id]) == data


def test_the_last_piece_rides_in_the_end_frame_and_a_raw_start_goes_as_it_is(kafka_bootstrap: str,
                                                                             make_topic) -> None:  # noqa: ANN001
    """`end(audio, wait=False)` (how `publish` ends its calls): the end frame carries the last piece, even a whole
    frame of it, and `wait()` then sees the call acknowledged; `raw_start` is sent byte for byte."""
    topic = make_topic("prod-end", 1)
    raw = b'{"config": {"language": "de", "diarisation": "channel"}}'  # misspelt: the flow refuses it, we send it
    piece = noise(1600, 5)  # exactly one 0.1 s frame of 8 kHz mono PCM
    with CallPublisher(kafka_bootstrap, topic=topic, linger_ms=1) as publisher:
        call = publisher.start("c-end", raw_start=raw, sample_rate=8000)
        call.send(piece)
        call.end(piece, wait=False)
        call.wait(30)
        assert call.unacknowledged == 0 and call.ended
        with pytest.raises(ValueError, match="not both"):
            publisher.start("c-both", config={"language": "en"}, raw_start=raw)
    start, *frames = read_all(kafka_bootstrap, topic, 3)
    assert (start.value(), message_kind(start.headers())) == (raw, "start")
    decoded = [decode_frame(m.key(), m.value(), m.headers()) for m in frames]
    assert [(f.seq, f.end, f.audio) for f in decoded] == [(0, False, piece), (1, True, piece)]
