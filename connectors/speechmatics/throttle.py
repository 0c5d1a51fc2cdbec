"""Holding the API's request limits exactly: cluster share, AIMD on 429, strict spacing, in-flight cap.

Why spacing and not a bursty token bucket: the limit is "N requests in any 1 s window" at the server.
A bucket with capacity > 1 lets N + capacity through in one window. Requests *leave* at least (1 + margin) / rate
seconds apart, so any N + 1 consecutive requests leave over more than 1 + margin seconds: arrival jitter up to
`margin` seconds cannot push N + 1 of them into one window at the server.

Why the send and not the grant: a request can leave long after its grant (an expired keep-alive connection, TLS, a
pool wait, a busy interpreter: 0.2-1 s and more), and the rate may have dropped meanwhile (a lender's commitment
for the slot it now leaves in, a 429). So the spacing is checked at the *send gate* (`RateLimiter.leaving`), which
the HTTP client's trace hooks await right before a request's first bytes go out (`send_trace_config`): a request
leaves only when the spacing at the rate in force at that moment has passed since the previous one left, and only
then counts as sent. One granted request at a time may be on its way to the gate (the next grant waits until it
has left or failed); a request that fails before leaving counts as sent when it fails. A limiter starts as if it
had just sent, so a process that (re)starts into a backlog does not burst.

The bound this gives, per process: consecutive sends are at least (1 + margin) / r apart, with r the rate in force
when the later one leaves. If the rate stays <= r over a stretch of 1 + margin seconds, at most r requests leave in
it (the second to the (r+1)-th would each pass the gate inside the stretch at rate <= r, so span >= 1 + margin).
What the gate cannot see: the time from passing the gate to the server counting the request (the synchronous write
after the hook, a GIL switch of the interpreter, the network). Its *variation* must stay within `margin`.

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
the gate turns a rate in force at send time into "at most that many sends in the window", so the cluster bound
stands for sends however late. Lending is only used when sends are gated (`PlannedRate.sends_tracked`): without
the gate a late send would count against the rate of its grant. A limiter whose rate is 0 (lent out) or changes
while it waits reads the rate again every RECHECK_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class ClusterPlace:
    """How many Bytewax processes share the API limits, and which one this is."""

    processes: int
    index: int


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
    """Pure spacing arithmetic: when the next request may leave, given when the last one did and the current rate."""

    def __init__(self, margin: float, start: float | None = None) -> None:
        self.margin = margin
        self.last: float | None = start  # when the last request left (as if one had left then)

    def next_slot(self, now: float, rate: float) -> float:
        """When the next request may leave (>= now); call `take` with the time it does."""
        if self.last is None:
            return now
        return max(now, self.last + (1.0 + self.margin) / rate)

    def take(self, slot: float) -> None:
        self.last = slot if self.last is None else max(self.last, slot)


#: The grant of the request the current asyncio task is making (see `RateLimiter.granted` and `request_leaving`).
_CURRENT_GRANT: ContextVar[tuple[RateLimiter, int] | None] = ContextVar("bwsm_current_grant", default=None)


async def request_leaving() -> None:
    """The send gate: await it just before the current task's granted request puts its first byte on the wire.

    It returns when sending now keeps the route's spacing at the rate in force now (see `RateLimiter.leaving`); a
    request made outside a grant passes at once. Called by the HTTP client's trace hooks (`send_trace_config`)."""
    current = _CURRENT_GRANT.get()
    if current is not None:
        await current[0].leaving(current[1])


def send_trace_config() -> aiohttp.TraceConfig:
    """An aiohttp trace config that gates every request at the moment its first bytes go out (`request_leaving`).

    aiohttp buffers a request's headers and writes them with the first body chunk, in a task of its own: a request
    with a body leaves at its first `on_request_chunk_sent` (awaited right before that write), one without at
    `on_request_headers_sent` (its headers are written right after). Both hooks run in a copy of the requesting
    task's context, so they find its grant.
    """

    async def on_headers(_session: Any, context: Any, params: aiohttp.TraceRequestHeadersSentParams) -> None:
        headers = params.headers
        context.bwsm_body_pending = headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in headers
        if not context.bwsm_body_pending:
            await request_leaving()

    async def on_chunk(_session: Any, context: Any, _params: Any) -> None:
        if getattr(context, "bwsm_body_pending", False):
            context.bwsm_body_pending = False
            await request_leaving()

    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(on_headers)
    trace.on_request_chunk_sent.append(on_chunk)
    return trace


class Plan(Protocol):
    """The cluster's lending plan as a rate limiter sees it (`connectors/kafka/limiter.LimiterLink`)."""

    def rate(self) -> float: ...

    def sends_tracked(self, tracked: bool) -> None: ...


class PlannedRate:
    """A rate whose ceiling changes over time (the cluster's lending plan, `lending.Lending.rate`), times an AIMD
    factor in [floor, 1] for 429s: AimdRate(c) is c times AimdRate(1), so with a constant plan this is AimdRate.

    The plan is told whether the limiter gates sends (`sends_tracked`): lending is sound only then, so a plan whose
    requests are not gated keeps its reserved share (lends and borrows nothing)."""

    def __init__(self, plan: Plan, factor: AimdRate) -> None:
        self.plan = plan
        self.factor = factor

    def current(self) -> float:
        return self.plan.rate() * self.factor.current()

    def on_throttled(self) -> bool:
        return self.factor.on_throttled()

    def sends_tracked(self, tracked: bool) -> None:
        self.plan.sends_tracked(tracked)


class RateLimiter:
    """An asyncio limiter for one route (POST or GET): FIFO grants, strict spacing of real send times, AIMD rate.

    Use: `grant = await limiter.acquire()`, then make the request inside `with limiter.granted(grant):`, with the
    HTTP client's trace hooks awaiting `request_leaving()` right before the request's first bytes go out (the send
    gate, `leaving`). With `tracks_sends` off (the HTTP client cannot gate sends) grants are spaced instead, and a
    request that leaves late can bunch with the next one.
    """

    def __init__(self, name: str, rate: Rate, margin: float, clock: Clock = time.monotonic,
                 lead: float = 0.01) -> None:
        self.name = name
        self.lead = lead
        self.rate = rate
        self.sends = 0  # requests that passed the send gate
        self._tracks_sends = False
        self._clock = clock
        # As if a request had just left: a process restarted into a backlog waits one spacing before its first
        # request, so its first requests cannot meet the last ones of the process it replaces.
        self._schedule = SpacedSchedule(margin, start=clock())
        self._fifo: asyncio.Lock | None = None
        self._left: asyncio.Event | None = None  # set while no granted request is waiting to leave
        self._granted = 0  # serial number of the last grant
        self._unsent: int | None = None  # the grant whose request has not passed the send gate yet

    @property
    def tracks_sends(self) -> bool:
        """Whether sends pass the gate (set once the HTTP client's trace hooks are installed)."""
        return self._tracks_sends

    @tracks_sends.setter
    def tracks_sends(self, tracked: bool) -> None:
        self._tracks_sends = tracked
        tell = getattr(self.rate, "sends_tracked", None)
        if tell is not None:
            tell(tracked)

    async def acquire(self) -> int:
        """Wait for this request's turn; waiters are served in arrival order. Returns the grant's number.

        With tracked sends a grant waits for the previous request to leave and comes up to `lead` seconds before
        the spacing allows the next send (the usual millisecond between grant and send then costs no rate); the
        send gate holds the request until the spacing is really due.
        """
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
                ahead = self.lead if self._tracks_sends else 0.0
                due = self._schedule.next_slot(now + ahead, rate) - ahead
                if due <= now:
                    self._granted += 1
                    if self._tracks_sends:
                        self._unsent = self._granted
                        self._left.clear()
                    else:
                        self._schedule.take(now)
                    return self._granted
                # Re-check after sleeping: a 429 may have lowered the rate, a loan raised it.
                await asyncio.sleep(min(due - now, RECHECK_SECONDS))

    @contextlib.contextmanager
    def granted(self, grant: int) -> Iterator[None]:
        """Make the granted request inside this block: its send gate is `request_leaving` (same task or a task it
        starts), and leaving the block releases the grant (see `release`)."""
        token = _CURRENT_GRANT.set((self, grant))
        try:
            yield
        finally:
            _CURRENT_GRANT.reset(token)
            self.release(grant)

    async def leaving(self, grant: int) -> None:
        """The send gate: return when a request may leave now, and count it as left now.

        A request may leave when the spacing at the rate in force *now* has passed since the last request left. So
        however late a request leaves after its grant (a cold connection, TLS, a pool wait, a busy interpreter), it
        counts against the rate at the moment it leaves: a rate lowered meanwhile (a lender's commitment for the
        slot it now leaves in, a 429) holds it until the lower rate allows it. The check and the count are one step
        of the event loop, so requests waiting at the gate together still leave one spacing apart. A request sent
        twice (a client-side retry) passes the gate again.
        """
        while True:
            now = self._clock()
            rate = self.rate.current()
            if rate > 0:
                due = self._schedule.next_slot(now, rate)
                if due <= now:
                    self._schedule.take(now)
                    self.sends += 1
                    if grant == self._unsent:
                        self._settle()
                    return
                wait = due - now
            else:
                wait = RECHECK_SECONDS
            await asyncio.sleep(min(wait, RECHECK_SECONDS))

    def release(self, grant: int) -> None:
        """The request of `grant` is over (answered, failed or cancelled). If it never passed the send gate (it failed
        before sending), it counts as sent now: later than the truth, never earlier."""
        if grant == self._unsent:
            self._schedule.take(self._clock())
            self._settle()

    def _settle(self) -> None:
        self._unsent = None
        if self._left is not None:
            self._left.set()

    def throttled(self) -> bool:
        """Tell the limiter the server answered 429; returns True if the rate was lowered."""
        return self.rate.on_throttled()
