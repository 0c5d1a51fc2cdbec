"""Throughput of decode + chunker on one Bytewax worker: frames/s and audio-seconds/s at 20 ms and 100 ms frames.

Pre-built KafkaSourceMessage objects (many interleaved calls of speech-like audio with pauses) go through
TestingSource -> decode -> chunk_calls -> a counting sink in one worker, so Kafka's own cost is left out;
"decode only" and "chunker only" split the per-frame cost between the two steps.
The same frames also go through the pure path (decode_message + CallChunker.push, no Bytewax) to show what
the dataflow adds. With --kafka the frames are first produced to a fresh one-partition topic of a real broker
(KAFKA_BOOTSTRAP_SERVERS, else the project's local broker) and read back by KafkaSource (tail=False), so the
figure includes consuming. Run: .venv/bin/python bench/chunker_bench.py [--calls 40 --seconds 60] [--kafka]
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import time
import uuid
from collections.abc import Callable

import bytewax.operators as op
import numpy as np
from bytewax.connectors.kafka import KafkaSource, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource, run_main

from bytewax.speechmatics.flows.chunker import chunk_calls
from bytewax.speechmatics.flows.chunking import CallChunker, ChunkConfig
from bytewax.speechmatics.flows.decode import decode_frames, decode_message
from bytewax.speechmatics.schemas.frames import AudioFrame, encode_frame


class _Count(StatelessSinkPartition):
    def __init__(self, box: list[int]) -> None:
        self.box = box

    def write_batch(self, items: list) -> None:
        self.box[0] += len(items)


class CountingSink(DynamicSink):
    """Counts what reaches it (keeps nothing, so the sink costs next to nothing)."""

    def __init__(self) -> None:
        self.box = [0]

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Count:
        return _Count(self.box)


def call_audio(seconds: float, rate: int, seed: int = 1) -> bytes:
    """Speech-like audio (harmonic, modulated) with a 0.6 s pause every ~7 s, as 16-bit PCM."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum((1.0 / k) * np.sin(k * phase) for k in range(1, 8))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    pcm = voiced * envelope * 6000
    for start in np.arange(6.5, seconds, 7.0) + rng.uniform(0, 0.5):
        pcm[int(start * rate) : int((start + 0.6) * rate)] = 0
    return pcm.astype("<i2").tobytes()


def messages(calls: int, seconds: float, frame_ms: int, rate: int) -> list[KafkaSourceMessage]:
    """All calls' frames, interleaved round-robin as a partition would carry concurrent calls."""
    audio = call_audio(seconds, rate)
    step = rate * frame_ms // 1000 * 2
    slices = [audio[i : i + step] for i in range(0, len(audio), step)]
    out = []
    for seq, piece in enumerate(slices):
        for c in range(calls):
            frame = AudioFrame(f"call-{c}", seq, piece, rate, end=seq == len(slices) - 1)
            key, value, headers = encode_frame(frame)
            out.append(KafkaSourceMessage(key, value, topic="calls.audio", headers=headers,
                                          offset=len(out), partition=0))
    return out


def run_flow(msgs: list[KafkaSourceMessage], config: ChunkConfig) -> tuple[float, int]:
    sink = CountingSink()
    flow = Dataflow("chunker_bench")
    decoded = decode_frames("decode", op.input("in", flow, TestingSource(msgs, batch_size=1000)))
    op.output("out", chunk_calls("chunker", decoded.oks, config).oks, sink)
    gc.collect()
    t0 = time.perf_counter()
    run_main(flow)
    return time.perf_counter() - t0, sink.box[0]


def kafka_bootstrap() -> str:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    from bytewax.speechmatics.connectors.cli.kafka import local_kafka
    from bytewax.speechmatics.connectors.kafka.local_broker import up

    return up(local_kafka())


def produce(bootstrap: str, msgs: list[KafkaSourceMessage]) -> str:
    """The messages on a new one-partition topic (its name is returned)."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from bytewax.speechmatics.connectors.kafka.config import client_config

    topic = f"bench-chunker-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(client_config({"bootstrap.servers": bootstrap}))
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    producer = Producer(client_config({"bootstrap.servers": bootstrap, "linger.ms": 20,
                                       "queue.buffering.max.messages": 1_000_000}))
    for m in msgs:
        producer.produce(topic, m.value, m.key, headers=m.headers)
        producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("messages still unsent after 60 s")
    return topic


def delete_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient

    from bytewax.speechmatics.connectors.kafka.config import client_config

    admin = AdminClient(client_config({"bootstrap.servers": bootstrap}))  # must outlive the future
    admin.delete_topics([topic])[topic].result(30)


def run_kafka(bootstrap: str, topic: str, config: ChunkConfig) -> tuple[float, int]:
    from bytewax.speechmatics.connectors.kafka.config import client_config

    sink = CountingSink()
    flow = Dataflow("chunker_bench_kafka")
    extra = {k: v for k, v in client_config({"bootstrap.servers": bootstrap}).items() if k != "bootstrap.servers"}
    source = KafkaSource([bootstrap], [topic], tail=False, add_config=extra, batch_size=1000)
    decoded = decode_frames("decode", op.input("in", flow, source))
    op.output("out", chunk_calls("chunker", decoded.oks, config).oks, sink)
    gc.collect()
    t0 = time.perf_counter()
    run_main(flow)
    return time.perf_counter() - t0, sink.box[0]


def run_pure(msgs: list[KafkaSourceMessage], config: ChunkConfig) -> tuple[float, int]:
    chunkers: dict[str, CallChunker] = {}
    out: list = []
    gc.collect()
    t0 = time.perf_counter()
    for m in msgs:
        frame = decode_message(m)
        chunker = chunkers.get(frame.call_id)
        if chunker is None:
            chunker = chunkers[frame.call_id] = CallChunker(config)
        chunker.push(frame, out)
    return time.perf_counter() - t0, len(out)


def run_decode_only(msgs: list[KafkaSourceMessage], config: ChunkConfig) -> tuple[float, int]:
    """decode_message alone: the share of the per-frame budget the frame contract's validation takes."""
    gc.collect()
    t0 = time.perf_counter()
    for m in msgs:
        decode_message(m)
    return time.perf_counter() - t0, 0


def run_chunker_only(msgs: list[KafkaSourceMessage], config: ChunkConfig) -> tuple[float, int]:
    """CallChunker.push alone, on frames decoded beforehand (not timed)."""
    frames = [decode_message(m) for m in msgs]
    chunkers: dict[str, CallChunker] = {}
    out: list = []
    gc.collect()
    t0 = time.perf_counter()
    for frame in frames:
        chunker = chunkers.get(frame.call_id)
        if chunker is None:
            chunker = chunkers[frame.call_id] = CallChunker(config)
        chunker.push(frame, out)
    return time.perf_counter() - t0, len(out)


def report(label: str, runner: Callable, msgs: list, config: ChunkConfig, audio_seconds: float,
           repeat: int) -> None:
    """Best and median of `repeat` runs (the best is the least disturbed by other processes on the machine)."""
    times, outputs = [], 0
    for _ in range(repeat):
        elapsed, outputs = runner(msgs, config)
        times.append(elapsed)
    best, median = min(times), statistics.median(times)
    print(f"  {label:<22} best {len(msgs) / best:>9,.0f} frames/s {audio_seconds / best:>7,.0f} audio-s/s | "
          f"median {len(msgs) / median:>9,.0f} frames/s {audio_seconds / median:>7,.0f} audio-s/s "
          f"({outputs} chunks)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each call")
    parser.add_argument("--rate", type=int, default=16000)
    parser.add_argument("--kafka", action="store_true", help="also read the frames from a real Kafka topic")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (best and median are shown)")
    args = parser.parse_args()
    bootstrap = kafka_bootstrap() if args.kafka else ""
    audio_seconds = args.calls * args.seconds
    print(f"{args.calls} calls x {args.seconds:.0f} s, {args.rate} Hz pcm_s16le mono, one worker")
    for frame_ms in (20, 100):
        msgs = messages(args.calls, args.seconds, frame_ms, args.rate)
        # The pre-built messages stay alive for the whole run, which a real source's never do: keep the
        # garbage collector from rescanning them, or the figure measures the bench's own heap.
        gc.collect()
        gc.freeze()
        print(f"{frame_ms} ms frames ({len(msgs)} messages):")
        report("decode only", run_decode_only, msgs, ChunkConfig(), audio_seconds, args.repeat)
        for policy in ("fixed", "vad"):
            config = ChunkConfig(policy=policy)
            report(f"chunker only ({policy})", run_chunker_only, msgs, config, audio_seconds, args.repeat)
            report(f"bytewax decode+{policy}", run_flow, msgs, config, audio_seconds, args.repeat)
            report(f"pure decode+{policy}", run_pure, msgs, config, audio_seconds, args.repeat)
        if bootstrap:
            topic = produce(bootstrap, msgs)
            try:
                for policy in ("fixed", "vad"):
                    report(f"kafka decode+{policy}", lambda m, c, t=topic: run_kafka(bootstrap, t, c), msgs,
                           ChunkConfig(policy=policy), audio_seconds, args.repeat)
            finally:
                delete_topic(bootstrap, topic)
        del msgs
        gc.unfreeze()
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
