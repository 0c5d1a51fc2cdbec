"""The hand-written baseline: what a team would write instead of adopting the flow, timed on the same topic.

A plain confluent-kafka consumer loop in one process: assign every partition from the start, consume in batches
of 1000, parse the headers a frame carries (seq, sample_rate, end), append the audio to a per-call bytearray,
cut 30 s chunks with 1 s overlap, flush a call on its end frame. No reordering, gap filling, validation,
dead letters, state snapshots or metrics: a reasonable user's first version, not a deliberately slow one.
Timed from the first to the last frame, like the ingest children.

Alone: .venv/bin/python -m bench.baseline --topic TOPIC (a topic that bench.ingest filled)
"""

from __future__ import annotations

import argparse
import time

from bench.common import emit_result, kafka_bootstrap, run_child, self_usage

CHUNK_SECONDS = 30.0
OVERLAP_SECONDS = 1.0  # the flow's default fixed-window overlap (ChunkConfig), so both cut the same chunks


def consume_and_chunk(bootstrap: str, topic: str) -> dict:
    """Read the topic to its end, cutting chunks per call; frames, chunks and seconds."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    from bytewax.speechmatics.connectors.kafka.config import client_config

    consumer = Consumer(client_config({"bootstrap.servers": bootstrap, "group.id": f"bench-baseline-{topic}",
                                       "enable.auto.commit": False, "enable.partition.eof": True}))
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    buffers: dict[bytes, bytearray] = {}
    frames = chunks = 0
    open_partitions = len(partitions)
    first = last = 0.0
    while open_partitions:
        before = frames
        for msg in consumer.consume(1000, 1.0):
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    open_partitions -= 1
                    continue
                raise RuntimeError(str(err))
            if not first:
                first = time.perf_counter()
            headers = dict(msg.headers() or ())
            int(headers["seq"])
            rate = int(headers.get("sample_rate", b"16000"))
            chunk_bytes = int(CHUNK_SECONDS * rate) * 2
            overlap_bytes = int(OVERLAP_SECONDS * rate) * 2
            key = msg.key()
            buf = buffers.get(key)
            if buf is None:
                buf = buffers[key] = bytearray()
            buf += msg.value()
            frames += 1
            if len(buf) >= chunk_bytes:
                _chunk = bytes(buf[:chunk_bytes])
                del buf[: chunk_bytes - overlap_bytes]
                chunks += 1
            if headers.get("end") == b"1":
                _chunk = bytes(buf)
                del buffers[key]
                chunks += 1
        if frames != before:
            last = time.perf_counter()
    consumer.close()
    return {"frames": frames, "chunks": chunks, "seconds": last - first}


def run_consumer(bootstrap: str, topic: str) -> dict:
    """The baseline in its own process (like each ingest process): its result with CPU and peak RSS."""
    return run_child(["bench.baseline", "--bootstrap", bootstrap, "--topic", topic, "--child"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topic", required=True)
    parser.add_argument("--bootstrap", default="")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    bootstrap = args.bootstrap or kafka_bootstrap()
    if args.child:
        emit_result({**consume_and_chunk(bootstrap, args.topic), **self_usage()})
        return
    result = run_consumer(bootstrap, args.topic)
    print(f"baseline: {result['frames'] / result['seconds']:,.0f} frames/s ({result['frames']:,} frames, "
          f"{result['chunks']} chunks, {result['seconds']:.2f} s)")


if __name__ == "__main__":
    main()
