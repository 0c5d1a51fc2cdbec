"""Throttle arithmetic: cluster share, AIMD, spacing; the 'any 1 s window' guarantee as a property, also with delays
between grant and send, with processes killed and restarted into a backlog (on a virtual clock), and through the
real HTTP client against the local worker."""

from __future__ import annotations

import asyncio
import random
import selectors
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from submit_flow import bench_chunks, max_in_window

from bytewax.speechmatics.connectors.speechmatics.throttle import (
    AimdRate,
    ClusterPlace,
    RateLimiter,
    SpacedSchedule,
    cluster_share,
    request_leaving,
)

T = TypeVar("T")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now




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


# ---- real send times (a virtual clock: no waiting, no dependence on the machine's load) --------------------------


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next timer instead of waiting for it."""

    def __init__(self) -> None:
        self.virtual = 1000.0
        loop = self

        class Jump(selectors.DefaultSelector):
            def select(self, timeout: float | None = None) -> list:
                if timeout is None:  # nothing scheduled and nothing ready: every task waits on another
                    raise RuntimeError("deadlock: no task can make progress")
                loop.virtual += max(0.0, timeout)
                return super().select(0)

        super().__init__(Jump())

    def time(self) -> float:
        return self.virtual


def on_virtual_clock(main: Callable[[VirtualClockLoop], Awaitable[T]]) -> T:
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(main(loop))
    finally:
        loop.close()


def test_rate_limiter_serves_waiters_in_order_at_the_spaced_rate() -> None:
    """On the virtual clock: the grants' spacing itself, not when a loaded machine got round to resuming a task."""

    async def main(loop: VirtualClockLoop) -> list[tuple[int, float]]:
        limiter = RateLimiter("post", AimdRate(50.0, clock=loop.time), margin=0.0, clock=loop.time)
        order: list[tuple[int, float]] = []

        async def one(i: int) -> None:
            await limiter.acquire()
            order.append((i, loop.time()))

        await asyncio.gather(*(one(i) for i in range(20)))
        return order

    order = on_virtual_clock(main)
    assert [i for i, _ in order] == list(range(20))
    gaps = [b - a for (_, a), (_, b) in zip(order, order[1:], strict=False)]
    assert min(gaps) >= 0.02 - 1e-9  # 1/50 s apart
    assert order[-1][1] - order[0][1] < 19 * 0.02 * 1.5  # and not much slower than the rate either


@dataclass
class Process:
    """One flow process's POST limiter in a simulation, with what it has sent."""

    limiter: RateLimiter
    sends: list[float] = field(default_factory=list)


def limiter_on(loop: VirtualClockLoop, rate: float, margin: float = 0.06) -> RateLimiter:
    limiter = RateLimiter("post", AimdRate(rate, clock=loop.time), margin, clock=loop.time)
    limiter.tracks_sends = True  # as SubmitService sets it once the HTTP client reports sends
    return limiter


async def one_request(loop: VirtualClockLoop, process: Process, delay: float, reaches_wire: bool = True) -> None:
    """What SubmitService._request does, with `delay` between the grant and the headers leaving (a cold
    connection, a busy interpreter); a request that fails before sending never reaches the wire."""
    grant = await process.limiter.acquire()
    with process.limiter.granted(grant):
        await asyncio.sleep(delay)
        if not reaches_wire:
            return
        await request_leaving()  # the trace hook's send gate, in the task that holds the grant
        process.sends.append(loop.time())
        await asyncio.sleep(0.05)  # the answer


def test_a_send_delayed_past_the_next_grant_does_not_meet_the_next_one() -> None:
    """The issue's bunching: a grant whose send is late must not leave together with the next grant's."""

    async def main(loop: VirtualClockLoop) -> list[float]:
        process = Process(limiter_on(loop, 5.0))
        delays = [0.19, 0.0, 0.25, 0.0, 0.0, 0.4, 0.0]
        await asyncio.gather(*(one_request(loop, process, d) for d in delays))
        return process.sends

    sends = on_virtual_clock(main)
    spacing = 1.06 / 5.0
    gaps = [b - a for a, b in zip(sends, sends[1:], strict=False)]
    assert len(sends) == 7 and min(gaps) >= spacing - 1e-9, gaps


class SwitchedRate:
    """A rate set from outside (a lender's plan dropping at its slot's start, a 429)."""

    def __init__(self, value: float) -> None:
        self.value = value

    def current(self) -> float:
        return self.value

    def on_throttled(self) -> bool:
        return False


def test_a_rate_lowered_between_grant_and_send_holds_the_send() -> None:
    """Granted at 5/s, the request leaves 0.3 s later, when its process's rate is 0 (it lent its share for the slot
    it now leaves in) and then 1/s: it leaves only when 1/s allows it, counted from the previous send."""

    async def main(loop: VirtualClockLoop) -> tuple[float, float, float]:
        rate = SwitchedRate(5.0)
        process = Process(RateLimiter("post", rate, 0.06, clock=loop.time))
        process.limiter.tracks_sends = True
        await one_request(loop, process, 0.0)
        grant = await process.limiter.acquire()
        granted_at = loop.time()
        rate.value = 0.0
        loop.call_later(0.8, setattr, rate, "value", 1.0)
        with process.limiter.granted(grant):
            await asyncio.sleep(0.3)
            await request_leaving()
            process.sends.append(loop.time())
        return process.sends[0], granted_at, process.sends[1]

    first, granted_at, second = on_virtual_clock(main)
    assert granted_at - first < 1.06 / 5.0 + 1e-9  # granted at the old rate
    assert second - first >= 1.06 - 1e-9  # sent at the new one


def test_requests_waiting_at_the_gate_together_leave_one_spacing_apart() -> None:
    """Sends reported twice (a client-side retry) and a request made while another waits: each passes the gate
    alone, one spacing after the one before."""

    async def main(loop: VirtualClockLoop) -> list[float]:
        limiter = limiter_on(loop, 10.0)
        sends: list[float] = []
        grant = await limiter.acquire()

        async def leave() -> None:
            await limiter.leaving(grant)
            sends.append(loop.time())

        with limiter.granted(grant):
            await asyncio.gather(*(leave() for _ in range(4)))
        return sends

    sends = on_virtual_clock(main)
    assert min(b - a for a, b in zip(sends, sends[1:], strict=False)) >= 0.106 - 1e-9


def test_a_limiter_starts_as_if_it_had_just_sent() -> None:
    """A process restarted into a backlog waits one spacing before its first POST (no burst on start)."""

    async def main(loop: VirtualClockLoop) -> tuple[float, float]:
        process = Process(limiter_on(loop, 5.0))
        created = loop.time()
        await one_request(loop, process, 0.0)
        return created, process.sends[0]

    created, first = on_virtual_clock(main)
    assert first - created >= 1.06 / 5.0 - 1e-9


def test_a_request_that_never_leaves_releases_the_next() -> None:
    """A request that fails before sending (connection refused) must not hold the route up for ever."""

    async def main(loop: VirtualClockLoop) -> list[float]:
        process = Process(limiter_on(loop, 10.0))
        await asyncio.gather(one_request(loop, process, 0.3, reaches_wire=False), one_request(loop, process, 0.0))
        return process.sends

    assert len(on_virtual_clock(main)) == 1


def test_without_send_reports_grants_are_spaced_and_not_serialised() -> None:
    """An HTTP client that cannot report sends: grant-time spacing, requests overlap as before."""

    async def main(loop: VirtualClockLoop) -> list[float]:
        process = Process(limiter_on(loop, 10.0))
        process.limiter.tracks_sends = False
        grants: list[float] = []

        async def hold() -> None:
            await process.limiter.acquire()
            grants.append(loop.time())
            await asyncio.sleep(5.0)  # a long request: the next grants do not wait for it

        await asyncio.gather(*(hold() for _ in range(5)))
        return grants

    grants = on_virtual_clock(main)
    assert grants[-1] - grants[0] < 1.0
    assert min(b - a for a, b in zip(grants, grants[1:], strict=False)) >= 0.106 - 1e-9


delays = st.one_of(st.floats(0.0, 0.003), st.floats(0.0, 1.0))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(limit=st.integers(2, 12), processes=st.integers(1, 3), backlog=st.integers(5, 40),
       grant_to_send=st.lists(delays, min_size=120, max_size=120),
       failing=st.sets(st.integers(0, 119), max_size=10),
       kill_after=st.floats(0.0, 3.0), restart_after=st.floats(0.0, 0.5), victim=st.integers(0, 2))
def test_no_window_holds_more_than_the_limit_with_late_sends_and_a_restart(
    limit: int, processes: int, backlog: int, grant_to_send: list[float], failing: set[int],
    kill_after: float, restart_after: float, victim: int,
) -> None:
    """A cluster sharing `limit`, each process with a backlog, sends delayed after their grants (some by more than
    the spacing), some requests failing before they leave, and one process killed at a random moment and
    restarted (its unsent requests are started again by the new process): the server never sees more than the
    limit in any 1 s window."""
    processes = min(processes, limit)
    victim %= processes
    draws = iter(range(10**9))

    def delay() -> float:
        return grant_to_send[next(draws) % len(grant_to_send)]

    async def main(loop: VirtualClockLoop) -> list[float]:
        def start(index: int, requests: int) -> tuple[Process, list[asyncio.Task]]:
            process = Process(limiter_on(loop, cluster_share(float(limit), ClusterPlace(processes, index))))
            tasks = [asyncio.ensure_future(one_request(loop, process, delay(), next(draws) % 120 not in failing))
                     for _ in range(requests)]
            return process, tasks

        cluster = [start(i, backlog) for i in range(processes)]
        await asyncio.sleep(kill_after)
        dead, tasks = cluster[victim]
        for task in tasks:  # SIGKILL: what has left has left, the rest never will
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(restart_after)
        cluster.append(start(victim, backlog - len(dead.sends)))
        await asyncio.gather(*(t for _, ts in cluster for t in ts), return_exceptions=True)
        return [t for process, _ in cluster for t in process.sends]

    sends = on_virtual_clock(main)
    assert max_in_window(sends) <= limit


# ---- the same through the real HTTP client and the local worker ---------------------------------------------------


@pytest.mark.slow
def test_delays_between_grant_and_send_never_put_more_than_the_limit_into_a_window(local_worker, tmp_path) -> None:
    """The SDK's POSTs, a quarter of them held back 0.2-0.5 s after their grant (inside the request, where a cold
    connection or a busy interpreter would hold them): the worker's POST arrivals stay within the limit."""
    from speechmatics.batch import AsyncClient

    from bytewax.speechmatics.connectors.speechmatics.journal import JobJournal
    from bytewax.speechmatics.connectors.speechmatics.service import (
        ChunkDone,
        ChunkFailed,
        SubmitRequest,
        SubmitService,
    )
    from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings

    worker = local_worker(engine="reference", parallel=16, api_key="late-key")
    rng = random.Random(18)

    class LateSender(AsyncClient):
        async def submit_job(self, audio: Any, **kwargs: Any) -> Any:
            if rng.random() < 0.25:
                await asyncio.sleep(rng.uniform(0.2, 0.5))
            return await super().submit_job(audio, **kwargs)

    settings = SubmitSettings(api_key="late-key", batch_url=worker.url, post_rate=10.0, get_rate=100.0,
                              journal_dir=str(tmp_path), poll_min=0.05, poll_max=0.2)
    service = SubmitService(settings, place=ClusterPlace(1, 0), journal=JobJournal(tmp_path),
                            client_factory=lambda: LateSender(api_key="late-key", url=worker.url)).start()
    chunks = bench_chunks(8, 6, 0.05, prefix="late")
    ended: dict[str, int] = {}
    try:
        for chunk in chunks:
            service.submit(SubmitRequest(chunk))
        deadline = time.monotonic() + 240
        while sum(ended.values()) < len(chunks) and time.monotonic() < deadline:
            for call in {c.span.call_id for c in chunks}:
                events = service.wait(call, timeout=0.1)
                ended[call] = ended.get(call, 0) + sum(isinstance(e, (ChunkDone, ChunkFailed)) for e in events)
    finally:
        service.close()
    assert sum(ended.values()) == len(chunks)
    arrivals = worker.admin.stats()["post_arrivals"]
    assert len(arrivals) == len(chunks)
    busiest = max_in_window(arrivals)
    print(f"\n{len(arrivals)} POSTs, a quarter sent 0.2-0.5 s after their grant: busiest 1 s window {busiest} "
          f"(limit 10)")
    assert busiest <= 10


def test_the_http_client_s_trace_hooks_hold_a_post_at_the_gate(reference_worker) -> None:  # noqa: ANN001
    """The SDK's POST through a session with `send_trace_config`, as the service installs it: granted, then the
    process's rate drops to 0 before the request leaves; the worker sees the POST only after the rate is back."""
    import io

    import aiohttp
    from speechmatics.batch import AsyncClient, JobConfig, JobType, TranscriptionConfig

    from bytewax.speechmatics.connectors.speechmatics.throttle import send_trace_config
    from bytewax.speechmatics.connectors.speechmatics.wav import chunk_wav

    wav = chunk_wav(bench_chunks(1, 1, 0.5, prefix="gate")[0])

    async def main() -> tuple[float, int]:
        client = AsyncClient(api_key=reference_worker.api_key or "gate-key", url=reference_worker.url)
        client._transport._session = aiohttp.ClientSession(trace_configs=[send_trace_config()])  # noqa: SLF001
        rate = SwitchedRate(50.0)
        limiter = RateLimiter("post", rate, 0.06)
        limiter.tracks_sends = True
        try:
            grant = await limiter.acquire()
            rate.value = 0.0
            reopened: list[float] = []
            asyncio.get_running_loop().call_later(1.0, lambda: (reopened.append(time.time()),
                                                                setattr(rate, "value", 50.0)))
            with limiter.granted(grant):
                await client.submit_job(io.BytesIO(wav), config=JobConfig(
                    type=JobType.TRANSCRIPTION, transcription_config=TranscriptionConfig(language="en")))
            return reopened[0], limiter.sends
        finally:
            await client.close()

    reopened, sends = asyncio.run(main())
    arrivals = reference_worker.admin.stats()["post_arrivals"]
    assert sends == 1 and len(arrivals) == 1
    assert arrivals[0] >= reopened
