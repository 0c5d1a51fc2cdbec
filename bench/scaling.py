"""Scaling of one process: memory per active call, and how many real-time calls it sustains before lag grows.

The flow child is the ingest dataflow (KafkaSource tail=True -> decode -> chunk_calls, 30 s fixed chunks ->
counting sink) in one process; it prints its frame count (bwsm_chunker_frames_total) and RSS every 0.25 s.

- memory: M calls x 25 s of audio with end frames go through first (consumer buffers and allocator warm, nothing
  left buffered); then twice M other calls x 25 s without end frames (below one chunk, so every byte stays
  buffered in the chunker), RSS noted after each; memory per active call = RSS growth between the two / M,
  against the 25 s x 32,000 B each call buffers. While idle the flow child calls malloc_trim, so freed heap
  (e.g. of the warm-up) does not hide in RSS.
- sustained calls: a publisher child sends calls in real time (20 ms frames), the number of calls rising in
  steps; lag = frames sent - frames the flow counted. A step is sustained when, over its second half, the lag
  grew by at most half a second's worth of the frames sent.
  The publisher is Python on the same 2 cores: when it cannot keep real time the step says so (publisher-bound).

Alone: .venv/bin/python -m bench.scaling [--steps 250,500,1000,2000,3000,4000 --step-seconds 10 --memory-calls 100]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import threading
import time
from collections.abc import Sequence

from bench.common import (
    BYTES_PER_SECOND,
    RATE,
    Table,
    create_topic,
    delete_topics,
    frame_pieces,
    interleaved,
    kafka_bootstrap,
    proc_rss_bytes,
    produce_all,
    start_child,
)

FRAME_MS = 20
MEMORY_SECONDS = 25.0
REPORT_EVERY = 0.25


# ---- children --------------------------------------------------------------------------------------------------

def flow_child(args: argparse.Namespace) -> None:
    """The ingest dataflow, tailing the topic forever; progress lines on stdout."""
    import os

    from bytewax.run import cli_main

    from bench.ingest import build_flow
    from bytewax.speechmatics.flows.chunker import FRAMES
    from bytewax.speechmatics.flows.chunking import ChunkConfig
    from bytewax.speechmatics.flows.microbatch import tune_runtime
    from bytewax.speechmatics.flows.settings import RunSettings

    tune_runtime(RunSettings())  # as the flow's entry point does
    # no idle flush during the bench: held calls must keep their audio while RSS is read
    flow, sink = build_flow(args.bootstrap, args.topic, tail=True, config=ChunkConfig(policy="fixed",
                                                                                         idle_timeout_seconds=3600))
    pid = os.getpid()

    libc = ctypes.CDLL("libc.so.6")

    def report() -> None:
        last = -1.0
        while True:
            frames = FRAMES._value.get()
            if frames == last:  # idle: hand freed heap back to the OS so RSS shows what is live
                libc.malloc_trim(0)
            last = frames
            print(json.dumps({"t": time.time(), "frames": frames, "chunks": sink.box[0],
                              "rss": proc_rss_bytes(pid)[0]}), flush=True)
            time.sleep(REPORT_EVERY)

    threading.Thread(target=report, daemon=True, name="bench-report").start()
    cli_main(flow, workers_per_process=1)


def publisher_child(args: argparse.Namespace) -> None:
    """Real-time calls in steps: `steps` calls for `step_seconds` each; progress lines on stdout."""
    from confluent_kafka import Producer

    from bytewax.speechmatics.connectors.kafka.config import client_config

    steps = [int(x) for x in args.steps.split(",")]
    piece = frame_pieces(1.0, FRAME_MS)[0]
    fixed = [("sample_rate", str(RATE).encode()), ("encoding", b"pcm_s16le"), ("channels", b"1")]
    producer = Producer(client_config({"bootstrap.servers": args.bootstrap, "linger.ms": 5, "acks": 1,
                                       "queue.buffering.max.messages": 2_000_000,
                                       "queue.buffering.max.kbytes": 2_097_151}))
    tick_s = FRAME_MS / 1000
    ticks_per_step = round(args.step_seconds / tick_s)
    keys: list[bytes] = []
    starts: list[int] = []
    headers_by_seq: dict[int, list] = {}
    sent = 0
    t0 = time.time()
    last_report = 0.0
    for tick in range(ticks_per_step * len(steps)):
        step = tick // ticks_per_step
        while len(keys) < steps[step]:
            keys.append(f"{args.prefix}-{len(keys)}".encode())
            starts.append(tick)
        delay = t0 + tick * tick_s - time.time()
        if delay > 0:
            producer.poll(0)
            time.sleep(delay)
        for key, start in zip(keys, starts, strict=True):
            seq = tick - start
            headers = headers_by_seq.get(seq)
            if headers is None:
                headers = headers_by_seq[seq] = [("seq", str(seq).encode()), *fixed]
            while True:
                try:
                    producer.produce(args.topic, piece, key, headers=headers)
                    break
                except BufferError:
                    producer.poll(0.01)
        sent += len(keys)
        producer.poll(0)
        now = time.time()
        if now - last_report >= REPORT_EVERY:
            last_report = now
            print(json.dumps({"t": now, "sent": sent, "calls": len(keys), "step": step,
                              "behind": max(0.0, now - (t0 + (tick + 1) * tick_s))}), flush=True)
    producer.flush(60)
    print(json.dumps({"t": time.time(), "sent": sent, "calls": len(keys), "step": len(steps), "behind": 0.0}),
          flush=True)


# ---- the measuring side ----------------------------------------------------------------------------------------

class Lines:
    """The latest JSON line of a child's stdout, and every line, read in a thread."""

    def __init__(self, proc) -> None:  # noqa: ANN001 - subprocess.Popen
        self.proc = proc
        self.latest: dict = {}
        self.all: list[dict] = []
        threading.Thread(target=self._pump, daemon=True, name="bench-lines").start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.latest = json.loads(line)
                self.all.append(self.latest)

    def wait_for(self, cond, timeout: float, what: str) -> dict:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while not (self.latest and cond(self.latest)):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read()[-3000:]
                raise RuntimeError(f"{what}: child exited with {self.proc.returncode}: {err}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not reached within {timeout:.0f} s (last: {self.latest})")
            time.sleep(0.05)
        return self.latest


def settle_rss(flow: Lines, seconds: float = 2.0) -> int:
    """The flow's RSS once it has been idle (same frame count) for `seconds`."""
    frames = flow.latest["frames"]
    time.sleep(seconds)
    while flow.latest["frames"] != frames:
        frames = flow.latest["frames"]
        time.sleep(seconds)
    return flow.latest["rss"]


def memory_per_call(bootstrap: str, topic: str, flow: Lines, calls: int) -> tuple[float, float]:
    """(RSS growth per active call, audio bytes buffered per call): the slope between `calls` and 2 x `calls`
    held calls, so consumer buffers and allocator pools (warmed by calls that ended) are not counted."""
    pieces = frame_pieces(MEMORY_SECONDS, FRAME_MS)
    consumed = 0
    rss = []
    for batch in ("warm", "held-a", "held-b"):
        msgs = interleaved([f"{batch}-{c}" for c in range(calls)], pieces, end=batch == "warm")
        produce_all(bootstrap, topic, msgs)
        consumed += len(msgs)
        flow.wait_for(lambda s, n=consumed: s["frames"] >= n, 300, f"memory phase {batch}")
        rss.append(settle_rss(flow))
    return (rss[2] - rss[1]) / calls, MEMORY_SECONDS * BYTES_PER_SECOND


def step_verdicts(pub: list[dict], flow: list[dict], steps: Sequence[int], step_seconds: float) -> list[dict]:
    """Per step: send and consume rates over its second half, lag growth, publisher delay, sustained or not."""
    def at(lines: list[dict], t: float, field: str) -> float:
        best = lines[0]
        for line in lines:
            if line["t"] > t:
                break
            best = line
        return best[field]

    out = []
    t0 = pub[0]["t"]
    start = at(flow, t0, "frames")  # frames the flow counted before the ramp (the memory phase)
    for i, calls in enumerate(steps):
        lo, hi = t0 + (i + 0.5) * step_seconds, t0 + (i + 1) * step_seconds
        sent = at(pub, hi, "sent") - at(pub, lo, "sent")
        consumed = at(flow, hi, "frames") - at(flow, lo, "frames")
        lag_lo = at(pub, lo, "sent") - (at(flow, lo, "frames") - start)
        lag_hi = at(pub, hi, "sent") - (at(flow, hi, "frames") - start)
        target = calls * (hi - lo) / (FRAME_MS / 1000)
        behind = max((p["behind"] for p in pub if lo <= p["t"] <= hi), default=0.0)
        sustained = lag_hi - lag_lo <= 0.5 * sent / (hi - lo)  # grew by at most half a second of frames
        out.append({"calls": calls, "sent_rate": sent / (hi - lo), "consumed_rate": consumed / (hi - lo),
                    "target_rate": target / (hi - lo), "lag_growth": lag_hi - lag_lo, "lag": lag_hi,
                    "behind": behind, "sustained": sustained, "publisher_bound": sent < 0.9 * target})
    return out


def run(table: Table, bootstrap: str, steps: Sequence[int] = (250, 500, 1000, 2000, 3000, 4000),
        step_seconds: float = 10.0, memory_calls: int = 100) -> None:
    """The scaling rows: memory per active call, then the real-time ramp."""
    topic = create_topic(bootstrap, "scaling", 4)
    pub_proc = None
    flow_proc = start_child(["bench.scaling", "flow", "--bootstrap", bootstrap, "--topic", topic])
    try:
        flow = Lines(flow_proc)
        flow.wait_for(lambda s: True, 60, "flow start")
        per_call, buffered = memory_per_call(bootstrap, topic, flow, memory_calls)
        table.add("scaling", f"{memory_calls} held calls x {MEMORY_SECONDS:.0f} s", "RSS per active call",
                  f"{per_call / 1024:,.0f} KiB", f"buffers {buffered / 1024:,.0f} KiB of audio: "
                  f"{per_call / buffered:.2f}x (target <= 1.5x)")
        base = len(flow.all)
        pub_proc = start_child(["bench.scaling", "publish", "--bootstrap", bootstrap, "--topic", topic,
                                "--steps", ",".join(map(str, steps)), "--step-seconds", str(step_seconds),
                                "--prefix", f"ramp-{time.time_ns() % 10**6}"])
        pub = Lines(pub_proc)
        pub.wait_for(lambda s: s["step"] >= len(steps), step_seconds * len(steps) + 120, "ramp")
        time.sleep(1.0)
        verdicts = step_verdicts(pub.all, flow.all[base:], steps, step_seconds)
        best = 0.0
        for v in verdicts:
            state = "sustained" if v["sustained"] else "lag grows"
            if v["publisher_bound"]:
                state += ", publisher-bound"
            table.add("scaling", f"{v['calls']} real-time calls", "sent / consumed frames/s",
                      f"{v['sent_rate']:,.0f} / {v['consumed_rate']:,.0f}",
                      f"{state}; target {v['target_rate']:,.0f}/s, lag {v['lag']:,.0f} frames "
                      f"(+{v['lag_growth']:,.0f} over the step's 2nd half), publisher up to {v['behind']:.1f} s late")
        for v in verdicts:  # the calls' worth of frames sustained before the first step whose lag grew
            if not v["sustained"]:
                break
            best = max(best, v["consumed_rate"] * FRAME_MS / 1000 if v["publisher_bound"] else v["calls"])
        ended = next((v for v in verdicts if not v["sustained"]), None)
        note = f"lag grows from {ended['calls']} calls" if ended else "no step showed growing lag"
        if any(v["publisher_bound"] for v in verdicts):
            note += "; publisher could not keep real time at the marked steps (same 2 cores)"
        table.add("scaling", "one process, 20 ms frames", "max sustained calls", f"{best:,.0f}",
                  f"target >= 1,500; {note}")
    finally:
        for proc in (flow_proc, pub_proc):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(30)
        delete_topics(bootstrap, [topic])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    f = sub.add_parser("flow")
    p = sub.add_parser("publish")
    for s in (f, p):
        s.add_argument("--bootstrap", required=True)
        s.add_argument("--topic", required=True)
    p.add_argument("--steps", required=True)
    p.add_argument("--step-seconds", type=float, required=True)
    p.add_argument("--prefix", required=True)
    parser.add_argument("--steps", default="250,500,1000,2000,3000,4000")
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--memory-calls", type=int, default=100)
    args = parser.parse_args()
    if args.mode == "flow":
        flow_child(args)
    elif args.mode == "publish":
        publisher_child(args)
    else:
        table = Table()
        run(table, kafka_bootstrap(), [int(x) for x in args.steps.split(",")], args.step_seconds,
            args.memory_calls)
        print(table.render())


if __name__ == "__main__":
    main()
