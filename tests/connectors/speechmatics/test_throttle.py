"""Throttle arithmetic: cluster share, AIMD, spacing; the 'any 1 s window' guarantee as a property."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st
from submit_flow import max_in_window

from bytewax.speechmatics.connectors.speechmatics.throttle import (
    AimdRate,
    ClusterPlace,
    RateLimiter,
    SpacedSchedule,
    cluster_place,
    cluster_share,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now




def test_cluster_place_from_bytewax_run_arguments() -> None:
    argv = ["bytewax.run", "flow:flow", "-i", "1", "-a", "h1:2101;h2:2101;h3:2101"]
    assert cluster_place(argv, {}) == ClusterPlace(3, 1)
    assert cluster_place(["x"], {"BYTEWAX_ADDRESSES": "a:1;b:1", "BYTEWAX_PROCESS_ID": "1"}) == ClusterPlace(2, 1)
    assert cluster_place(["x"], {}) == ClusterPlace(1, 0)


def test_cluster_place_from_helm_hostfile(tmp_path) -> None:
    hostfile = tmp_path / "hosts"
    hostfile.write_text("a:2101\nb:2101\n\n")
    env = {"BYTEWAX_HOSTFILE_PATH": str(hostfile), "BYTEWAX_POD_NAME": "flow-1", "BYTEWAX_STATEFULSET_NAME": "flow"}
    assert cluster_place(["x"], env) == ClusterPlace(2, 1)


@given(limit=st.integers(1, 200), processes=st.integers(1, 300))
def test_integer_shares_add_up_to_the_limit(limit: int, processes: int) -> None:
    shares = [cluster_share(float(limit), ClusterPlace(processes, i)) for i in range(processes)]
    assert abs(sum(shares) - limit) < 1e-9
    if processes <= limit:
        assert all(s == int(s) and s >= 1 for s in shares)


def test_aimd_cuts_on_429_once_per_cooldown_and_recovers() -> None:
    clock = FakeClock()
    rate = AimdRate(10.0, decrease=0.5, floor=0.2, recovery=0.1, cooldown=1.0, clock=clock)
    assert rate.on_throttled() is True
    assert rate.current() == 5.0
    assert rate.on_throttled() is False  # same burst
    clock.now += 1.0
    assert rate.on_throttled() is True
    assert abs(rate.current() - 3.0) < 1e-9  # 5 + 1 s * 1/s recovery = 6, halved
    for _ in range(10):
        clock.now += 1.0
        rate.on_throttled()
    assert rate.current() >= 2.0  # floor: 20 % of the ceiling
    clock.now += 100.0
    assert rate.current() == 10.0


@given(limit=st.integers(1, 60), margin=st.floats(0.001, 0.2),
       arrivals=st.lists(st.floats(0.0, 0.5), min_size=1, max_size=300))
def test_spacing_never_allows_more_than_the_limit_in_any_window(limit: int, margin: float,
                                                                arrivals: list[float]) -> None:
    schedule = SpacedSchedule(margin)
    now, grants = 0.0, []
    for gap in arrivals:
        now += gap
        slot = schedule.next_slot(now, float(limit))
        schedule.take(slot)
        grants.append(slot)
        now = max(now, slot)
    assert max_in_window(grants) <= limit


@given(jitter=st.lists(st.floats(0.0, 0.05), min_size=40, max_size=40))
def test_arrival_jitter_within_the_margin_keeps_the_window(jitter: list[float]) -> None:
    schedule, grants = SpacedSchedule(0.06), []
    for _ in jitter:
        slot = schedule.next_slot(0.0 if not grants else grants[-1], 10.0)
        schedule.take(slot)
        grants.append(slot)
    arrivals = [g + j for g, j in zip(grants, jitter, strict=True)]
    assert max_in_window(arrivals) <= 10


def test_rate_limiter_serves_waiters_in_order_at_the_spaced_rate() -> None:
    async def run() -> list[tuple[int, float]]:
        loop = asyncio.get_running_loop()
        limiter = RateLimiter("post", AimdRate(50.0), margin=0.0)
        order: list[tuple[int, float]] = []

        async def one(i: int) -> None:
            await limiter.acquire()
            order.append((i, loop.time()))

        await asyncio.gather(*(one(i) for i in range(20)))
        return order

    order = asyncio.run(run())
    assert [i for i, _ in order] == list(range(20))
    gaps = [b - a for (_, a), (_, b) in zip(order, order[1:], strict=False)]
    assert min(gaps) >= 0.02 * 0.95  # 1/50 s apart (timer granularity aside)
