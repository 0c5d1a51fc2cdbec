"""Holding the API's request limits exactly: cluster share, AIMD on 429, strict spacing, in-flight cap.

Why spacing and not a bursty token bucket: the limit is "N requests in any 1 s window" at the server.
A bucket with capacity > 1 lets N + capacity through in one window. We grant requests at least
(1 + margin) / rate seconds apart, so any N + 1 consecutive grants span more than 1 + margin seconds:
arrival jitter up to `margin` seconds cannot push N + 1 requests into one window at the server. Delays
between grant and send on our side (a cold connection, a busy interpreter, the journal's fsync) must not bunch
requests at the server either, so grants are spaced by real send times: one granted request at a time may be waiting
to leave, and the next grant waits until it has left and comes at least the spacing after that (`RateLimiter`).
A limiter starts as if it had just sent, so a process that (re)starts into a backlog does not burst.

The bound this gives, per process with an integer share r: consecutive sends are at least (1 + margin) / r - slack
apart, and since every grant is spaced from the one before it, r + 1 consecutive sends span at least
1 + margin - slack (the slack, `send_slack`, ignores the usual millisecond between grant and send); arrival jitter
up to margin - slack cannot put r + 1 of them into one window at the server.

Cluster share rule (processes do not talk to each other, so each must stay within a fixed share):
the cluster has P processes (the number of `-a` addresses Bytewax was started with, BYTEWAX_ADDRESSES,
the lines of BYTEWAX_HOSTFILE_PATH; BWSM_CLUSTER_PROCESSES overrides all, see `Settings.from_env`); process i gets
floor(N / P) requests per second, plus one if i < N mod P. The integer shares add up to exactly N, and an
integer share keeps the "any window" guarantee per process, so the sum holds it for the cluster. When
P > N the share would be 0: each process then gets N / P (averages hold, single windows may not).

Lending (POST only, a cluster of P <= N processes with a broker): the fixed share is a process's *reserved* share;
processes lend what they do not need per wall-clock slot through a Kafka topic, and a process's POST rate becomes
`PlannedRate` = the plan of `lending.Lending` (its reserved share, less what it lent, plus what it borrowed, each
slot's rate binding until a full window after the slot, so increases come a window after the decreases they rely
on) times the AIMD factor. The plan's rates are integers and add up to at most N in any window (lending.py), and
the spacing below turns an integer rate into "at most that many in any 1 s window", so the cluster bound stands.
A limiter whose rate is 0 (lent out) or changes while it waits reads the rate again every RECHECK_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class ClusterPlace:
    """How many Bytewax processes share the API limits, and which one this is."""

    processes: int
    index: int


def _argv_value(argv: Sequence[str], short: str, long: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg in (short, long) and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(long + "="):
            return arg.split("=", 1)[1]
    return None


def _count_addresses(value: str) -> int:
    return len([a for a in value.split(";") if a.strip()])


def cluster_place(argv: Sequence[str], env: Mapping[str, str]) -> ClusterPlace:
    """Learn the cluster size and this process's index from how `bytewax.run` was started (see module doc); called
    by `Settings.from_env` with the process's command line and environment."""
    index_raw = _argv_value(argv, "-i", "--process-id") or env.get("BYTEWAX_PROCESS_ID")
    if index_raw is None and "BYTEWAX_POD_NAME" in env and "BYTEWAX_STATEFULSET_NAME" in env:
        index_raw = env["BYTEWAX_POD_NAME"].replace(env["BYTEWAX_STATEFULSET_NAME"] + "-", "")
    index = int(index_raw) if index_raw and index_raw.strip().isdigit() else 0
    processes = 1
    addresses = _argv_value(argv, "-a", "--addresses") or env.get("BYTEWAX_ADDRESSES")
    if addresses:
        processes = _count_addresses(addresses)
    elif env.get("BYTEWAX_HOSTFILE_PATH") and os.path.exists(env["BYTEWAX_HOSTFILE_PATH"]):
        with open(env["BYTEWAX_HOSTFILE_PATH"]) as hostfile:
            processes = len([line for line in hostfile if line.strip()])
    return ClusterPlace(processes=max(1, processes), index=index)


def cluster_share(limit: float, place: ClusterPlace) -> float:
    """This process's requests per second: the integer share rule of the module doc."""
    whole = int(limit)
    if place.processes <= 1:
        return limit
    if whole < place.processes:
        return limit / place.processes
    base, extra = divmod(whole, place.processes)
    return float(base + (1 if place.index < extra else 0))


#: Longest sleep of a waiting request before the rate is read again (a loan may raise it meanwhile).
RECHECK_SECONDS = 0.05


class Rate(Protocol):
    """What a RateLimiter asks of its rate: the current requests per second, and a 429 to react to."""

    def current(self) -> float: ...

    def on_throttled(self) -> bool: ...


class AimdRate:
    """Additive increase, multiplicative decrease of a request rate, driven by 429 answers.

    A 429 multiplies the rate by `decrease` (at most once per `cooldown` seconds, so a burst of 429s
    from requests already on the wire counts as one signal), never below `floor * ceiling`. Without
    429s the rate climbs back by `recovery * ceiling` per second up to the ceiling.
    """

    def __init__(self, ceiling: float, *, decrease: float = 0.7, floor: float = 0.25, recovery: float = 0.05,
                 cooldown: float = 1.0, clock: Clock = time.monotonic) -> None:
        self.ceiling = ceiling
        self.decrease = decrease
        self.minimum = max(ceiling * floor, 1e-3)
        self.recovery = recovery * ceiling
        self.cooldown = cooldown
        self._clock = clock
        self._rate = ceiling
        self._since = clock()
        self._last_cut = float("-inf")
        self._lock = threading.Lock()

    def current(self) -> float:
        with self._lock:
            return self._current(self._clock())

    def _current(self, now: float) -> float:
        return min(self.ceiling, self._rate + self.recovery * max(0.0, now - self._since))

    def on_throttled(self) -> bool:
        """Record a 429; return True if it lowered the rate (False inside the cooldown)."""
        with self._lock:
            now = self._clock()
            if now - self._last_cut < self.cooldown:
                return False
            self._rate = max(self.minimum, self._current(now) * self.decrease)
            self._since = now
            self._last_cut = now
            return True


class SpacedSchedule:
    """Pure grant arithmetic: the earliest time the next request may start, given the current rate."""

    def __init__(self, margin: float, start: float | None = None) -> None:
        self.margin = margin
        self.last: float | None = start  # a start time: as if a request had left then

    def next_slot(self, now: float, rate: float) -> float:
        """When the next grant may happen (>= now); call `take` with it once granted."""
        if self.last is None:
            return now
        return max(now, self.last + (1.0 + self.margin) / rate)

    def take(self, slot: float) -> None:
        self.last = slot

    def observe(self, sent_at: float, slack: float = 0.0) -> None:
        """The granted request really left at `sent_at`: space the next one from then if that was later.

        Delays up to `slack` are ignored (they are within the margin), so the usual millisecond between grant and
        send does not slow every request down.
        """
        moved = sent_at - slack
        self.last = moved if self.last is None else max(self.last, moved)


#: The grant of the request the current asyncio task is making (see `RateLimiter.granted` and `request_sent`).
_CURRENT_GRANT: ContextVar[tuple[RateLimiter, int] | None] = ContextVar("bwsm_current_grant", default=None)


def request_sent() -> None:
    """Called from the HTTP client's trace hook when a request's headers go on the wire: tells the limiter whose
    grant the current task holds (a request made outside a grant is ignored)."""
    current = _CURRENT_GRANT.get()
    if current is not None:
        current[0].sent(current[1])


class PlannedRate:
    """A rate whose ceiling changes over time (the cluster's lending plan, `lending.Lending.rate`), times an AIMD
    factor in [floor, 1] for 429s: AimdRate(c) is c times AimdRate(1), so with a constant plan this is AimdRate."""

    def __init__(self, plan: Callable[[], float], factor: AimdRate) -> None:
        self.plan = plan
        self.factor = factor

    def current(self) -> float:
        return self.plan() * self.factor.current()

    def on_throttled(self) -> bool:
        return self.factor.on_throttled()


class RateLimiter:
    """An asyncio limiter for one route (POST or GET): FIFO waiters, strict spacing from real send times, AIMD rate.

    Use: `grant = await limiter.acquire()`, then make the request inside `with limiter.granted(grant):` so that the
    trace hook (`request_sent`) and the end of the request reach the limiter. With `tracks_sends` off (the HTTP
    client cannot report sends), grants are spaced from grant times only.
    """

    def __init__(self, name: str, rate: Rate, margin: float, clock: Clock = time.monotonic,
                 send_slack: float = 0.01) -> None:
        self.name = name
        self.send_slack = send_slack
        self.rate = rate
        self.tracks_sends = False  # set once sends are reported (SubmitService._install_send_clock)
        self._clock = clock
        # As if a request had just left: a process restarted into a backlog waits one spacing before its first
        # grant, so its first requests cannot meet the last ones of the process it replaces.
        self._schedule = SpacedSchedule(margin, start=clock())
        self._fifo: asyncio.Lock | None = None
        self._left: asyncio.Event | None = None  # set while no granted request is waiting to leave
        self._granted = 0  # serial number of the last grant
        self._unsent: int | None = None  # the grant whose request has not been seen leaving yet

    async def acquire(self) -> int:
        """Wait for this request's slot; waiters are served in arrival order. Returns the grant's number."""
        if self._fifo is None or self._left is None:
            self._fifo, self._left = asyncio.Lock(), asyncio.Event()
            self._left.set()
        async with self._fifo:
            while True:
                if self._unsent is not None:
                    # The previous request has not left yet: when it does is the time to space from.
                    await self._left.wait()
                    continue
                now = self._clock()
                rate = self.rate.current()
                if rate <= 0:  # a process lending all of its share (or just started): ask again shortly
                    await asyncio.sleep(RECHECK_SECONDS)
                    continue
                slot = self._schedule.next_slot(now, rate)
                if slot <= now:
                    self._schedule.take(now)
                    self._granted += 1
                    if self.tracks_sends:
                        self._unsent = self._granted
                        self._left.clear()
                    return self._granted
                # Re-check after sleeping: a 429 may have lowered the rate, a loan raised it.
                await asyncio.sleep(min(slot - now, RECHECK_SECONDS))

    @contextlib.contextmanager
    def granted(self, grant: int) -> Iterator[None]:
        """Make the granted request inside this block: its send is reported by `request_sent` (same task), and
        leaving the block releases the grant (see `release`)."""
        token = _CURRENT_GRANT.set((self, grant))
        try:
            yield
        finally:
            _CURRENT_GRANT.reset(token)
            self.release(grant)

    def sent(self, grant: int) -> None:
        """The granted request's headers are on the wire now: the next grant is spaced from this moment.

        Delays up to `send_slack` are within the margin and ignored, so the usual millisecond between grant and
        send does not slow every request down. A send reported twice (a client-side retry) moves the time on again.
        """
        self._schedule.observe(self._clock(), self.send_slack)
        if grant == self._unsent:
            self._settle()

    def release(self, grant: int) -> None:
        """The request of `grant` is over (answered, failed or cancelled). If it was never seen leaving (it failed
        before sending), it counts as sent now: later than the truth, never earlier."""
        if grant == self._unsent:
            self.sent(grant)

    def _settle(self) -> None:
        self._unsent = None
        if self._left is not None:
            self._left.set()

    def throttled(self) -> bool:
        """Tell the limiter the server answered 429; returns True if the rate was lowered."""
        return self.rate.on_throttled()
