"""The cluster's POST limit with lending, as real processes: 2 OS processes each with its SubmitService, the lending
reports on a fresh topic of the real broker, POSTs over real HTTP to the local worker (reference engine), a backlog
skewed 80/20. Witness: the worker's POST arrival times. Timings are printed, never asserted. And two clusters'
reports on one topic of the real broker: neither borrows the other's loans."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

import pytest
from submit_flow import certain_max_in_window, max_in_window

sys.path.insert(0, str(Path(__file__).parents[2]))  # the bench package at the repository root

from bench.cluster_rate import API_KEY, run_cluster  # noqa: E402
from bench.common import delete_topics  # noqa: E402

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
    busiest = certain_max_in_window(arrivals, stats["loop_stalls"])  # not counting stamps a worker stall delayed
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


@pytest.mark.kafka
def test_reports_of_another_cluster_on_the_same_topic_are_never_borrowed(kafka_bootstrap: str) -> None:
    """Two deployments on one broker and one limiter topic, each a 2-process cluster with a limit of 10: in cluster
    "b" process 1 is idle and lends its share, process 0 has a backlog and borrows it; cluster "a"'s process 0 has a
    backlog too and reads the same reports, but they are not its cluster's: it stays on its share (5)."""
    from bytewax.speechmatics.connectors.kafka.config import KafkaSettings
    from bytewax.speechmatics.connectors.kafka.limiter import LimiterLink
    from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings
    from bytewax.speechmatics.connectors.speechmatics.throttle import ClusterPlace

    topic = f"test-limiter-{uuid.uuid4().hex[:8]}"

    def link(cluster: str, index: int, waiting: int) -> LimiterLink:
        settings = SubmitSettings(post_rate=float(LIMIT), cluster_processes=2, process_index=index,
                                  kafka=KafkaSettings(kafka_bootstrap), limiter_topic=topic, cluster_id=cluster)
        made = LimiterLink.from_settings(settings, ClusterPlace(2, index), lambda: (waiting, waiting))
        made.sends_tracked(True)  # as the POST limiter says once the HTTP client gates sends
        return made.start()

    a0, b0, b1 = link("a", 0, 500), link("b", 0, 500), link("b", 1, 0)
    try:
        seen_a, seen_b = set(), set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (LIMIT in seen_b and a0.ignored >= 4 and a0.received >= 10):
            seen_a.add(a0.rate())
            seen_b.add(b0.rate())
            time.sleep(0.02)
        print(f"\ncluster b's process 0 reached {max(seen_b)}/s; cluster a's stayed at {max(seen_a)}/s, "
              f"{a0.ignored} of {a0.received} reports read ignored")
        assert max(seen_b) == LIMIT  # the loan works within a cluster
        assert a0.ignored >= 4  # the other cluster's reports did reach cluster a
        assert max(seen_a) == LIMIT // 2  # and gave it nothing
    finally:
        for made in (a0, b0, b1):
            made.stop()
        delete_topics(kafka_bootstrap, [topic])
