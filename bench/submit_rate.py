"""Bench: POST rate held by one SubmitService against the local worker (reference engine, instant answers).

    .venv/bin/python bench/submit_rate.py --chunks 300 [--rate 10] [--processes 1] [--p429 0.2 --p503 0.05]

Starts a local worker, feeds a backlog of chunks, prints: POSTs in the busiest 1 s window at the worker,
the average POST rate, the spread of gaps between arrivals, end-to-end throughput, latency percentiles and
peak RSS. With --processes N it runs N OS processes each holding a service with cluster size N.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))  # the small submit flow lives with the tests

from submit_flow import bench_chunks, max_in_window  # noqa: E402

from bytewax.speechmatics.connectors.speechmatics.journal import JobJournal  # noqa: E402
from bytewax.speechmatics.connectors.speechmatics.service import (  # noqa: E402
    ChunkDone,
    ChunkFailed,
    SubmitRequest,
    SubmitService,
)
from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings  # noqa: E402
from bytewax.speechmatics.connectors.speechmatics.throttle import ClusterPlace  # noqa: E402
from bytewax.speechmatics.connectors.worker.control import start_worker  # noqa: E402


def run_service(url: str, chunks: int, rate: float, processes: int, index: int, prefix: str,
                out: multiprocessing.Queue | None = None) -> list[float]:
    os.environ["SPEECHMATICS_API_KEY"] = "bench"
    os.environ["SPEECHMATICS_BATCH_URL"] = url
    settings = SubmitSettings(post_rate=rate, get_rate=rate * 5)
    service = SubmitService(settings, place=ClusterPlace(processes, index),
                            journal=JobJournal(tempfile.mkdtemp(prefix="bwsm-bench-"))).start()
    items = bench_chunks(max(1, chunks // 10), 10, 0.5, prefix=f"{prefix}{index}")[:chunks]
    started = time.monotonic()
    for chunk in items:
        service.submit(SubmitRequest(chunk))
    pending = {c.span.call_id for c in items}
    finished: dict[str, float] = {}
    failed = 0
    while len(finished) + failed < len(items):
        for call in list(pending):
            for event in service.take(call):
                if isinstance(event, ChunkDone):
                    finished[f"{call}/{event.index}"] = time.monotonic() - started
                elif isinstance(event, ChunkFailed):
                    failed += 1
        time.sleep(0.05)
    service.close()
    latencies = sorted(finished.values())
    if out is not None:
        out.put(latencies)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=300)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--p429", type=float, default=0.0, help="fraction of POSTs and GETs answered 429")
    parser.add_argument("--p503", type=float, default=0.0, help="fraction of POSTs and GETs answered 503")
    args = parser.parse_args()
    with start_worker(engine="reference", parallel=64, api_key="bench") as worker:
        if args.p429 or args.p503:
            faults = {"429": args.p429, "503": args.p503}
            worker.admin.set_faults({"rates": {"post": faults, "get": faults}})
        started = time.monotonic()
        if args.processes == 1:
            done = [run_service(worker.url, args.chunks, args.rate, 1, 0, "rate")]
        else:
            queue: multiprocessing.Queue = multiprocessing.Queue()
            procs = [multiprocessing.Process(target=run_service, args=(worker.url, args.chunks // args.processes,
                                                                       args.rate, args.processes, i, "rate", queue))
                     for i in range(args.processes)]
            for p in procs:
                p.start()
            done = [queue.get() for _ in procs]
            for p in procs:
                p.join()
        elapsed = time.monotonic() - started
        stats = worker.admin.stats()
    arrivals = sorted(stats["post_arrivals"])
    accepted = stats["requests"].get("POST /v2/jobs", {})
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    latencies = sorted(x for d in done for x in d)
    dupes = sum(1 for n in stats["jobs_by_reference"].values() if n > 1)
    print(f"chunks {len(latencies)} in {elapsed:.1f} s ({len(latencies) / elapsed:.2f}/s), processes {args.processes}")
    print(f"POST limit {args.rate}/s: busiest 1 s window {max_in_window(arrivals)}, average "
          f"{(len(arrivals) - 1) / (arrivals[-1] - arrivals[0]):.2f}/s over {len(arrivals)} POSTs")
    print(f"POST answers {accepted}; jobs created {sum(stats['jobs_by_reference'].values())}")
    print(f"gaps between POST arrivals: min {min(gaps) * 1000:.1f} ms, median {statistics.median(gaps) * 1000:.1f} ms, "
          f"max {max(gaps) * 1000:.1f} ms")
    q = statistics.quantiles(latencies, n=100)
    print(f"time to result from start: p50 {q[49]:.2f} s, p99 {q[98]:.2f} s; duplicate references {dupes}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB (bench process)")


if __name__ == "__main__":
    main()
