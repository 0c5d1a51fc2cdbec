"""Ingest throughput: Kafka -> decode -> chunker -> chunks counted, per process, with 1 and 2 processes.

The frames of `calls` concurrent calls are pre-produced to a 4-partition topic; then a dataflow (KafkaSource with
tail=False, the flow's own decode and chunk_calls operators, a counting sink) reads them all. With 2 processes
it is a real Bytewax cluster (`-i/-a`, one worker each, partitions split between them). Each process times itself
from the first to the last frame the chunker counted (bwsm_chunker_frames_total), so start-up and cluster
formation are not in the figure.

Alone: .venv/bin/python -m bench.ingest [--calls 60 --seconds 60 --frame-ms 20 --processes 1]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from bench.common import (
    CountClock,
    Table,
    child_result,
    create_topic,
    delete_topics,
    emit_result,
    frame_pieces,
    free_port,
    interleaved,
    kafka_bootstrap,
    produce_all,
    self_usage,
    start_child,
)

PARTITIONS = 4


def build_flow(bootstrap: str, topic: str, tail: bool = False, config=None):  # noqa: ANN001, ANN201 - (Dataflow, CountingSink)
    """audio_input (Kafka read + decode) -> chunk_calls -> counting sink: the flow's ingest half, nothing else."""
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow

    from bench.chunker_bench import CountingSink
    from bytewax.speechmatics.connectors.kafka.config import KafkaSettings
    from bytewax.speechmatics.flows.chunker import chunk_calls
    from bytewax.speechmatics.flows.chunking import ChunkConfig
    from bytewax.speechmatics.flows.decode import audio_input

    flow = Dataflow("bench_ingest")
    kafka = KafkaSettings()  # the flow's own defaults: batch size and pace
    decoded = audio_input("in", flow, brokers=[bootstrap], topics=[topic], tail=tail,
                          batch_size=kafka.source_batch_size, pace=kafka.source_pace_seconds)
    sink = CountingSink()
    # fixed windows: the work the hand-written baseline does (see bench.baseline)
    op.output("out", chunk_calls("chunker", decoded.oks, config or ChunkConfig(policy="fixed")).oks, sink)
    return flow, sink


def child(args: argparse.Namespace) -> None:
    """One process of the ingest dataflow; reports frames, chunks, seconds, CPU and peak RSS."""
    from bytewax.run import cli_main

    from bytewax.speechmatics.flows.chunker import FRAMES
    from bytewax.speechmatics.flows.microbatch import tune_runtime
    from bytewax.speechmatics.flows.settings import RunSettings

    tune_runtime(RunSettings())  # as the flow's entry point does

    flow, sink = build_flow(args.bootstrap, args.topic)
    addresses = args.addresses.split(";") if args.addresses else None
    clock = CountClock(FRAMES._value.get)
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
    cli_main(flow, workers_per_process=1, process_id=args.process_id if addresses else None, addresses=addresses)
    if profiler is not None:
        profiler.stop()
        with open(args.profile, "w") as f:
            f.write(profiler.output_text(unicode=False, color=False, show_all=False))
    seconds = clock.stop()
    emit_result({"frames": clock.value, "chunks": sink.box[0], "seconds": seconds, **self_usage()})


def run_processes(bootstrap: str, topic: str, processes: int, profile: str = "") -> list[dict]:
    """Run the ingest dataflow on `processes` processes (a cluster when > 1); one result per process."""
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes)) if processes > 1 else ""
    procs = []
    for i in range(processes):
        cmd = ["bench.ingest", "child", "--bootstrap", bootstrap, "--topic", topic, "--process-id", str(i),
               "--addresses", addresses]
        if profile:
            cmd += ["--profile", profile]
        procs.append(start_child(cmd))
    return [child_result(p) for p in procs]


def prepare(bootstrap: str, calls: int, seconds: float, frame_ms: int) -> tuple[str, int, float]:
    """A topic holding the calls' frames: (topic, frames, audio seconds)."""
    pieces = frame_pieces(seconds, frame_ms)
    messages = interleaved([f"ingest-{frame_ms}-{c}" for c in range(calls)], pieces)
    topic = create_topic(bootstrap, f"ingest{frame_ms}", PARTITIONS)
    took = produce_all(bootstrap, topic, messages)
    print(f"  ingest: {len(messages):,} frames of {frame_ms} ms pre-produced to {topic} in {took:.1f} s", flush=True)
    return topic, len(messages), calls * seconds


def record(table: Table, bench: str, case: str, results: list[dict], frame_ms: int) -> float:
    """Add per-process and total rows; return total frames/s."""
    frames = sum(r["frames"] for r in results)
    audio_per_frame = frame_ms / 1000
    for i, r in enumerate(results):
        fps = r["frames"] / r["seconds"] if r["seconds"] else 0.0
        label = f"{case}, process {i}" if len(results) > 1 else case
        table.add(bench, label, "frames/s", f"{fps:,.0f}",
                  f"{fps * audio_per_frame:,.0f} audio-s/s, {r['frames']:,.0f} frames, {r.get('chunks', 0)} chunks, "
                  f"cpu {r['cpu_seconds']:.1f} s, peak RSS {r['peak_rss'] / 2**20:,.0f} MiB")
    if len(results) == 1:
        return frames / results[0]["seconds"]
    window = max(r["seconds"] for r in results)
    total = frames / window
    table.add(bench, f"{case}, total", "frames/s", f"{total:,.0f}",
              f"{total * audio_per_frame:,.0f} audio-s/s over the slower process's window")
    return total


def best_of(repeat: int, runner: Callable[[], list[dict]]) -> list[dict]:
    """The run with the highest total frames/s of `repeat` runs (the least disturbed by other load)."""
    runs = [runner() for _ in range(repeat)]
    return max(runs, key=lambda rs: sum(r["frames"] for r in rs) / max(r["seconds"] for r in rs))


def run(table: Table, bootstrap: str, calls: int = 60, seconds: float = 60.0,
        frame_sizes: tuple[int, ...] = (20, 100), processes: tuple[int, ...] = (1, 2),
        baseline: bool = True, repeat: int = 2) -> None:
    """The ingest figures (and, sharing each topic, the hand-written baseline and the ratio); best of `repeat`."""
    from bench import baseline as base

    for frame_ms in frame_sizes:
        topic, total, audio_s = prepare(bootstrap, calls, seconds, frame_ms)
        try:
            ours = {}
            for n in processes:
                results = best_of(repeat, lambda n=n, t=topic: run_processes(bootstrap, t, n))
                got = sum(r["frames"] for r in results)
                if got != total:
                    raise RuntimeError(f"ingest: {got} frames counted, {total} produced")
                ours[n] = record(table, "ingest", f"{frame_ms} ms, {n} proc", results, frame_ms)
            if baseline:
                result = best_of(repeat, lambda t=topic: [base.run_consumer(bootstrap, t)])[0]
                fps = record(table, "baseline", f"{frame_ms} ms, 1 proc", [result], frame_ms)
                if 1 in ours:
                    table.add("ratio", f"{frame_ms} ms, 1 proc", "ours/baseline", f"{ours[1] / fps:.2f}",
                              "target >= 1.0 (stretch 1.5)")
        finally:
            delete_topics(bootstrap, [topic])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    c = sub.add_parser("child")
    c.add_argument("--bootstrap", required=True)
    c.add_argument("--topic", required=True)
    c.add_argument("--process-id", type=int, default=0)
    c.add_argument("--addresses", default="")
    c.add_argument("--profile", default="", help="write a pyinstrument text profile of this process here")
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--frame-ms", type=int, action="append", help="repeatable; default 20 and 100")
    parser.add_argument("--processes", type=int, action="append", help="repeatable; default 1 and 2")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args(argv)
    if args.mode == "child":
        child(args)
        return
    table = Table()
    run(table, kafka_bootstrap(), args.calls, args.seconds, tuple(args.frame_ms or (20, 100)),
        tuple(args.processes or (1, 2)), not args.no_baseline)
    print(table.render())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main(sys.argv[1:])
