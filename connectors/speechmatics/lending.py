"""Lending the cluster's POST limit: pure arithmetic (no I/O, no clock of its own) for `throttle.py`'s share rule.

Why: each process keeps a fixed integer *reserved* share of the limit N (`throttle.cluster_share`), which alone keeps
"never more than N in any 1 s window" but wastes the share of a process without work. Here processes lend what they
do not need, on wall-clock slots of `slot` seconds, through reports they publish (the transport is
`connectors/kafka/limiter.py`; here only what the reports mean):

- Before slot k starts, process i records and publishes one `Report`: a *commitment* `commit` <= its share s_i
  (it will post at most that many per second in slot k, whether or not anyone receives the report) and, when it keeps
  its whole share, how many more per second it `want`s. A lender commits commit < s_i and lends s_i - commit.
- A borrower's extra in slot k is its part of the capacity lent in the reports for slot k that it has seen, divided
  by a fixed round-robin (`extras`). A peer whose report it has not seen counts as a lender of nothing and a
  borrower of unlimited demand, so what it has not seen can only shrink its extra: for every view,
  extra(view) <= extra(all recorded reports), and those add up to at most the capacity lent. So the targets
  commit_i + extra_i of one slot add up to at most N, whatever reports were lost or late.
- Decreases apply at the slot's start at the latest, increases only `hold` seconds (a full window: 1 s + margin +
  clock guard) after it: a slot's target keeps binding until `hold` after the slot's end (`Lending.rate`: the
  minimum over the slots that bind at t). A lender's own lowered commitment applies from the moment it is
  recorded (about 0.3 s before its slot), so it grants nothing in the last moments before the slot that would
  have to wait at the send gate. Any window of length <= hold starting in slot k lies where slot k binds, so each
  process's rate in it is at most its target for k, and the cluster's sum at most N. The send gate of
  `throttle.RateLimiter` counts a request against the rate in force when it *leaves*, however late after its
  grant (an integer rate r in force over a window lets at most r requests leave in it), so that is the
  "any 1 s window" bound for the cluster, for arrival jitter up to the margin and clocks within the guard of each
  other.
- Reports name their cluster (`cluster`, BWSM_CLUSTER_ID or derived from the flow's topics): two deployments
  sharing a broker and the topic never take each other's loans, since a report of another cluster is ignored
  (counted as missing).
- A (re)started process cannot know what an earlier incarnation of it committed for the current and the next slot,
  so it uses nothing in those (rate 0 until they stop binding: at most 2 slots + hold after the start), and
  publishes from the slot after.
- Without reports (no broker, no topic) every process stays on its reserved share: safe, and the fixed-share rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Demand of a peer whose report is missing: more than any pool.
UNBOUNDED = 1 << 62


@dataclass(frozen=True, slots=True)
class Report:
    """What process `index` binds itself to for `slot` (see module doc). `cluster` names the deployment and
    `limit`/`processes` the cluster's rule: a report of another cluster or rule is ignored (counted as missing)."""

    index: int
    slot: int
    commit: int
    want: int
    limit: int
    processes: int
    cluster: str = ""

    def to_json(self) -> dict[str, int | str]:
        return {"i": self.index, "k": self.slot, "c": self.commit, "w": self.want, "n": self.limit,
                "p": self.processes, "x": self.cluster}

    @classmethod
    def from_json(cls, doc: dict) -> Report:
        values = [doc[name] for name in ("i", "k", "c", "w", "n", "p")]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise ValueError("report fields must be non-negative integers")
        cluster = doc.get("x", "")  # a report without one (an older version) matches only an unnamed cluster
        if not isinstance(cluster, str):
            raise ValueError("a report's cluster must be a string")
        return cls(*values, cluster)


def reserved_shares(limit: int, processes: int) -> list[int]:
    """The integer shares of `throttle.cluster_share`: floor(N / P), plus one for the first N mod P processes."""
    base, extra = divmod(limit, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


def extras(slot: int, shares: list[int], seen: dict[int, Report]) -> list[int]:
    """Each process's extra rate in `slot` from the reports in `seen` (index -> report), by round-robin.

    Pool: what seen lenders lend. Demands: a seen borrower's `want`, 0 for a seen lender, UNBOUNDED for a missing
    peer. One unit at a time goes to each process still wanting, in index order rotated by the slot (fair over
    time, and the same order in every view). A smaller pool or a larger demand of another never gives anyone more,
    which is why a partial view is safe (module doc).
    """
    processes = len(shares)
    pool = sum(shares[j] - r.commit for j, r in seen.items() if r.commit < shares[j])
    wants = [UNBOUNDED] * processes
    for j, r in seen.items():
        wants[j] = r.want if r.commit >= shares[j] else 0
    got = [0] * processes
    order = [(slot + n) % processes for n in range(processes)]
    while pool > 0:
        hungry = [j for j in order if got[j] < wants[j]]
        if not hungry:
            break
        rounds = min(pool // len(hungry), min(wants[j] - got[j] for j in hungry))
        if rounds > 0:  # whole rounds at once (the same as one unit at a time)
            for j in hungry:
                got[j] += rounds
            pool -= rounds * len(hungry)
            continue
        for j in hungry[:pool]:
            got[j] += 1
        pool = 0
    return got


def decide(share: int, waiting: int, arrivals_per_second: float, slot: float) -> tuple[int, int]:
    """(commit, want) for the next slot from this process's demand.

    `waiting`: requests that have not left yet (granted ones included: a request can leave a second after its
    grant, so none is assumed gone before the slot starts). Needed rate D = waiting over one slot + the arrival
    rate. D >= share: keep it all and ask for the rest. Else lend, keeping headroom ceil(1.5 D) + 1 so a lender's
    own requests are not delayed by noise; an idle process (D = 0) lends everything, and takes it back within about
    one slot + hold once work arrives. (Counting waiting requests as gone when the rate now would send them before
    the slot lent out the rate a late request then needed: it waited at the send gate, and its process lent again.)
    """
    need = waiting / slot + max(0.0, arrivals_per_second)
    if need >= share:
        return share, math.ceil(need) - share
    if need <= 0:
        return 0, 0
    return min(share, math.ceil(1.5 * need) + 1), 0


class Lending:
    """One process's side: its own recorded reports, the peers' it has seen, and the rate it may use at time t.

    Times are wall-clock seconds (slots are shared by the cluster); `hold` = 1 + margin + clock guard; `cluster`
    names the deployment whose reports count. Not thread-safe: the transport holds a lock around it.
    """

    def __init__(self, limit: int, processes: int, index: int, slot: float, hold: float, started_at: float,
                 cluster: str = "") -> None:
        self.limit, self.processes, self.index, self.cluster = limit, processes, index, cluster
        self.slot, self.hold = slot, hold
        self.shares = reserved_shares(limit, processes)
        self.share = self.shares[index]
        # An earlier incarnation may have reported for the current and the next slot: use nothing in those.
        self.first_slot = self.slot_of(started_at) + 2
        self._own: dict[int, Report] = {}
        self._seen: dict[int, dict[int, Report]] = {}
        self._cache: dict[int, tuple[int, int]] = {}  # slot -> (views seen, extra)

    def slot_of(self, t: float) -> int:
        return math.floor(t / self.slot)

    def start_of(self, slot: int) -> float:
        return slot * self.slot

    def record(self, slot: int, commit: int, want: int, now: float) -> Report | None:
        """Bind this process to (commit, want) for `slot` and return the report to publish; None when it may not
        (too late: the slot has started; before `first_slot`; already recorded)."""
        if slot < self.first_slot or slot in self._own or now >= self.start_of(slot):
            return None
        commit = max(0, min(self.share, commit))
        report = Report(self.index, slot, commit, want if commit >= self.share else 0, self.limit, self.processes,
                        self.cluster)
        self._own[slot] = report
        return report

    def recorded(self, slot: int) -> bool:
        return slot in self._own

    def observe(self, report: Report) -> bool:
        """A peer's report (from the topic); False when ignored: another cluster or cluster rule, our own index or
        an unknown index. Two reports of one peer for one slot (a misconfigured cluster) keep the smaller loan and
        the larger demand."""
        if (report.cluster, report.limit, report.processes) != (self.cluster, self.limit, self.processes) \
                or report.index == self.index or not 0 <= report.index < self.processes:
            return False
        views = self._seen.setdefault(report.slot, {})
        old = views.get(report.index)
        if old is not None:
            report = Report(report.index, report.slot, max(old.commit, report.commit), max(old.want, report.want),
                            report.limit, report.processes, report.cluster)
        views[report.index] = report
        self._cache.pop(report.slot, None)
        return True

    def target(self, slot: int) -> int:
        """This process's rate for `slot` from what it knows now (never more than with every report known)."""
        if slot < self.first_slot:
            return 0
        own = self._own.get(slot)
        if own is None:
            return self.share
        if own.commit < self.share:
            return own.commit
        views = self._seen.get(slot, {})
        cached = self._cache.get(slot)
        if cached is None or cached[0] != len(views):
            cached = (len(views), extras(slot, self.shares, {**views, self.index: own})[self.index])
            self._cache[slot] = cached
        return own.commit + cached[1]

    def rate(self, t: float) -> int:
        """The rate this process may use at `t`: the least target of the slots that bind at t, and no more than a
        lowered commitment already recorded for a later slot (module doc)."""
        last = self.slot_of(t)
        first = self.slot_of(t - self.hold)
        bound = min(self.target(k) for k in range(first, last + 1))
        lowered = [r.commit for k, r in self._own.items() if k > last and r.commit < self.share]
        return min(bound, *lowered) if lowered else bound

    def forget_before(self, t: float) -> None:
        """Drop what no longer binds (slots that ended more than `hold` before t)."""
        oldest = self.slot_of(t - self.hold) - 1
        for book in (self._own, self._seen, self._cache):
            for k in [k for k in book if k < oldest]:
                del book[k]
