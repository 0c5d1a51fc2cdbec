"""The I/O around fleet.Fleet: each worker's `GET /jobs` on a short interval, waiting for a free engine, health.

Runs on the submission service's loop. `GET /jobs` doubles as the readiness probe: a worker that does not answer
it (or answers with an error) `fleet.DOWN_AFTER` times in a row leaves rotation (logged, bwsm_fleet_worker_down,
bwsm_fleet_worker_up 0); its next answer brings it back. (`GET /ready` is 503 whenever every engine is busy, which
is capacity, not ill health, so it is not the probe.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from bytewax.speechmatics.connectors import metrics
from bytewax.speechmatics.connectors.speechmatics.fleet import Fleet, engines_for, worker_name

log = logging.getLogger(__name__)

#: Seconds one `GET /jobs` may take before it counts as failed.
PROBE_TIMEOUT = 2.0
#: While jobs wait for an engine, workers are read this many times as often (an engine that came free is used at
#: once instead of idling until the next read or until our own poll sees its job end).
WAITING_SPEEDUP = 4


def engines_url(url: str) -> str:
    """The worker's engine accounting (`GET /jobs` at the root of its host, beside /ready and /live)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/jobs", "", ""))


class FleetWatch:
    """Keeps `fleet` fresh and lets jobs wait for an engine (see the module doc)."""

    def __init__(self, fleet: Fleet, refresh: float, on_rejoin: Callable[[str], Awaitable[None]]) -> None:
        self.fleet = fleet
        self.refresh = refresh
        self._on_rejoin = on_rejoin
        self._changed = asyncio.Event()  # set whenever engines may have come free or a worker came up
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task] = []
        self._waiting = 0  # jobs waiting in `take` now

    async def start(self, first_report_timeout: float = PROBE_TIMEOUT) -> None:
        """Start watching every worker; returns after each has answered once or `first_report_timeout` passed."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT))
        firsts = [asyncio.ensure_future(self._probe(url)) for url in self.fleet.urls]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*firsts, return_exceptions=True), first_report_timeout)
        self._tasks = [asyncio.ensure_future(self._watch(url)) for url in self.fleet.urls]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _watch(self, url: str) -> None:
        while True:
            await asyncio.sleep(self.refresh / WAITING_SPEEDUP if self._waiting else self.refresh)
            await self._probe(url)

    async def _probe(self, url: str) -> None:
        assert self._session is not None
        name = worker_name(url)
        self.fleet.refreshing(url)
        try:
            async with self._session.get(engines_url(url)) as response:
                response.raise_for_status()
                body = await response.json(content_type=None)
            max_engines, unused = int(body["max_engines"]), int(body["unused_engines"])
            active = {str(job["job_id"]) for job in body.get("active_jobs") or ()}
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to answer is ill health
            if self.fleet.failed(url):
                metrics.FLEET_WORKER_DOWN.labels(worker=name).inc()
                metrics.FLEET_WORKER_UP.labels(worker=name).set(0)
                log.warning("fleet worker %s left rotation: GET /jobs failed %d times (%s)", name,
                            self.fleet.workers[url].failures, type(exc).__name__)
            return
        if self.fleet.report(url, max_engines, unused, active):
            metrics.FLEET_WORKER_UP.labels(worker=name).set(1)
            log.info("fleet worker %s in rotation: %d engines, %d free", name, max_engines, unused)
            await self._on_rejoin(url)
        metrics.FLEET_FREE_ENGINES.labels(worker=name).set(self.fleet.free(url))
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def take(self, engines: int, deadline: float, wanted: int | None = None) -> tuple[str, int] | None:
        """A worker with `engines` free engines and how many are reserved there: `engines`, or up to `wanted` (a
        call's last chunk, fleet.engines_for) when no other job waits; waits (counted) while every worker is full
        or down. None when the monotonic `deadline` passes first."""
        waited = False
        try:
            while True:
                url = self.fleet.pick(engines)
                if url is not None:
                    others = self._waiting - (1 if waited else 0)
                    n = engines_for(engines, wanted or engines, wanted is not None, self.fleet.free(url), others)
                    self.fleet.reserve(url, n)
                    return url, n
                if not waited:
                    waited = True
                    self._waiting += 1
                    metrics.FLEET_WAITS.inc()
                    metrics.FLEET_WAITING.inc()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), min(remaining, self.refresh))
        finally:
            if waited:
                self._waiting -= 1
                metrics.FLEET_WAITING.dec()

    def posted(self, url: str, engines: int, job_id: str | None) -> None:
        """A POST there was answered: the job `job_id` was created, or (None) the engines are free again."""
        self.fleet.posted(url, engines, job_id)
        if job_id is None:
            self._wake()

    def release(self, url: str, engines: int, job_id: str) -> None:
        """A job of ours there ended: its engines are free again."""
        self.fleet.release(url, engines, job_id)
        self._wake()

    def refused(self, url: str) -> None:
        """The worker answered 503 busy to a POST (another process took the engine first)."""
        metrics.FLEET_REFUSALS.labels(worker=worker_name(url)).inc()
        self.fleet.refused(url)

    async def wait_up(self, url: str, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the worker to be in rotation again."""
        deadline = time.monotonic() + timeout
        while not self.fleet.is_up(url):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, self.refresh))
        return True
