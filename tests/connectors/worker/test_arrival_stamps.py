"""The local worker's POST arrival stamps and their measured uncertainty (loop stalls), as the limit tests use them."""

from __future__ import annotations

import asyncio
import time

from hypothesis import given
from hypothesis import strategies as st
from submit_flow import certain_max_in_window, max_in_window

from bytewax.speechmatics.connectors.worker.stats import WorkerStats, watch_loop

SPACING = 1.06 / 10  # the limiter's spacing at 10/s with its 0.06 s margin


def test_a_blocked_loop_is_recorded_as_a_stall_covering_the_block() -> None:
    async def main() -> tuple[float, float, list[tuple[float, float]]]:
        stats = WorkerStats()
        watch = asyncio.ensure_future(watch_loop(stats))
        await asyncio.sleep(0.05)
        began = time.time()
        time.sleep(0.1)  # a long callback: the loop polls nothing meanwhile
        ended = time.time()
        await asyncio.sleep(0.05)
        watch.cancel()
        return began, ended, stats.loop_stalls

    began, ended, stalls = asyncio.run(main())
    assert any(a <= began and b >= ended for a, b in stalls), (began, ended, stalls)


def test_a_stamp_delayed_by_a_measured_stall_is_not_counted_early_but_a_real_burst_is() -> None:
    sends = [100.0 + i * SPACING for i in range(11)]  # 11 sends over 1.06 s: within the limit of 10 per 1 s
    stamps = [sends[0] + 0.076, *sends[1:]]  # the first stamped 76 ms late, as measured under load
    assert max_in_window(stamps) == 11
    stall = [sends[0] - 0.01, stamps[0] - 0.002]  # the worker's loop did not run meanwhile
    assert certain_max_in_window(stamps, [stall]) == 10
    assert certain_max_in_window(stamps, []) == 11  # no measured stall: the stamp stands
    over = [100.0 + i / 11 for i in range(55)]  # a real over-limit: 11/s for 5 s, with stalls as measured
    assert certain_max_in_window(over, [[101.0, 101.08], [102.5, 102.57]]) == 11


times = st.lists(st.floats(0, 20, allow_nan=False), max_size=60)
spans = st.lists(st.tuples(st.floats(0, 20), st.floats(0, 0.5)).map(lambda p: [p[0], p[0] + p[1]]), max_size=8)


@given(times)
def test_without_stalls_it_is_the_plain_window_count(stamps: list[float]) -> None:
    assert certain_max_in_window(stamps, []) == max_in_window(stamps)


@given(times, spans)
def test_stalls_only_ever_lower_the_count_and_only_near_them(stamps: list[float], stalls: list[list[float]]) -> None:
    sure = certain_max_in_window(stamps, stalls)
    assert sure <= max_in_window(stamps)
    untouched = [t for t in stamps if not any(a < t <= b + 0.015 for a, b in stalls)]
    assert sure >= max_in_window(untouched)
