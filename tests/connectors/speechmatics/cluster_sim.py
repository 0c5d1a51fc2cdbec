"""A cluster of submission processes on a virtual clock: the POST path of each process as the service runs it (the
lending link's decisions, `PlannedRate`, `RateLimiter`'s grants and send gate, the shipped settings), with what
production does to it: backlogs skewed between processes and new work arriving at idle ones, requests leaving up to
a second after their grant (cold connections, TLS, pool waits, a busy interpreter), arrival jitter at the API, lost
and late lending reports, a report decided late or not at all, wall clocks apart by up to the guard, and a process
killed and restarted. The witness is the API: every POST's arrival time.

Only the Kafka transport of the reports is simulated (`LimiterLink.decide` and `.observe` are the real ones; the
topic is a list delivered with loss and delay); the real transport has a test of its own against the broker.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from test_throttle import VirtualClockLoop, on_virtual_clock

from bytewax.speechmatics.connectors.kafka.config import KafkaSettings
from bytewax.speechmatics.connectors.kafka.limiter import LEAD_SECONDS, REWIND_SECONDS, LimiterLink
from bytewax.speechmatics.connectors.speechmatics.lending import Report
from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings
from bytewax.speechmatics.connectors.speechmatics.throttle import (
    AimdRate,
    ClusterPlace,
    PlannedRate,
    RateLimiter,
    cluster_share,
    request_leaving,
)

#: The shipped defaults (margin 0.06, clock guard 0.1, slot 0.5): what the guarantee is claimed for.
SHIPPED = SubmitSettings()


@dataclass
class Cluster:
    """What happens to the cluster (all times in virtual seconds from the start)."""

    limit: int
    backlogs: list[int]  # requests each process has at the start (its length is the number of processes)
    arrivals: list[list[float]] = field(default_factory=list)  # later requests, per process
    lending: bool = True  # False: fixed shares (BWSM_RATE_LENDING=0)
    #: How a process decides its reports: "demand" (the link's own rule, from its backlog and arrivals) or "any"
    #: (random commitments whatever its demand: a demand estimate that is wrong, e.g. it expects a waiting request
    #: to leave before the slot and it leaves a second late); process 0, when it has a backlog, keeps the link's
    #: rule (it borrows what the others lend). "switch": the others keep their share (and post at it) until
    #: `switch_at`, then lend all of it, the moment a late send of theirs lands in a loan. The bound must hold for
    #: any commitments.
    policy: str = "demand"
    switch_at: float = 5.0
    late: float = 1.0  # the longest time between a grant and its request leaving
    cold: float = 0.2  # the chance that a request needs a new connection (it then leaves 0.2 s to `late` late)
    loss: float = 0.2  # the chance that a report never reaches a given peer
    late_reports: float = 0.5  # the chance that a report reaches a peer late (up to 0.3 s, or up to 3 s)
    late_decisions: float = 0.35  # a third of the reports are decided up to this late (the link thread was busy)
    delays: list[list[float]] = field(default_factory=list)  # per process: its first requests' grant-to-send delays
    jitter: bool = True  # the time from the send to the API varies by up to the margin (else constant)
    skews: list[float] = field(default_factory=list)  # each process's wall clock minus the true time
    restart: tuple[int, float, float] | None = None  # (process, killed at, down for)
    seed: int = 0
    horizon: float = 600.0  # stop then even if requests are left (a lender that lends for ever never posts)


@dataclass
class Outcome:
    arrivals: list[float]  # when each POST reached the API
    by_process: list[int]  # POSTs each process sent

    def busiest(self, window: float = 1.0) -> int:
        """The most POSTs the API saw in any half-open window of `window` seconds."""
        times, best, j = sorted(self.arrivals), 0, 0
        for i, t in enumerate(times):
            while times[j] <= t - window:
                j += 1
            best = max(best, i - j + 1)
        return best

    def use(self, limit: int) -> float:
        """POSTs per second from the first to the last, as a fraction of the limit: the use of the limit."""
        times = sorted(self.arrivals)
        return (len(times) - 1) / (times[-1] - times[0]) / limit if len(times) > 1 else 0.0


class _Run:
    """One incarnation of one process: its link, limiter, transport and requests."""

    def __init__(self, sim: _Sim, index: int, requests: int) -> None:
        self.sim, self.index = sim, index
        loop = sim.loop
        self.waiting = 0  # requests handed in whose job is not known yet (the lending demand)
        self.unsent = 0  # requests that have not left yet
        self.handed_in = 0
        self.warm = False
        self.forced = list(sim.cluster.delays[index]) if index < len(sim.cluster.delays) else []
        self.tasks: list[asyncio.Task] = []
        c = sim.cluster
        settings = SubmitSettings(post_rate=float(c.limit), cluster_processes=sim.processes, process_index=index,
                                  kafka=KafkaSettings("simulated:0"), cluster_id="sim")
        place = ClusterPlace(sim.processes, index)
        if c.lending:
            self.link: LimiterLink | None = LimiterLink.from_settings(settings, place, self.demand, clock=self.clock)
            rate = PlannedRate(self.link, AimdRate(1.0, clock=loop.time))
        else:
            self.link = None
            rate = AimdRate(cluster_share(float(c.limit), place), clock=loop.time)
        self.limiter = RateLimiter("post", rate, settings.rate_margin, clock=loop.time)
        self.limiter.tracks_sends = True  # as the service does once the HTTP client's trace hooks are in
        if self.link is not None:
            self.tasks.append(loop.create_task(self.transport()))
            for at, report in sim.topic:  # a starting consumer reads the last seconds of the topic
                if at >= loop.time() - REWIND_SECONDS and sim.rng.random() >= c.loss:
                    self.link.observe(report)
        for _ in range(requests):
            self.hand_in()

    def clock(self) -> float:
        return self.sim.wall + self.sim.loop.time() + self.sim.skews[self.index]

    def demand(self) -> tuple[int, int]:
        return self.waiting, self.handed_in

    def hand_in(self) -> None:
        self.waiting += 1
        self.unsent += 1
        self.handed_in += 1
        self.tasks.append(self.sim.loop.create_task(self.post()))

    async def post(self) -> None:
        """What SubmitService._request does for one POST, with the time the request takes to reach the wire."""
        sim, rng = self.sim, self.sim.rng
        grant = await self.limiter.acquire()
        if self.forced:
            delay = self.forced.pop(0)
        elif not self.warm or rng.random() < sim.cluster.cold:
            delay = rng.uniform(0.2, sim.cluster.late)  # a new connection: TCP, TLS, a pool wait (a new process
            self.warm = True  # has none)
        else:
            delay = rng.choice((0.0005, 0.002, rng.uniform(0.0, 0.05)))  # a warm one, or a busy interpreter
        with self.limiter.granted(grant):
            await asyncio.sleep(delay)
            await request_leaving()  # the trace hook, right before the first bytes go out
            sim.sent(self.index)
            self.unsent -= 1
            await asyncio.sleep(rng.choice((0.005, rng.uniform(0.01, 0.4))))  # the answer: the job id
        self.waiting -= 1

    async def transport(self) -> None:
        """The link thread's loop: decide each slot's report LEAD_SECONDS before it (a little late at times, or
        not at all), publish it; the topic delivers it to each peer, or not, soon or late."""
        assert self.link is not None
        sim, rng, link = self.sim, self.sim.rng, self.link
        lending = link.lending
        slot = lending.first_slot
        while True:
            busy = rng.choice((0.0, 0.0, rng.uniform(0.0, sim.cluster.late_decisions)))
            decide_at = lending.start_of(slot) - LEAD_SECONDS + busy
            await asyncio.sleep(max(0.0, decide_at - self.clock()))
            lender = self.index > 0 or not sim.cluster.backlogs[0]
            if sim.cluster.policy == "switch" and lender:
                keep = lending.start_of(slot) - self.clock() + sim.loop.time() - sim.started < sim.cluster.switch_at
                report = lending.record(slot, lending.share if keep else 0, 0, self.clock())
            elif sim.cluster.policy == "any" and lender:
                share = lending.share
                commit = rng.choice((0, share, rng.randint(0, share)))
                want = rng.choice((sim.cluster.limit, rng.randint(0, sim.cluster.limit))) if commit == share else 0
                report = lending.record(slot, commit, want, self.clock())
            else:
                report = link.decide(slot, self.clock())
            if report is not None:
                sim.publish(self, report)
            lending.forget_before(self.clock())
            slot = max(slot + 1, lending.slot_of(self.clock()) + 1)

    def kill(self) -> int:
        """SIGKILL: what has left has left, the rest never will; returns the requests that had not left."""
        for task in self.tasks:
            task.cancel()
        return self.unsent


class _Sim:
    def __init__(self, loop: VirtualClockLoop, cluster: Cluster) -> None:
        self.loop, self.cluster = loop, cluster
        self.processes = len(cluster.backlogs)
        self.rng = random.Random(cluster.seed)
        self.started = loop.time()
        self.wall = 1_000_000.0 - loop.time()  # the wall clock is far from 0 (slots are wall-clock based)
        self.skews = (list(cluster.skews) + [0.0] * self.processes)[:self.processes]
        self.topic: list[tuple[float, Report]] = []
        self.arrivals: list[float] = []
        self.by_process = [0] * self.processes
        self.runs: list[_Run | None] = [None] * self.processes
        self.expected = sum(cluster.backlogs) + sum(len(a) for a in cluster.arrivals)

    def sent(self, index: int) -> None:
        # What the gate cannot see: the time to the API varies by up to the margin.
        self.arrivals.append(self.loop.time() + (self.rng.uniform(0.0, SHIPPED.rate_margin) if self.cluster.jitter
                                                 else 0.0))
        self.by_process[index] += 1

    def publish(self, sender: _Run, report: Report) -> None:
        self.topic.append((self.loop.time(), report))
        for run in self.runs:
            if run is None or run is sender or run.link is None or self.rng.random() < self.cluster.loss:
                continue
            late = 0.005
            if self.rng.random() < self.cluster.late_reports:
                late = self.rng.choice((self.rng.uniform(0.0, 0.3), self.rng.uniform(0.0, 3.0)))
            self.loop.call_later(late, self.deliver, run, report)

    def deliver(self, run: _Run, report: Report) -> None:
        if self.runs[run.index] is run and run.link is not None:  # a killed run reads nothing
            run.link.observe(report)

    async def arrive(self, index: int, at: float) -> None:
        await asyncio.sleep(at)
        while self.runs[index] is None:  # down: the request waits in Kafka for the restarted process
            await asyncio.sleep(0.05)
        run = self.runs[index]
        assert run is not None
        run.hand_in()

    async def main(self) -> Outcome:
        c = self.cluster
        for i, backlog in enumerate(c.backlogs):
            self.runs[i] = _Run(self, i, backlog)
        helpers = [self.loop.create_task(self.arrive(i, at)) for i, times in enumerate(c.arrivals) for at in times]
        if c.restart is not None:
            victim, at, down = c.restart
            await asyncio.sleep(at)
            run = self.runs[victim]
            assert run is not None
            left = run.kill()
            self.runs[victim] = None
            await asyncio.sleep(down)
            self.runs[victim] = _Run(self, victim, left)
        while len(self.arrivals) < self.expected and self.loop.time() - self.started < c.horizon:
            await asyncio.sleep(0.25)
        for run in self.runs:
            if run is not None:
                run.kill()
        for task in helpers:
            task.cancel()
        await asyncio.sleep(0.5)  # let the cancelled tasks finish
        return Outcome(self.arrivals, self.by_process)


def simulate(cluster: Cluster) -> Outcome:
    """Run the cluster until every request has reached the API."""
    return on_virtual_clock(lambda loop: _Sim(loop, cluster).main())


def trickle(rng: random.Random, rate: float, until: float) -> list[float]:
    """Request times of a process with light traffic: about `rate` per second at random, until `until`."""
    times, t = [], rng.expovariate(rate)
    while t < until:
        times.append(t)
        t += rng.expovariate(rate)
    return times

