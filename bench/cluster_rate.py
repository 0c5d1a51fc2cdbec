"""Cluster POST use: a 2-process cluster posting a skewed backlog (80 % of the chunks on one process) against one
limit, with fixed shares and with lending; one process alone for comparison.

Each process is an OS process of its own holding a SubmitService (the flow's submission service: spacing, AIMD,
journal, and with lending its Kafka reports on a fresh limiter topic of the real broker), posting to the local
worker's reference engine (answers at once) over real HTTP. The worker stamps each POST's arrival; from those:
POSTs/s from the first to the last POST (the backlog) as % of the limit, and the most POSTs in any 1 s window.
The processes get their chunks at the same moment (each says it is ready, then all are told to go).

Alone: .venv/bin/python -m bench.cluster_rate [--quick] [--rate 10 --chunks 600 --skew 0.8]
In `make bench`: `cluster_rate.run(table, bootstrap)` (or `run(table, bootstrap, quick=True)`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import RESULT_PREFIX, Table, delete_topics, emit_result, kafka_bootstrap

API_KEY = "bench-cluster-rate"
READY, GO = "BENCH_READY", "GO"

def _chunks(count: int, prefix: str) -> list:
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))  # the bench chunks live with the small submit flow
    from submit_flow import bench_chunks

    return bench_chunks(max(1, -(-count // 10)), 10, 0.5, prefix=prefix)[:count]

def child(args: argparse.Namespace) -> None:
    """One process of the cluster: start the service, say ready, wait for go, post its backlog, report."""
    from bytewax.speechmatics.connectors.kafka.config import KafkaSettings
    from bytewax.speechmatics.connectors.speechmatics.journal import JobJournal
    from bytewax.speechmatics.connectors.speechmatics.service import (
        ChunkDone,
        ChunkFailed,
        JobKnown,
        SubmitRequest,
        SubmitService,
    )
    from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings

    journal = tempfile.mkdtemp(prefix="bwsm-cluster-rate-")
    settings = SubmitSettings(api_key=API_KEY, batch_url=args.url, post_rate=args.rate, get_rate=args.rate * 5,
                              cluster_processes=args.processes, process_index=args.index,
                              rate_lending=args.lending, kafka=KafkaSettings(args.bootstrap),
                              limiter_topic=args.topic, journal_dir=journal,
                              **({"rate_margin": args.margin} if args.margin is not None else {}))
    service = SubmitService(settings, journal=JobJournal(journal)).start()
    link = service._limiter_link  # noqa: SLF001 - the bench reports the transport's counters
    if link is not None and not link.connected.wait(60):
        raise SystemExit("the limiter topic did not answer within 60 s")
    items = _chunks(args.chunks, f"{args.run}-{args.index}")
    print(READY, flush=True)
    if sys.stdin.readline().strip() != GO:
        raise SystemExit("not told to go")
    started = time.monotonic()
    for chunk in items:
        service.submit(SubmitRequest(chunk))
    calls = {c.span.call_id for c in items}
    done = failed = 0
    last_job = 0.0  # wall time this process last learned a job id: its POSTs all reached the worker before
    deadline = time.monotonic() + args.timeout
    while done + failed < len(items) and time.monotonic() < deadline:
        for call in calls:
            for event in service.take(call):
                done += isinstance(event, ChunkDone)
                failed += isinstance(event, ChunkFailed)
                if isinstance(event, JobKnown):
                    last_job = time.time()
        time.sleep(0.02)
    seconds = time.monotonic() - started
    # A process of a real cluster stays up (and keeps reporting) when its own backlog is done: wait to be stopped.
    emit_result({"done": done, "failed": failed, "seconds": seconds, "last_job": last_job,
                 "published": link.published if link else 0, "received": link.received if link else 0})
    sys.stdin.readline()
    service.close()

def _line_starting(proc: subprocess.Popen, prefix: str) -> str:
    """The child's next stdout line starting with `prefix` (its own deadlines bound the wait)."""
    line = proc.stdout.readline()
    while line and not line.startswith(prefix):
        line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"cluster_rate child exited {proc.wait()} early: {proc.stderr.read()[-3000:]}")
    return line


def run_cluster(url: str, bootstrap: str, counts: list[int], rate: float, lending: bool, timeout: float = 600,
                topic: str | None = None, margin: float | None = None) -> list[dict]:
    """Run one process per entry of `counts` (its chunks), all go at once; their results."""
    topic = topic or f"bench-limiter-{uuid.uuid4().hex[:8]}"
    run_id = uuid.uuid4().hex[:6]
    procs = []
    try:
        for i, count in enumerate(counts):
            cmd = [sys.executable, "-m", "bench.cluster_rate", "child", "--url", url, "--bootstrap", bootstrap,
                   "--topic", topic, "--rate", str(rate), "--processes", str(len(counts)), "--index", str(i),
                   "--chunks", str(count), "--run", run_id, "--timeout", str(timeout)]
            if lending:
                cmd.append("--lending")
            if margin is not None:
                cmd += ["--margin", str(margin)]
            procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}))
        for proc in procs:  # each says it is ready (its own deadline inside: 60 s for the topic)
            _line_starting(proc, READY)
        for proc in procs:
            proc.stdin.write(GO + "\n")
            proc.stdin.flush()
        results = [json.loads(_line_starting(proc, RESULT_PREFIX)[len(RESULT_PREFIX):]) for proc in procs]
        for proc in procs:  # all done: stop the cluster
            proc.communicate(GO + "\n", timeout=60)
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        if lending:
            delete_topics(bootstrap, [topic])

def post_figures(arrivals: list[float], stalls: list[list[float]]) -> tuple[float, int, int]:
    """(POSTs per second from the first to the last arrival, most POSTs in any 1 s window as stamped, and surely:
    not counting stamps a measured stall of the worker's loop may have delayed, `certain_max_in_window`)."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from submit_flow import certain_max_in_window, max_in_window

    arrivals = sorted(arrivals)
    return ((len(arrivals) - 1) / (arrivals[-1] - arrivals[0]), max_in_window(arrivals),
            certain_max_in_window(arrivals, stalls))

def measure(worker, bootstrap: str, counts: list[int], rate: float, lending: bool,  # noqa: ANN001
            margin: float | None = None) -> dict:
    """One case: the worker's POST arrivals while the processes post `counts` chunks."""
    worker.admin.reset()
    results = run_cluster(worker.url, bootstrap, counts, rate, lending, margin=margin)
    stats = worker.admin.stats()
    arrivals = stats["post_arrivals"]
    average, busiest, surely = post_figures(arrivals, stats["loop_stalls"])
    return {"posts": len(arrivals), "average": average, "busiest": busiest, "surely": surely,
            "done": sum(r["done"] for r in results), "failed": sum(r["failed"] for r in results),
            "duplicates": sum(1 for n in stats["jobs_by_reference"].values() if n > 1),
            "reports": sum(r["published"] for r in results)}

def run(table: Table, bootstrap: str, rate: float = 10.0, chunks: int = 600, skew: float = 0.8,
        quick: bool = False, margin: float | None = None) -> None:
    """The cluster POST-use rows: 2 processes with fixed shares and with lending, then 1 process, same backlog."""
    from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings
    from bytewax.speechmatics.connectors.worker.control import start_worker

    if quick:
        rate, chunks = 20.0, 240
    big = round(chunks * skew)
    used_margin = SubmitSettings().rate_margin if margin is None else margin
    cases = [(f"2 proc {skew:.0%}/{1 - skew:.0%}, fixed shares", [big, chunks - big], False),
             (f"2 proc {skew:.0%}/{1 - skew:.0%}, lending", [big, chunks - big], True),
             ("1 proc", [chunks], False)]
    with start_worker(engine="reference", parallel=64, api_key=API_KEY) as worker:
        for case, counts, lending in cases:
            got = measure(worker, bootstrap, counts, rate, lending, margin)
            if got["done"] != chunks or got["posts"] != chunks:
                raise RuntimeError(f"cluster_rate {case}: {got['done']} chunks done, {got['posts']} POSTs, "
                                   f"{chunks} expected")
            table.add("cluster_rate", case, "POST use", f"{100 * got['average'] / rate:.1f} %",
                      f"{got['average']:.2f}/s of {rate:g}/s from first to last of {got['posts']} POSTs; "
                      f"limit / (1 + margin) = {100 / (1 + used_margin):.1f} %")
            table.add("cluster_rate", case, "max POSTs in 1 s", str(got["busiest"]),
                      f"limit {rate:g}; worker arrival times ({got['surely']} surely, not counting stamps a "
                      f"measured stall of the worker may have delayed)"
                      + (f"; {got['reports']} reports" if lending else ""))

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    c = sub.add_parser("child")
    c.add_argument("--url", required=True)
    c.add_argument("--bootstrap", required=True)
    c.add_argument("--topic", required=True)
    c.add_argument("--rate", type=float, required=True)
    c.add_argument("--processes", type=int, required=True)
    c.add_argument("--index", type=int, required=True)
    c.add_argument("--chunks", type=int, required=True)
    c.add_argument("--run", required=True)
    c.add_argument("--timeout", type=float, default=600)
    c.add_argument("--lending", action="store_true")
    c.add_argument("--margin", type=float, default=None)
    parser.add_argument("--quick", action="store_true", help="limit 20/s, 240 chunks: under a minute")
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--chunks", type=int, default=600)
    parser.add_argument("--skew", type=float, default=0.8, help="share of the chunks on process 0")
    parser.add_argument("--margin", type=float, default=None, help="BWSM_RATE_MARGIN (default: the setting's)")
    args = parser.parse_args(argv)
    if args.mode == "child":
        child(args)
        return
    table = Table()
    started = time.monotonic()
    run(table, kafka_bootstrap(), args.rate, args.chunks, args.skew, args.quick, args.margin)
    print(f"cluster_rate: {(time.monotonic() - started) / 60:.1f} min, load {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")
    print(table.render())

if __name__ == "__main__":
    main(sys.argv[1:])
