"""Latency at N concurrent real-time calls: chunk closed -> event, last frame -> call_completed, with CPU and RSS.

The whole micro-batch flow runs as a process (`python -m bytewax.run ...microbatch:flow`, one worker) against the
real broker and the local worker's reference engine (it answers at once from registered ground truth, so what is
measured is our pipeline plus the submitter's polling, not recognition). A publisher process sends N calls in
real time (20 ms frames), their starts spread over one chunk window as real calls would be.

Figures:
- chunk closed -> event acked: the flow's own histogram bwsm_chunk_to_event_seconds (chunk cut -> its event
  acknowledged by Kafka), scraped from the Bytewax dataflow API's /metrics; percentiles interpolated in buckets.
- audio -> event: per chunk, the first segment event's Kafka timestamp minus the wall time the chunk's last frame
  was due to be produced (call start + chunk_end). Includes consuming, cutting, submit, engine, poll, stitch.
- last frame -> call_completed: call_completed's Kafka timestamp minus the time the end frame was produced.

Settings (kept short so the bench runs in minutes): BWSM_CHUNK_POLICY=fixed, BWSM_CHUNK_SECONDS=10, calls of 30 s,
BWSM_POST_RATE=1000, BWSM_GET_RATE=4000 (1000 calls with 10 s chunks close ~100 chunks/s, far above the default
10 POST/s a real Speechmatics account would get), submitter polling as default (BWSM_POLL_MIN 0.25 s), BWSM_REALTIME=0.

Alone: .venv/bin/python -m bench.latency [--calls 100 --calls 500 --seconds 30]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.common import (
    RATE,
    ProcSampler,
    Table,
    child_result,
    consume,
    create_topic,
    delete_topics,
    emit_result,
    free_port,
    histogram_percentiles,
    kafka_bootstrap,
    percentiles,
    start_child,
)
from bytewax.speechmatics.connectors.worker.control import WorkerProcess

FLOW = "bytewax.speechmatics.flows.microbatch:flow(tune=True)"  # as `run` tunes its flow process
FRAME_MS = 20
CHUNK_SECONDS = 10.0
FLOW_SETTINGS = {"BWSM_CHUNK_POLICY": "fixed", "BWSM_CHUNK_SECONDS": str(CHUNK_SECONDS), "BWSM_POST_RATE": "1000",
                 "BWSM_GET_RATE": "4000",
                 "BWSM_REALTIME": "0"}


def reference_call(seconds: float, seed: int = 7) -> tuple[bytes, list[dict]]:
    """Noise-like audio (so the reference engine locates every chunk unambiguously) and a word every 0.5 s."""
    rng = np.random.default_rng(seed)
    audio = rng.integers(-8000, 8000, int(seconds * RATE)).astype("<i2").tobytes()
    words = [{"text": f"w{i}", "start_time": round(t, 3), "end_time": round(t + 0.4, 3), "speaker": "S1"}
             for i, t in enumerate(np.arange(0.5, seconds - 0.4, 0.5))]
    return audio, words


# ---- the publisher (a child process) ---------------------------------------------------------------------------

def publish(args: argparse.Namespace) -> None:
    """Send `calls` calls in real time, call c starting at c * stagger / calls; report start and end times."""
    from confluent_kafka import Producer

    from bytewax.speechmatics.connectors.kafka.config import client_config
    from bytewax.speechmatics.schemas.frames import AudioFrame, encode_frame

    audio, _ = reference_call(args.seconds)
    step = RATE * FRAME_MS // 1000 * 2
    pieces = [audio[i : i + step] for i in range(0, len(audio), step)]
    last = len(pieces) - 1
    # headers depend on seq only: build them once and share them between calls
    headers = [encode_frame(AudioFrame("x", i, b"", RATE, end=i == last))[2] for i in range(len(pieces))]
    keys = [f"{args.prefix}-{c:04d}".encode() for c in range(args.calls)]
    offsets = [round(c * args.stagger / args.calls / (FRAME_MS / 1000)) for c in range(args.calls)]
    producer = Producer(client_config({"bootstrap.servers": args.bootstrap, "linger.ms": 5, "acks": 1,
                                       "queue.buffering.max.messages": 1_000_000}))
    tick_s = FRAME_MS / 1000
    t0 = time.time() + 0.5
    starts = {k.decode(): t0 + o * tick_s for k, o in zip(keys, offsets, strict=True)}
    ends: dict[str, float] = {}
    behind = 0.0
    total_ticks = max(offsets) + len(pieces)
    for tick in range(total_ticks):
        due = t0 + tick * tick_s
        delay = due - time.time()
        if delay > 0:
            producer.poll(0)
            time.sleep(delay)
        else:
            behind = max(behind, -delay)
        for key, offset in zip(keys, offsets, strict=True):
            seq = tick - offset
            if 0 <= seq <= last:
                while True:
                    try:
                        producer.produce(args.topic, pieces[seq], key, headers=headers[seq])
                        break
                    except BufferError:
                        producer.poll(0.01)
                if seq == last:
                    ends[key.decode()] = time.time()
        producer.poll(0)
    producer.flush(60)
    emit_result({"starts": starts, "ends": ends, "max_behind": behind,
                 "frames": args.calls * len(pieces)})


# ---- the measuring side ----------------------------------------------------------------------------------------

def scrape_histogram(port: int, name: str) -> list[tuple[float, float]]:
    """Cumulative buckets [(le, count)] of a Prometheus histogram from the dataflow API's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:  # noqa: S310 - local
        text = resp.read().decode()
    buckets = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    return sorted(buckets)


def read_events(bootstrap: str, topic: str, calls: int, deadline_s: float, alive) -> list[tuple[dict, float]]:  # noqa: ANN001
    """(event, Kafka timestamp in seconds) of the transcript topic until every call completed or the deadline."""
    import orjson

    out: list[tuple[dict, float]] = []
    completed: set[str] = set()
    for msg in consume(bootstrap, topic, deadline_s, alive):
        event = orjson.loads(msg.value())
        out.append((event, msg.timestamp()[1] / 1000))
        if event["type"] == "call_completed":
            completed.add(event["call_id"])
            if len(completed) >= calls:
                break
    return out


def start_flow(bootstrap: str, topics: dict[str, str], worker_url: str, api_port: int,
               log_path: Path, extra: dict[str, str]) -> subprocess.Popen:
    """The micro-batch flow as users run it (one process, one worker), with the dataflow API on `api_port`."""
    env = {**os.environ, **FLOW_SETTINGS, **extra, **topics, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
           "SPEECHMATICS_BATCH_URL": worker_url, "SPEECHMATICS_API_KEY": "bench-key",
           "BWSM_JOURNAL_DIR": tempfile.mkdtemp(prefix="bench-journal-"),
           "BYTEWAX_DATAFLOW_API_ENABLED": "1", "BYTEWAX_DATAFLOW_API_PORT": str(api_port), "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "bytewax.run", FLOW, "-w", "1"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def latencies(events: list[tuple[dict, float]], starts: dict[str, float], ends: dict[str, float]
              ) -> tuple[list[float], list[float]]:
    """(audio -> first event of each chunk, end frame -> call_completed), in seconds."""
    seen: set[tuple[str, int]] = set()
    audio_to_event, end_to_completed = [], []
    for event, ts in events:
        cid = event["call_id"]
        if event["type"] == "segment" and event.get("job"):
            key = (cid, event["job"]["chunk_index"])
            if key not in seen and cid in starts:
                seen.add(key)
                audio_to_event.append(ts - (starts[cid] + event["job"]["chunk_end"]))
        elif event["type"] == "call_completed" and cid in ends:
            end_to_completed.append(ts - ends[cid])
    return audio_to_event, end_to_completed


def measure(bootstrap: str, calls: int, seconds: float, worker: WorkerProcess, flow_log: Path,
            extra: dict[str, str]) -> dict:
    """One run at `calls` concurrent calls: latency percentiles and per-process usage."""
    names = {"BWSM_AUDIO_TOPIC": ("audio", 4), "BWSM_TRANSCRIPT_TOPIC": ("transcripts", 4),
             "BWSM_DLQ_TOPIC": ("dlq", 1)}
    topics = {var: create_topic(bootstrap, f"lat-{n}", p) for var, (n, p) in names.items()}
    api_port = free_port()
    flow = start_flow(bootstrap, topics, worker.url, api_port, flow_log, extra)
    pub = start_child(["bench.latency", "publish", "--bootstrap", bootstrap, "--topic", topics["BWSM_AUDIO_TOPIC"],
                       "--calls", str(calls), "--seconds", str(seconds), "--stagger", str(CHUNK_SECONDS),
                       "--prefix", f"lat{calls}-{uuid.uuid4().hex[:4]}"])

    def alive() -> None:
        if flow.poll() is not None:
            raise RuntimeError(f"flow exited with {flow.returncode}; log in {flow_log}")

    try:
        sampler = ProcSampler({"flow": flow.pid, "worker": worker.pid, "publisher": pub.pid})
        events = read_events(bootstrap, topics["BWSM_TRANSCRIPT_TOPIC"], calls, seconds + CHUNK_SECONDS + 120, alive)
        usage = sampler.stop()
        published = child_result(pub, timeout=60)
        buckets = scrape_histogram(api_port, "bwsm_chunk_to_event_seconds")
    finally:
        stop(flow)
        stop(pub)
        delete_topics(bootstrap, list(topics.values()))
    audio_to_event, end_to_completed = latencies(events, published["starts"], published["ends"])
    return {"calls": calls, "completed": len(end_to_completed), "chunk_to_event": histogram_percentiles(buckets),
            "chunk_events": int(buckets[-1][1]) if buckets else 0,
            "audio_to_event": percentiles(audio_to_event), "end_to_completed": percentiles(end_to_completed),
            "publisher_behind": published["max_behind"], "usage": usage}


def run(table: Table, bootstrap: str, levels: Sequence[int] = (100, 500, 1000), seconds: float = 30.0,
        wait_levels: Sequence[int] = (100,)) -> None:
    """The latency rows for each number of concurrent calls; `wait_levels` again with BWSM_WAIT_MODE=wait.

    Why the second mode: with the default polling the submitter first asks after BWSM_POLL_MIN (0.25 s), which
    hides the pipeline's own overhead; with the server-side wait the GET returns as the engine finishes.
    """
    from bytewax.speechmatics.connectors.worker.control import start_worker

    audio, words = reference_call(seconds)
    flow_log = Path(tempfile.gettempdir()) / "bench-latency-flow.log"
    settings = ", ".join(f"{k}={v}" for k, v in FLOW_SETTINGS.items())
    runs = [(n, {}) for n in levels] + [(n, {"BWSM_WAIT_MODE": "wait"}) for n in wait_levels]
    with start_worker(engine="reference", parallel=64) as worker:
        worker.admin.register_call("bench-reference", audio, words)
        for calls, extra in runs:
            r = measure(bootstrap, calls, seconds, worker, flow_log, extra)
            case = f"{calls} calls" + "".join(f", {k}={v}" for k, v in extra.items())
            ms = lambda xs: "/".join(f"{x * 1000:,.0f}" for x in xs)  # noqa: E731
            table.add("latency", case, "chunk->event p50/p95/p99 ms", ms(r["chunk_to_event"]),
                      f"flow histogram, {r['chunk_events']} events; {settings}")
            table.add("latency", case, "audio->event p50/p95/p99 ms", ms(r["audio_to_event"]),
                      "chunk's last frame due -> first segment event (Kafka timestamps)")
            table.add("latency", case, "end->completed p50/p95/p99 ms", ms(r["end_to_completed"]),
                      f"{r['completed']}/{calls} calls completed; target p99 <= {150 if calls <= 100 else 1000} ms; "
                      f"{seconds:.0f} s calls, 20 ms frames, "
                      f"publisher max {r['publisher_behind'] * 1000:,.0f} ms behind schedule")
            for name, u in r["usage"].items():
                table.add("latency", case, f"{name} cpu / peak RSS",
                          f"{u.cpu_percent:,.0f}% / {u.peak_rss / 2**20:,.0f} MiB", f"over {u.wall_seconds:.0f} s")
    print(f"  latency: flow log in {flow_log}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    p = sub.add_parser("publish")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--calls", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--stagger", type=float, required=True)
    p.add_argument("--prefix", required=True)
    parser.add_argument("--calls", type=int, action="append", help="repeatable; default 100, 500, 1000")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each call")
    parser.add_argument("--wait-calls", type=int, action="append",
                        help="repeatable; levels run again with BWSM_WAIT_MODE=wait (default 100)")
    args = parser.parse_args()
    if args.mode == "publish":
        publish(args)
        return
    table = Table()
    run(table, kafka_bootstrap(), tuple(args.calls or (100, 500, 1000)), args.seconds, tuple(args.wait_calls or (100,)))
    print(table.render())


if __name__ == "__main__":
    main()
