"""The cluster's POST limit with lending, as real processes: 2 OS processes each with its SubmitService, the lending
reports on a fresh topic of the real broker, POSTs over real HTTP to the local worker (reference engine), a backlog
skewed 80/20. Witness: the worker's POST arrival times. Timings are printed, never asserted."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
from submit_flow import max_in_window

sys.path.insert(0, str(Path(__file__).parents[2]))  # the bench package at the repository root

from bench.cluster_rate import API_KEY, run_cluster  # noqa: E402

LIMIT = 10


@pytest.mark.slow
@pytest.mark.kafka
def test_a_skewed_backlog_borrows_beyond_its_share_and_never_exceeds_the_limit(local_worker, kafka_bootstrap) -> None:
    worker = local_worker(engine="reference", parallel=64, api_key=API_KEY)
    counts = [64, 16]
    results = run_cluster(worker.url, kafka_bootstrap, counts, float(LIMIT), lending=True, timeout=300,
                          topic=f"test-limiter-{uuid.uuid4().hex[:8]}")
    assert [r["done"] for r in results] == counts
    stats = worker.admin.stats()
    assert all(n == 1 for n in stats["jobs_by_reference"].values())
    arrivals = sorted(stats["post_arrivals"])
    assert len(arrivals) == sum(counts)
    busiest = max_in_window(arrivals)
    # After the small process's last job was known, every POST is the big one's: with fixed shares it could send at
    # most its share (5) in any 1 s window; lending must have let it send more (same run, no absolute time).
    small_done = results[1]["last_job"]
    tail = [t for t in arrivals if t > small_done]
    tail_busiest = max_in_window(tail)
    average = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    print(f"\nskewed backlog {counts} on 2 processes, limit {LIMIT}/s: busiest 1 s window {busiest}, average "
          f"{average:.2f}/s ({100 * average / LIMIT:.1f} %); the big process alone afterwards: busiest 1 s window "
          f"{tail_busiest} over {len(tail)} POSTs; reports published {[r['published'] for r in results]}")
    assert busiest <= LIMIT
    assert len(tail) >= 2 * LIMIT and tail_busiest > LIMIT // 2
