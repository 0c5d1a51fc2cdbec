"""Counters of the local worker, so tests can check what really reached the server.

POST arrivals are stamped by the worker's event loop (at handler entry, before the body is read), so a stamp is late
by however long the loop could not run: a long callback, or the worker process not scheduled on a loaded machine
(stalls up to 1 s measured on 2 busy cores, far beyond the limiter's 0.06 s margin). `watch_loop` records those
stalls, so a test can tell a stamp that a stall may have displaced (`loop_stalls`) from a real early arrival.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any


class WorkerStats:
    """Requests by route and status, jobs by tracking.reference, POST arrival times, webhook attempts."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.started = time.time()
        self.requests: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.jobs_by_reference: Counter[str] = Counter()
        self.post_arrivals: list[float] = []
        self.loop_stalls: list[tuple[float, float]] = []  # (from, to) wall-clock spans the loop may not have polled
        self.webhooks: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.located: dict[str, Any] = {}
        self.engine_runs: dict[str, Any] = {}

    def request(self, route: str, status: int | str) -> None:
        self.requests[route][str(status)] += 1

    def snapshot(self, jobs_by_status: dict[str, int]) -> dict[str, Any]:
        return {
            "since": self.started,
            "requests": {route: dict(c) for route, c in self.requests.items()},
            "jobs_by_reference": dict(self.jobs_by_reference),
            "jobs_by_status": jobs_by_status,
            "post_arrivals": list(self.post_arrivals),
            "loop_stalls": [list(span) for span in self.loop_stalls],
            "webhooks": {url: dict(c) for url, c in self.webhooks.items()},
            "located": dict(self.located),
            "engine_runs": dict(self.engine_runs),
        }


#: How often the watch wakes, and how much later than that counts as a stall (the stamps' idle jitter is below it).
WATCH_TICK_S = 0.01
STALL_S = 0.005


async def watch_loop(stats: WorkerStats, clock: Callable[[], float] = time.time) -> None:
    """Record every span in which the event loop woke more than STALL_S late (until cancelled).

    A sleep of WATCH_TICK_S that ends `late` seconds late means the loop did not poll its sockets promptly between
    the previous wake-up and this one; a request that arrived then was stamped up to that long after it arrived.
    The span starts one tick before the previous wake-up: the loop reads its sockets before it runs timers, so
    bytes that came just before that wake-up were read only at the next poll.
    """
    previous = clock()
    while True:
        await asyncio.sleep(WATCH_TICK_S)
        now = clock()
        if now - previous - WATCH_TICK_S > STALL_S:
            stats.loop_stalls.append((previous - WATCH_TICK_S, now))
        previous = now
