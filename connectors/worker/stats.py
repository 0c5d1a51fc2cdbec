"""Counters of the local worker, so tests can check what really reached the server."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
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
            "webhooks": {url: dict(c) for url, c in self.webhooks.items()},
            "located": dict(self.located),
            "engine_runs": dict(self.engine_runs),
        }
