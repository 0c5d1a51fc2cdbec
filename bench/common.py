"""Shared bench helpers: broker and topics, pre-generated frames, /proc CPU and RSS sampling, percentiles, the table.

Every bench runs the code it measures in a child process of its own (as users run it), so CPU and memory are
read per process from /proc, and each child reports its figures as one JSON line on stdout.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from bench.chunker_bench import call_audio, kafka_bootstrap
from bytewax.speechmatics.connectors.kafka.config import client_config
from bytewax.speechmatics.schemas.frames import AudioFrame, encode_frame

__all__ = ["call_audio", "kafka_bootstrap"]

RATE = 16000
BYTES_PER_SECOND = RATE * 2  # pcm_s16le mono
CLK_TCK = os.sysconf("SC_CLK_TCK")
RESULT_PREFIX = "BENCH_RESULT "

Message = tuple[bytes, bytes, list[tuple[str, bytes]]]


# ---- broker ----------------------------------------------------------------------------------------------------

def create_topic(bootstrap: str, prefix: str, partitions: int) -> str:
    """A fresh topic with a unique name (benches never share state with each other or with tests)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"bench-{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(client_config({"bootstrap.servers": bootstrap}))
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(30)
    return topic


def delete_topics(bootstrap: str, topics: Sequence[str]) -> None:
    """Drop bench topics afterwards so repeated runs do not fill the local broker's disk."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(client_config({"bootstrap.servers": bootstrap}))
    for future in admin.delete_topics(list(topics)).values():
        with contextlib.suppress(Exception):  # best effort cleanup
            future.result(30)


def consume(bootstrap: str, topic: str, deadline_s: float, alive: Callable[[], None] | None = None) -> Iterator:
    """The messages of `topic` from its start, until the caller stops iterating or `deadline_s` passes (the caller
    checks whether it saw enough). `alive` is called between polls and raises when what feeds the topic died."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    deadline = time.monotonic() + deadline_s
    try:
        while time.monotonic() < deadline:
            if alive is not None:
                alive()
            yield from (msg for msg in consumer.consume(1000, 0.2) if msg.error() is None)
    finally:
        consumer.close()


def fast_producer(bootstrap: str):  # noqa: ANN201 - confluent_kafka.Producer
    """A producer tuned for bulk loading (big batches, no compression: audio does not compress)."""
    from confluent_kafka import Producer

    return Producer(client_config({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                                   "queue.buffering.max.messages": 2_000_000,
                                   "queue.buffering.max.kbytes": 1_048_576}))


def produce_all(bootstrap: str, topic: str, messages: Sequence[Message]) -> float:
    """Produce pre-built messages as fast as the broker takes them; returns the seconds it took."""
    producer = fast_producer(bootstrap)
    t0 = time.perf_counter()
    for key, value, headers in messages:
        while True:
            try:
                producer.produce(topic, value, key, headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120):
        raise RuntimeError("messages still unsent after 120 s")
    return time.perf_counter() - t0


# ---- frames ----------------------------------------------------------------------------------------------------

def frame_pieces(seconds: float, frame_ms: int) -> list[bytes]:
    """One call's audio cut into frames; shared by every call of a bench (frames are immutable bytes)."""
    audio = call_audio(seconds, RATE)
    step = RATE * frame_ms // 1000 * 2
    return [audio[i : i + step] for i in range(0, len(audio), step)]


def call_frames(call_id: str, pieces: Sequence[bytes], first_seq: int = 0, end: bool = True) -> Iterator[Message]:
    """The Kafka (key, value, headers) of one call's frames, through the contract's own encoder."""
    last = len(pieces) - 1
    for i, piece in enumerate(pieces):
        yield encode_frame(AudioFrame(call_id, first_seq + i, piece, RATE, end=end and i == last))


def interleaved(call_ids: Sequence[str], pieces: Sequence[bytes], end: bool = True) -> list[Message]:
    """All calls' frames round-robin, as a partition carries concurrent calls."""
    streams = [list(call_frames(cid, pieces, end=end)) for cid in call_ids]
    return [stream[i] for i in range(len(pieces)) for stream in streams]


# ---- processes -------------------------------------------------------------------------------------------------

def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (and its reaped children), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / CLK_TCK  # utime stime cutime cstime


def proc_rss_bytes(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) in bytes, from /proc/<pid>/status."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return rss, hwm


@dataclass
class ProcUsage:
    """CPU seconds and peak RSS of one process over a measured interval."""

    name: str
    cpu_seconds: float = 0.0
    peak_rss: int = 0
    wall_seconds: float = 0.0

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.cpu_seconds / self.wall_seconds if self.wall_seconds else 0.0


@dataclass
class ProcSampler:
    """Samples named processes' CPU and RSS from /proc in a thread, until stopped (or they exit)."""

    pids: dict[str, int]
    interval: float = 0.25
    usage: dict[str, ProcUsage] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._start_cpu = {n: self._cpu(p) for n, p in self.pids.items()}
        self.usage = {n: ProcUsage(n) for n in self.pids}
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-proc-sampler")
        self._thread.start()

    @staticmethod
    def _cpu(pid: int) -> float:
        try:
            return proc_cpu_seconds(pid)
        except OSError:
            return 0.0

    def _sample(self) -> None:
        for name, pid in self.pids.items():
            try:
                cpu = proc_cpu_seconds(pid)
                _, hwm = proc_rss_bytes(pid)
            except OSError:
                continue  # exited: keep the last sample
            u = self.usage[name]
            u.cpu_seconds = cpu - self._start_cpu[name]
            u.peak_rss = max(u.peak_rss, hwm)
            u.wall_seconds = time.monotonic() - self._t0

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> dict[str, ProcUsage]:
        self._sample()
        self._stop.set()
        self._thread.join()
        return self.usage


def free_port() -> int:
    """A TCP port nobody listens on now (for cluster addresses and the dataflow API)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_child(args: Sequence[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `python -m <args>` with its output captured (read it with `child_result`)."""
    return subprocess.Popen([sys.executable, "-m", *args], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def child_result(proc: subprocess.Popen, timeout: float = 600) -> dict:
    """The JSON a child's RESULT_PREFIX line carries; raise with its output when there is none."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    for line in out.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(f"{proc.args} exited {proc.returncode} without a result:\n{out[-3000:]}\n{err[-3000:]}")


def run_child(args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 600) -> dict:
    """Run one child to its end and return its result."""
    return child_result(start_child(args, env), timeout)


class CountClock:
    """Polls a counter in a thread: when it first moved, when it last moved, its last value.

    Used inside a child so that start-up and shut-down are left out of the throughput window without adding
    any work to the measured path.
    """

    def __init__(self, read: Callable[[], float], interval: float = 0.002) -> None:
        self.read = read
        self.interval = interval
        self.first = self.last = 0.0
        self.value = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-count-clock")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll()

    def _poll(self) -> None:
        value = self.read()
        if value != self.value:
            now = time.perf_counter()
            if not self.first:
                self.first = now
            self.last, self.value = now, value

    def stop(self) -> float:
        """Stop polling; the seconds between the first and the last move."""
        self._stop.set()
        self._thread.join()
        self._poll()
        return self.last - self.first


def emit_result(result: dict) -> None:
    """How a child process hands its figures to the parent."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def self_usage() -> dict[str, float]:
    """This process's CPU seconds and peak RSS (for a child to report about itself)."""
    pid = os.getpid()
    return {"cpu_seconds": proc_cpu_seconds(pid), "peak_rss": proc_rss_bytes(pid)[1]}


# ---- statistics and the table ----------------------------------------------------------------------------------

def percentiles(values: Sequence[float], ps: Sequence[float] = (50, 95, 99)) -> list[float]:
    """Nearest-rank percentiles (NaN for no values): simple, and exact for the values we have."""
    if not values:
        return [float("nan")] * len(ps)
    ordered = sorted(values)
    n = len(ordered)
    return [ordered[min(n - 1, max(0, int(-(-p * n // 100)) - 1))] for p in ps]


def histogram_percentiles(buckets: Sequence[tuple[float, float]], ps: Sequence[float] = (50, 95, 99)) -> list[float]:
    """Percentiles from cumulative Prometheus buckets [(upper bound, count)], interpolated inside a bucket."""
    total = buckets[-1][1] if buckets else 0
    out = []
    for p in ps:
        if not total:
            out.append(float("nan"))
            continue
        rank = p / 100 * total
        prev_le, prev_count = 0.0, 0.0
        for le, count in buckets:
            if count >= rank:
                if le == float("inf"):
                    out.append(prev_le)
                else:
                    share = (rank - prev_count) / (count - prev_count) if count > prev_count else 1.0
                    out.append(prev_le + share * (le - prev_le))
                break
            prev_le, prev_count = le, count
    return out


def mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.0f} MiB"


@dataclass
class Table:
    """Rows of (bench, case, figure, value, notes), printed once at the end with aligned columns."""

    rows: list[tuple[str, str, str, str, str]] = field(default_factory=list)

    def add(self, bench: str, case: str, figure: str, value: str, notes: str = "") -> None:
        self.rows.append((bench, case, figure, value, notes))
        print(f"  [{bench}] {case}: {figure} = {value} {notes}", flush=True)

    def render(self) -> str:
        head = ("bench", "case", "figure", "value", "notes")
        rows = [head, *self.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = []
        for n, row in enumerate(rows):
            lines.append(" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
            if n == 0:
                lines.append("-+-".join("-" * w for w in widths))
        return "\n".join(lines)
