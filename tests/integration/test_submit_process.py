"""The submit step as real Bytewax processes against the local worker: rate limits, cluster share, bad key, SIGKILL.

Witnesses are the worker's counters (POST arrival times, jobs by reference) and the flow's output file.
Timings are measured and printed (run with -s to see them), never asserted.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import submit_flow as bench

ROOT = Path(__file__).parents[2]
FLOW = str(ROOT / "tests" / "submit_flow.py") + ":flow"
API_KEY = "proc-key-91c3"



def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]




def flow_env(worker, tmp_path: Path, **extra: str) -> dict[str, str]:
    out = tmp_path / "out.jsonl"
    out.touch()
    return {**os.environ, "SPEECHMATICS_API_KEY": API_KEY, "SPEECHMATICS_BATCH_URL": worker.url,
            "BWSM_BENCH_OUT": str(out), "BWSM_JOURNAL_DIR": str(tmp_path / "journal"), **extra}


def read_results(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines() if line.strip()]


def wait_for(predicate, deadline_s: float, what: str) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def worker(local_worker):
    return local_worker(engine="reference", parallel=64, api_key=API_KEY)


def post_rate_figures(arrivals: list[float]) -> tuple[int, float]:
    """(most POSTs in any 1 s window, average POSTs per second over the backlog)."""
    arrivals = sorted(arrivals)
    return bench.max_in_window(arrivals), (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])


@pytest.mark.slow
def test_backlog_is_posted_at_the_limit_and_never_above(worker, tmp_path) -> None:
    env = flow_env(worker, tmp_path, BWSM_BENCH_CALLS="30", BWSM_BENCH_CHUNKS="10", BWSM_BENCH_PREFIX="rate")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "bytewax.run", FLOW], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = read_results(tmp_path)
    assert len({(r["call"], r["index"]) for r in results}) == 300 and all(r["ok"] for r in results)
    arrivals = worker.admin.stats()["post_arrivals"]
    assert len(arrivals) == 300
    peak, average = post_rate_figures(arrivals)
    print(f"\nbacklog 300 chunks, limit 10/s: peak {peak} POSTs in a 1 s window, average {average:.2f}/s, "
          f"run {elapsed:.1f} s")
    assert peak <= 10
    assert average >= 9.0


@pytest.mark.slow
def test_two_process_cluster_shares_one_limit(worker, tmp_path) -> None:
    env = flow_env(worker, tmp_path, BWSM_BENCH_CALLS="40", BWSM_BENCH_CHUNKS="5", BWSM_BENCH_PREFIX="cluster")
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    procs = [subprocess.Popen([sys.executable, "-m", "bytewax.run", FLOW, "-i", str(i), "-a", addresses], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    results = read_results(tmp_path)
    assert len({(r["call"], r["index"]) for r in results}) == 200 and all(r["ok"] for r in results)
    stats = worker.admin.stats()
    assert all(n == 1 for n in stats["jobs_by_reference"].values())
    peak, average = post_rate_figures(stats["post_arrivals"])
    sure = bench.certain_max_in_window(stats["post_arrivals"], stats["loop_stalls"])
    print(f"\n2-process cluster, 200 chunks, shared limit 10/s: peak {peak} in a 1 s window as stamped, {sure} surely "
          f"(worker loop stalls {len(stats['loop_stalls'])}), average {average:.2f}/s")
    assert sure <= 10  # a stamp a measured stall of the worker may have delayed is not held against the limiter


def test_wrong_api_key_stops_the_flow_process_with_the_cause(worker, tmp_path) -> None:
    env = flow_env(worker, tmp_path, SPEECHMATICS_API_KEY="not-the-key-3d2", BWSM_BENCH_PREFIX="badkey")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "bytewax.run", FLOW], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    elapsed = time.monotonic() - started
    print(f"\nwrong API key: flow process exited {proc.returncode} after {elapsed:.2f} s (including start-up)")
    assert proc.returncode != 0
    assert "refused the API key: authentication failed" in proc.stderr and "SPEECHMATICS_API_KEY" in proc.stderr
    assert "panicked" not in proc.stderr  # found while the flow was built: no Bytewax worker ran
    assert "not-the-key-3d2" not in proc.stderr + proc.stdout
    assert not worker.admin.stats()["requests"].get("POST /v2/jobs")


@pytest.mark.slow
def test_sigkill_with_jobs_in_flight_then_recovery_loses_nothing_and_pays_once(worker, tmp_path) -> None:
    db = tmp_path / "db"
    db.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(db), "1"], check=True)
    worker.admin.set_faults({"job_duration": {"dist": "fixed", "value": 10.0},
                             "latency": {"post": {"dist": "uniform", "min": 0.1, "max": 0.6}}})
    env = flow_env(worker, tmp_path, BWSM_BENCH_CALLS="6", BWSM_BENCH_CHUNKS="8", BWSM_BENCH_PREFIX="kill",
                   BWSM_POST_RATE="20")
    argv = [sys.executable, "-m", "bytewax.run", FLOW, "-r", str(db), "-s", "1", "-b", "0"]
    first = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for(lambda: len(worker.admin.engines()["active_jobs"]) >= 30, 60, ">= 30 jobs running at the worker")
    in_flight = len(worker.admin.engines()["active_jobs"])
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    rows = [row for path in (tmp_path / "journal").glob("journal-p*.sqlite3")
            for row in sqlite3.connect(path).execute("SELECT reference, job_id FROM jobs")]
    returned = {ref for ref, job_id in rows if job_id is not None}
    cut_short = {ref for ref, job_id in rows if job_id is None} - returned
    posted_before = dict(worker.admin.stats()["jobs_by_reference"])
    worker.admin.set_faults({"job_duration": {"dist": "fixed", "value": 0.0}})
    lists_before = sum(worker.admin.stats()["requests"].get("GET /v2/jobs", {}).values())
    started = time.monotonic()
    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    elapsed = time.monotonic() - started
    assert second.returncode == 0, second.stderr[-3000:]
    refs = {f"kill-{c}/{i}" for c in range(6) for i in range(8)}
    results = read_results(tmp_path)
    assert {f"{r['call']}/{r['index']}" for r in results} == refs, "a chunk was lost"
    assert all(r["ok"] for r in results)
    by_ref = worker.admin.stats()["jobs_by_reference"]
    duplicates = {ref: by_ref[ref] for ref in returned if by_ref.get(ref) != 1}
    assert not duplicates, f"chunks whose POST had returned were posted again: {duplicates}"
    extra = sum(n - 1 for ref, n in by_ref.items() if ref in refs and n > 1)
    assert extra == 0  # POSTs cut short by the kill were looked up by reference (journal intent), not re-posted
    lookups = sum(worker.admin.stats()["requests"].get("GET /v2/jobs", {}).values()) - lists_before
    print(f"\nSIGKILL with {in_flight} jobs running at the worker ({len(posted_before)} created, {len(returned)} POSTs "
          f"returned and journaled, {len(cut_short)} POSTs cut short): restart finished in {elapsed:.1f} s, "
          f"{len(results)} results, {lookups} reference lookups, duplicate jobs for returned POSTs 0, "
          f"extra jobs overall {extra}")
