"""A small Bytewax flow around the submit step, for benches and process-level tests (cluster, SIGKILL, bad key).

    BWSM_BENCH_CALLS=30 BWSM_BENCH_CHUNKS=10 BWSM_BENCH_OUT=/tmp/out.jsonl \\
    SPEECHMATICS_API_KEY=... SPEECHMATICS_BATCH_URL=http://127.0.0.1:PORT/v2 \\
    python -m bytewax.run tests/submit_flow.py:flow [-r DB -s 1 -b 0]

Input: pre-cut chunks (deterministic noise per call and index, so a replay after recovery has the same audio
hash). Output: one JSON line per ChunkResult (call, index, ok, job id, attempts, error, words) to
BWSM_BENCH_OUT (a FileSink, so recovery truncates it to the last snapshot) and dead letters to
BWSM_BENCH_OUT + ".dlq".
"""

from __future__ import annotations

import os
from pathlib import Path

import bytewax.operators as op
import numpy as np
import orjson
from bytewax.connectors.files import FileSink
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource

from bytewax.speechmatics.flows.settings import Settings
from bytewax.speechmatics.flows.submitter import transcribe_chunks
from bytewax.speechmatics.schemas.chunks import Chunk, ChunkResult, ChunkSpan
from bytewax.speechmatics.schemas.dead_letters import DeadLetter

RATE = 16000


def bench_chunk(call: int, index: int, seconds: float, chunks_per_call: int, prefix: str = "bench") -> Chunk:
    """A chunk of deterministic noise (same bytes on every run)."""
    samples = int(seconds * RATE)
    rng = np.random.default_rng([call, index])
    audio = rng.integers(-2000, 2000, samples, dtype=np.int16).astype("<i2").tobytes()
    span = ChunkSpan(f"{prefix}-{call}", index, index * samples, (index + 1) * samples, 0, RATE, "pcm_s16le", 1,
                     last=index == chunks_per_call - 1)
    return Chunk(span, audio, (("calls.audio", call % 4, index * 10, index * 10 + 9),))


def bench_chunks(calls: int, chunks_per_call: int, seconds: float, prefix: str = "bench") -> list[Chunk]:
    """Interleaved by index, like live calls: chunk 0 of every call, then chunk 1, ..."""
    return [bench_chunk(c, i, seconds, chunks_per_call, prefix) for i in range(chunks_per_call) for c in range(calls)]


def result_line(result: ChunkResult) -> str:
    words = len(result.transcript.get("results", [])) if result.transcript else 0
    return orjson.dumps({"call": result.span.call_id, "index": result.span.index, "ok": result.ok,
                         "job_id": result.job_id, "attempts": result.attempts, "error": result.error,
                         "words": words}).decode()


def letter_line(letter: DeadLetter) -> str:
    return orjson.dumps({"reason": letter.reason, "stage": letter.stage, "context": dict(letter.context)}).decode()


def build_flow() -> Dataflow:
    calls = int(os.environ.get("BWSM_BENCH_CALLS", "30"))
    per_call = int(os.environ.get("BWSM_BENCH_CHUNKS", "10"))
    seconds = float(os.environ.get("BWSM_BENCH_SECONDS", "0.5"))
    out = Path(os.environ.get("BWSM_BENCH_OUT", "submit_bench_out.jsonl"))
    prefix = os.environ.get("BWSM_BENCH_PREFIX", "bench")
    flow = Dataflow("submit_bench")
    chunks = op.input("chunks", flow, TestingSource(bench_chunks(calls, per_call, seconds, prefix)))
    keyed = op.key_on("by_call", chunks, lambda c: c.span.call_id)
    submitted = transcribe_chunks("submit", keyed, Settings.from_env().submission)
    lines = op.map("result_line", submitted.oks, lambda kv: (kv[0], result_line(kv[1])))
    op.output("results", lines, FileSink(out))
    letters = op.map("letter_line", submitted.errs, lambda dl: ((dl.key or b"").decode(), letter_line(dl)))
    op.output("dlq", letters, FileSink(Path(str(out) + ".dlq")))
    return flow


def __getattr__(name: str) -> Dataflow:
    """`flow` is built when bytewax.run asks for it (importing this module for its helpers builds nothing)."""
    if name == "flow":
        return build_flow()
    raise AttributeError(name)


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """Most events in any half-open window [t, t + window): what a rate limit per window must bound."""
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def certain_max_in_window(stamps: list[float], stalls: list[list[float]], window: float = 1.0,
                          slack: float = 0.015) -> int:
    """Most POSTs that surely arrived within one window, given the local worker's arrival stamps and loop stalls.

    A stamp is taken on the worker's event loop, so a request that arrived while the loop stalled (a long callback,
    the process not scheduled on a loaded machine; `stats.watch_loop`) is stamped when the stall ends: its arrival
    is only known to lie in [start of the stall, stamp]. A stamp up to `slack` (the watch's tick and threshold)
    after a stall's end may be such a stamp; overlapping stalls count as one. Anywhere else the stamp is the
    arrival. A run of POSTs surely fits in one window when its latest stamp minus its earliest possible arrival is
    below `window`. Without stalls this is `max_in_window`: the only tolerance is a stall the worker measured.
    """
    spans: list[list[float]] = []
    for start, end in sorted(stalls):
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    stamps = sorted(stamps)
    earliest = [next((a for a, b in spans if a < t <= b + slack), t) for t in stamps]
    best = 0
    for i in range(len(stamps)):
        first = earliest[i]
        for j in range(i, len(stamps)):
            first = min(first, earliest[j])
            if first <= stamps[j] - window:
                break
            best = max(best, j - i + 1)
    return best
