"""A fleet of local workers (issue 29): throughput and per-call latency with 1, 2 and 4 workers, and busy refusals
with engine-aware routing against a round-robin baseline.

Each worker runs the reference engine with `--parallel 2` and `--processing-factor 0.1` (a job keeps its engine
0.1 s per second of audio, as a real engine at 0.1x real time). Calls arrive live: every `chunk_seconds` one more
chunk of every call is handed to the submission service (one SubmitService in this process, the real SDK, real
HTTP), the last of them marked last. Figures:
- throughput: chunks transcribed per second from the first hand-over to the last result, and seconds of audio
  per second;
- call latency: from a call's last chunk being handed over to the last of its chunks' results (the submission
  part of end -> call_completed, without Kafka and the collector);
- refusals: POSTs the workers answered 503 "Server busy", per 1,000 jobs (the workers' own request counts).
Round robin is the baseline a load balancer gives: the next worker in turn whatever its engines, a refused POST
retried at the next one after an exponential backoff (50 ms doubling to 1 s), as a client behind a balancer does.

    python -m bench.fleet [--calls 30] [--chunks 6] [--chunk-seconds 2] [--workers 1,2,4] [--last-chunk-engines 2]

`--last-chunk-engines K` adds the routing runs with BWSM_FLEET_LAST_CHUNK_ENGINES=K (a call's last chunk asks for
up to K engines when free and no job waits; the worker then takes F x audio / K): compare their call latency.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import tempfile
import time
from collections.abc import Sequence

import numpy as np

from bench.common import Table, percentiles

ENGINES = 2
PROCESSING_FACTOR = 0.1
RATE = 16000


def _chunks(calls: int, per_call: int, seconds: float) -> list[list]:
    """Waves of chunks: wave i holds chunk i of every call (deterministic noise, unknown to the engine)."""
    from bytewax.speechmatics.schemas.chunks import Chunk, ChunkSpan

    samples = int(seconds * RATE)
    waves = []
    for i in range(per_call):
        wave = []
        for c in range(calls):
            audio = np.random.default_rng([c, i]).integers(-2000, 2000, samples, dtype=np.int16).astype("<i2")
            span = ChunkSpan(f"fleet-{c}", i, i * samples, (i + 1) * samples, 0, RATE, "pcm_s16le", 1,
                             last=i == per_call - 1)
            wave.append(Chunk(span, audio.tobytes(), ()))
        waves.append(wave)
    return waves


def _round_robin(service) -> None:  # noqa: ANN001
    """Make the service's fleet route like a load balancer (see the module doc)."""
    watch = service._watch  # noqa: SLF001 - the bench swaps the routing for its baseline
    turn = itertools.cycle(watch.fleet.urls)
    tries: dict[asyncio.Task, int] = {}

    async def take(engines: int, deadline: float, wanted: int | None = None) -> tuple[str, int] | None:
        task = asyncio.current_task()
        assert task is not None
        n = tries.get(task, 0)
        tries[task] = n + 1
        if n:
            await asyncio.sleep(random.uniform(0.5, 1.0) * min(1.0, 0.05 * 2 ** (n - 1)))  # noqa: S311
        task.add_done_callback(lambda t: tries.pop(t, None))
        for _ in watch.fleet.urls:
            url = next(turn)
            if watch.fleet.is_up(url):
                watch.fleet.reserve(url, engines)
                return url, engines
        return None

    watch.take = take


def measure(urls: Sequence[str], waves: list[list], chunk_seconds: float, routing: str, journal_dir: str,
            last_chunk_engines: int = 1) -> dict:
    """One run: hand the waves over live, wait for every result; the figures of the module doc."""
    from bytewax.speechmatics.connectors.speechmatics.journal import JobJournal
    from bytewax.speechmatics.connectors.speechmatics.service import ChunkDone, SubmitRequest, SubmitService
    from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings
    from bytewax.speechmatics.connectors.speechmatics.throttle import ClusterPlace

    settings = SubmitSettings(api_key="bench-fleet", batch_url=urls[0], worker_urls=tuple(urls),  # one: routed too
                              journal_dir=journal_dir, poll_min=0.05, poll_max=0.25, fleet_refresh=0.2,
                              backoff_base=0.05, backoff_cap=1.0, fleet_last_chunk_engines=last_chunk_engines)
    service = SubmitService(settings, place=ClusterPlace(1, 0), journal=JobJournal(journal_dir)).start()
    if routing == "round_robin":
        _round_robin(service)
    calls = {chunk.span.call_id for chunk in waves[0]}
    total = sum(len(wave) for wave in waves)
    last_handed: dict[str, float] = {}
    results: dict[str, float] = {}
    done = 0
    started = time.monotonic()
    try:
        for n, wave in enumerate(waves):
            while time.monotonic() < started + n * chunk_seconds:
                done += _collect(service, calls, results, ChunkDone)
                time.sleep(0.01)
            for chunk in wave:
                service.submit(SubmitRequest(chunk))
                if chunk.span.last:
                    last_handed[chunk.span.call_id] = time.monotonic()
        deadline = time.monotonic() + 300
        while done < total and time.monotonic() < deadline and service.fatal is None:
            done += _collect(service, calls, results, ChunkDone)
            time.sleep(0.01)
        elapsed = max(results.values()) - started
    finally:
        service.close()
    latencies = [results[c] - last_handed[c] for c in calls if c in results]
    return {"done": done, "total": total, "elapsed": elapsed, "latencies": latencies}


def _collect(service, calls: set[str], results: dict[str, float], done_type: type) -> int:  # noqa: ANN001
    """Take every call's events; `results[call]` = when its latest chunk result arrived. The chunks done."""
    n = 0
    now = time.monotonic()
    for call_id in calls:
        for event in service.take(call_id):
            if isinstance(event, done_type):
                n += 1
                results[call_id] = now
    return n


def run(table: Table, calls: int = 30, per_call: int = 6, chunk_seconds: float = 2.0,
        worker_counts: Sequence[int] = (1, 2, 4), last_chunk_engines: int = 1) -> None:
    from bytewax.speechmatics.connectors.worker.control import start_worker

    waves = _chunks(calls, per_call, chunk_seconds)
    cases = [(n, "routing", 1) for n in worker_counts]
    if last_chunk_engines > 1:  # the same runs with BWSM_FLEET_LAST_CHUNK_ENGINES on, to compare
        cases += [(n, "routing", last_chunk_engines) for n in worker_counts]
    cases += [(n, "round_robin", 1) for n in worker_counts if n > 1]
    for n, routing, last_engines in cases:
        workers = [start_worker(engine="reference", parallel=ENGINES,
                                extra_args=["--processing-factor", str(PROCESSING_FACTOR)]) for _ in range(n)]
        try:
            with tempfile.TemporaryDirectory() as journal_dir:
                out = measure([w.url for w in workers], waves, chunk_seconds, routing, journal_dir, last_engines)
            refusals = sum(w.admin.stats()["requests"].get("POST /v2/jobs", {}).get("503", 0) for w in workers)
        finally:
            for w in workers:
                w.stop()
        case = f"{n} worker{'s' if n > 1 else ''} x {ENGINES} engines, {routing.replace('_', ' ')}"
        if last_engines > 1:
            case += f", last chunk up to {last_engines} engines"
        p50, p95, p99 = percentiles(out["latencies"])
        table.add("fleet", case, "chunks/s", f"{out['done'] / out['elapsed']:.1f}",
                  f"{out['done']}/{out['total']} chunks, {out['done'] * chunk_seconds / out['elapsed']:.1f} audio s/s")
        table.add("fleet", case, "call latency p50/p95/p99 s", f"{p50:.2f}/{p95:.2f}/{p99:.2f}",
                  "last chunk handed over -> its call's last result")
        table.add("fleet", case, "503 refusals per 1,000 jobs", f"{1000 * refusals / max(1, out['done']):.0f}",
                  f"{refusals} refusals")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--chunks", type=int, default=6, help="chunks per call")
    parser.add_argument("--chunk-seconds", type=float, default=2.0)
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    parser.add_argument("--last-chunk-engines", type=int, default=1,
                        help="also run with BWSM_FLEET_LAST_CHUNK_ENGINES at this value (> 1) to compare")
    args = parser.parse_args(argv)
    table = Table()
    run(table, args.calls, args.chunks, args.chunk_seconds, [int(x) for x in args.workers.split(",")],
        args.last_chunk_engines)
    print(table.render())


if __name__ == "__main__":
    main()
