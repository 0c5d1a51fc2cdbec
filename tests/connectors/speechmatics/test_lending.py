"""Lending the cluster's POST limit (connectors/speechmatics/lending.py): the division is safe under any partial view,
uses the whole limit with full views, and the rates the processes apply never add up to more than the limit in any
window, whatever reports are lost or late, with clock skew within the guard and a process restarting; reports of
another cluster count for nothing. Then the whole POST path of a cluster on a virtual clock (cluster_sim.py): late
sends, cold connections, lost and late reports, restarts, skewed clocks, all with the shipped settings, counted in
1 s windows at the API, and the use of the limit it leaves."""

from __future__ import annotations

import bisect
import random

import pytest
from cluster_sim import SHIPPED, Cluster, simulate, trickle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bytewax.speechmatics.connectors.speechmatics.lending import (
    Lending,
    Report,
    decide,
    extras,
    reserved_shares,
)

#: The shipped settings (margin 0.06, clock guard 0.1, slot 0.5): the guarantee is claimed for these.
MARGIN, GUARD, SLOT = SHIPPED.rate_margin, SHIPPED.clock_guard, SHIPPED.limiter_slot_seconds
HOLD = 1.0 + MARGIN + GUARD


def report(index: int, slot: int, commit: int, want: int, limit: int, processes: int) -> Report:
    return Report(index, slot, commit, want, limit, processes)


def test_shares_are_the_cluster_share_rule() -> None:
    assert reserved_shares(10, 2) == [5, 5]
    assert reserved_shares(10, 3) == [4, 3, 3]


def test_a_missing_peer_lends_nothing_and_wants_everything() -> None:
    shares = [4, 3, 3]
    me = report(0, 7, 4, 10, 10, 3)
    lender = report(1, 7, 0, 0, 10, 3)
    assert extras(7, shares, {0: me, 1: lender}) == [1, 0, 2]  # peer 2 unseen: the 3 lent go round-robin from 7%3=1
    full = extras(7, shares, {0: me, 1: lender, 2: report(2, 7, 3, 0, 10, 3)})
    assert full == [3, 0, 0]  # peer 2 wants nothing more: all 3 to me
    assert extras(7, shares, {0: me}) == [0, 0, 0]  # nothing seen lent: nothing borrowed


reports = st.builds(lambda commit, want, lend: (commit, want, lend), st.integers(0, 40), st.integers(0, 60),
                    st.booleans())


@given(limit=st.integers(2, 40), processes=st.integers(2, 6), slot=st.integers(0, 50),
       choices=st.lists(reports, min_size=6, max_size=6), views=st.lists(st.sets(st.integers(0, 5)), min_size=6,
                                                                          max_size=6))
def test_a_partial_view_never_gives_more_than_the_full_one(limit: int, processes: int, slot: int,
                                                           choices: list, views: list[set[int]]) -> None:
    processes = min(processes, limit)
    shares = reserved_shares(limit, processes)
    full = {}
    for i in range(processes):
        commit, want, lend = choices[i]
        commit = min(commit, shares[i] - 1) if lend and shares[i] > 0 else shares[i]
        full[i] = report(i, slot, commit, 0 if commit < shares[i] else want, limit, processes)
    best = extras(slot, shares, full)
    pool = sum(shares[i] - r.commit for i, r in full.items())
    assert sum(best) <= pool
    wanted = sum(r.want for r in full.values())
    assert sum(best) == min(pool, wanted)  # with every report seen, all that is lent and wanted is used
    for i in range(processes):
        view = {j: full[j] for j in views[i] if j < processes} | {i: full[i]}
        assert extras(slot, shares, view)[i] <= best[i]


def test_decide_keeps_headroom_lends_when_idle_and_borrows_under_a_backlog() -> None:
    assert decide(5, waiting=0, arrivals_per_second=0.0, slot=0.5) == (0, 0)
    assert decide(5, waiting=0, arrivals_per_second=1.0, slot=0.5) == (3, 0)
    assert decide(5, waiting=300, arrivals_per_second=0.0, slot=0.5) == (5, 595)
    # One request not gone yet (granted, maybe leaving late): its rate is kept, never lent.
    assert decide(5, waiting=1, arrivals_per_second=0.0, slot=0.5) == (4, 0)


def test_with_every_report_seen_a_backlog_uses_the_whole_limit() -> None:
    """Process 0 has a backlog, process 1 is idle: after the change has settled, 0 posts at the whole limit."""
    start = 1000.0
    a = Lending(10, 2, 0, SLOT, HOLD, start)
    b = Lending(10, 2, 1, SLOT, HOLD, start)
    for k in range(a.first_slot, a.first_slot + 10):
        ra = a.record(k, 5, 200, a.start_of(k) - 0.15)
        rb = b.record(k, 0, 0, b.start_of(k) - 0.15)
        assert ra and rb
        a.observe(rb)
        b.observe(ra)
    settled = a.start_of(a.first_slot) + HOLD + SLOT
    assert a.rate(settled) + b.rate(settled) == 10 and a.rate(settled) == 10
    assert a.rate(start) == 0  # just started: an earlier run of it may have lent these slots


# ---- the rates applied, over time, with lost and late reports, clock skew and a restart -----------------------


def random_policy(rng: random.Random, index: int, share: int, limit: int, _when: float) -> tuple[int, int]:
    """Mostly the extremes (lend all; keep all and want more), where a mistake shows."""
    commit = rng.choice((0, share, rng.randint(0, share)))
    return commit, (rng.choice((limit, rng.randint(0, limit))) if commit == share else 0)


def simulate_rates(limit: int, processes: int, slots: int, rng: random.Random, skews: list[float],
                   restart: tuple[int, float] | None, policy=random_policy, loss: float = 0.25,
                   missed: float = 0.1) -> tuple[list[float], list[list[int]]]:
    """Each process's applied rate (Lending.rate on its own skewed clock, with the reports delivered by then) at every
    time where any rate may change; a restarted process's old run posts nothing after it dies. Returns
    (times, rates[process][time index])."""
    t0 = 100.0
    events: list[tuple[float, int, object]] = []  # (true time, order, action)
    runs: dict[int, list[tuple[float, float, Lending]]] = {}  # process -> [(alive from, alive until, Lending)]
    for i in range(processes):
        runs[i] = [(0.0, float("inf"), Lending(limit, processes, i, SLOT, HOLD, t0 + skews[i]))]
    if restart is not None:
        victim, at = restart
        old = runs[victim][0]
        runs[victim] = [(0.0, at, old[2]), (at, float("inf"), Lending(limit, processes, victim, SLOT, HOLD,
                                                                       at + skews[victim]))]
    first = min(r[2].first_slot for rs in runs.values() for r in rs) - 1
    breaks: set[float] = set()
    for i, rs in runs.items():
        for alive_from, alive_until, lending in rs:
            for k in range(first, first + slots):
                start = lending.start_of(k) - skews[i]
                breaks.update((start, start + HOLD))
                decide_at = start - rng.uniform(0.0, 0.3)
                if not alive_from <= decide_at < alive_until or rng.random() < missed:  # dead, or missed the deadline
                    continue
                commit, want = policy(rng, i, lending.share, limit, decide_at)
                events.append((decide_at, 0, ("record", i, lending, k, commit, want, decide_at + skews[i])))
    deliveries = []
    for when, _, action in events:
        _, i, lending, k, commit, want, local = action
        sent = Report(i, k, min(commit, lending.share), want, limit, processes)
        for rs in runs.values():
            for _, _, peer in rs:
                if peer is lending or rng.random() < loss:  # lost
                    continue
                arrive = when + (rng.choice((0.0, rng.uniform(0.0, 0.2), rng.uniform(0.0, 3.0))) if loss else 0.0)
                deliveries.append((arrive, 1, ("deliver", peer, sent, lending, k)))
                breaks.add(arrive)
    events.extend(deliveries)
    events.sort(key=lambda e: (e[0], e[1]))
    times = sorted(breaks | {b - 1e-6 for b in breaks})
    rates = [[0] * len(times) for _ in range(processes)]
    recorded: set[tuple[int, int]] = set()
    e = 0
    for n, t in enumerate(times):
        while e < len(events) and events[e][0] <= t:
            action = events[e][2]
            if action[0] == "record":
                _, i, lending, k, commit, want, local = action
                if lending.record(k, commit, want, local) is not None:
                    recorded.add((id(lending), k))
            else:
                _, peer, sent, sender, k = action
                if (id(sender), k) in recorded:  # only a recorded commitment is ever published
                    peer.observe(sent)
            e += 1
        for i, rs in runs.items():
            live = [lending for alive_from, alive_until, lending in rs if alive_from <= t < alive_until]
            rates[i][n] = live[0].rate(t + skews[i]) if live else 0
    return times, rates


def busiest_window(times: list[float], rates: list[list[int]], window: float) -> int:
    """Max over windows [x, x + window) of the sum over processes of each one's highest rate in the window (what
    bounds its sends there); windows that start or end at a change are enough for piecewise-constant rates."""
    worst = 0
    starts = set(times) | {t - window + 1e-9 for t in times}
    for x in starts:
        lo = bisect.bisect_left(times, x)
        hi = bisect.bisect_left(times, x + window)
        if lo >= hi:
            continue
        worst = max(worst, sum(max(r[lo:hi]) for r in rates))
    return worst


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(limit=st.integers(2, 20), processes=st.integers(2, 4), seed=st.integers(0, 2**32 - 1),
       skews=st.lists(st.floats(-GUARD / 2, GUARD / 2), min_size=4, max_size=4),
       restart=st.one_of(st.none(), st.tuples(st.integers(0, 3), st.floats(100.0, 104.0))))
def test_applied_rates_never_add_up_to_more_than_the_limit_in_any_window(
    limit: int, processes: int, seed: int, skews: list[float], restart: tuple[int, float] | None,
) -> None:
    """Random commitments and demands, a quarter of the reports lost, the rest delivered at once, soon or up to
    3 s late, missed deadlines, clocks up to the guard apart, one process restarted: in any window of 1 s + margin
    (a server's 1 s window plus arrival jitter), the processes' highest rates add up to at most the limit."""
    processes = min(processes, limit)
    if restart is not None:
        restart = (restart[0] % processes, restart[1])
    times, rates = simulate_rates(limit, processes, 14, random.Random(seed), skews[:processes], restart)
    assert busiest_window(times, rates, 1.0 + MARGIN) <= limit


@given(at=st.floats(102.3, 104.5), skew=st.floats(-GUARD / 2, GUARD / 2))
@settings(max_examples=60, deadline=None)
def test_a_restarted_lender_does_not_take_back_what_its_earlier_run_lent(at: float, skew: float) -> None:
    """Process 1 lends all of its share and process 0 borrows it, every report delivered at once; process 1 dies
    and starts again at once, at any moment, and keeps its share from then on: the restarted one must not post in
    the slots its earlier run may have lent (the current and the next one), while process 0 may still be using
    the loan."""

    def policy(_rng: random.Random, index: int, share: int, limit: int, when: float) -> tuple[int, int]:
        return (share, limit) if index == 0 else (0, 0) if when < at else (share, 0)

    times, rates = simulate_rates(10, 2, 20, random.Random(0), [0.0, skew], (1, at), policy, loss=0.0, missed=0.0)
    assert max(rates[0]) == 10  # the loan was in use
    assert busiest_window(times, rates, 1.0 + MARGIN) <= 10



def test_reports_of_another_cluster_count_for_nothing() -> None:
    """Two deployments on one broker and topic: a loan of the other one's process 1 is not ours to use."""
    start = 1000.0
    ours = Lending(10, 2, 0, SLOT, HOLD, start, cluster="calls.audio>calls.transcripts")
    theirs = Lending(10, 2, 1, SLOT, HOLD, start, cluster="other.audio>other.transcripts")
    mine = Lending(10, 2, 1, SLOT, HOLD, start, cluster="calls.audio>calls.transcripts")
    k = ours.first_slot
    assert ours.record(k, 5, 100, ours.start_of(k) - 0.3)
    assert not ours.observe(theirs.record(k, 0, 0, ours.start_of(k) - 0.3))
    assert ours.target(k) == 5
    assert ours.observe(mine.record(k, 0, 0, ours.start_of(k) - 0.3))
    assert ours.target(k) == 10
    assert Report.from_json(Report(1, k, 0, 0, 10, 2, "a>b").to_json()).cluster == "a>b"
    assert Report.from_json({"i": 1, "k": k, "c": 0, "w": 0, "n": 10, "p": 2}).cluster == ""  # an older version's


def test_a_lowered_commitment_applies_from_when_it_is_recorded() -> None:
    """A lender that records commitment 0 for the next slot grants nothing more from then on, so no request it
    grants in the last moments before the slot has to wait for the slot's end at the send gate."""
    start = 1000.0
    a = Lending(10, 2, 1, SLOT, HOLD, start)
    k = a.first_slot + 4
    for j in range(a.first_slot, k):
        a.record(j, 5, 0, a.start_of(j) - 0.3)
    before = a.start_of(k) - 0.3
    assert a.rate(before - 0.01) == 5
    a.record(k, 0, 0, before)
    assert a.rate(before) == 0


# ---- the whole POST path of a cluster on a virtual clock (cluster_sim.py) -------------------------------------------


@pytest.mark.parametrize(("limit", "processes"), [(2, 2), (10, 10)])
@pytest.mark.parametrize("late", [0.2, 0.3, 0.6, 1.0])
def test_a_lender_s_late_sends_do_not_land_in_its_loan(limit: int, processes: int, late: float) -> None:
    """The issue's case: the lenders post at their share until a slot from which they lend all of it; every one of
    their requests leaves `late` seconds after its grant, so the last ones granted before that slot leave inside
    it, while process 0 borrows what they lent. Granted at the old rate, sent into the loan: 3 POSTs in a 1 s window
    against a limit of 2, 15 against 10 (1 s late). The send gate holds them until their rate allows."""
    cluster = Cluster(limit, [300] + [0] * (processes - 1), arrivals=[[]] + [[0.3] * 20] * (processes - 1),
                      delays=[[]] + [[late] * 20] * (processes - 1), policy="switch", switch_at=4.0, loss=0.0,
                      late_reports=0.0, late_decisions=0.0, cold=0.0, jitter=False, horizon=9.0)
    outcome = simulate(cluster)
    assert outcome.by_process[0] > 0 and sum(outcome.by_process[1:]) > 0
    assert outcome.busiest() <= limit


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(processes=st.integers(2, 10), extra=st.integers(0, 10), seed=st.integers(0, 2**32 - 1),
       backlogs=st.lists(st.sampled_from((0, 0, 3, 30, 120)), min_size=10, max_size=10),
       traffic=st.lists(st.floats(0.0, 3.0), min_size=10, max_size=10),
       skews=st.lists(st.floats(-GUARD / 2, GUARD / 2), min_size=10, max_size=10),
       policy=st.sampled_from(("demand", "any")), cold=st.sampled_from((0.0, 0.1, 0.5)),
       restart=st.one_of(st.none(), st.tuples(st.integers(0, 9), st.floats(0.5, 10.0), st.floats(0.0, 2.0))))
def test_no_1s_window_at_the_api_holds_more_than_the_limit(
    processes: int, extra: int, seed: int, backlogs: list[int], traffic: list[float], skews: list[float],
    policy: str, cold: float, restart: tuple[int, float, float] | None,
) -> None:
    """2 to 10 processes with skewed backlogs and light traffic arriving at the others, requests leaving up to 1 s
    after their grant (cold connections), reports lost (a fifth) or late (up to 3 s) or decided late, clocks up to
    the guard apart, one process killed and restarted, commitments from the real rule or any at all: the API never
    sees more than the limit in any 1 s window."""
    limit = processes + extra
    rng = random.Random(seed)
    arrivals = [trickle(rng, rate, 12.0) if rate > 0.2 else [] for rate in traffic[:processes]]
    if restart is not None:
        restart = (restart[0] % processes, restart[1], restart[2])
    cluster = Cluster(limit, backlogs[:processes], arrivals, policy=policy, cold=cold, skews=skews[:processes],
                      restart=restart, seed=seed, horizon=600.0 if policy == "demand" else 25.0)
    outcome = simulate(cluster)
    assert outcome.busiest() <= limit
    if policy == "demand":  # and nothing waits for ever (a lender's own late request once did)
        assert len(outcome.arrivals) == sum(backlogs[:processes]) + sum(len(a) for a in arrivals)


def test_lending_uses_more_of_the_limit_than_fixed_shares() -> None:
    """A backlog skewed onto one process (80/20 on 2, all on 1 of 5): the use of the limit (POSTs per second from the
    first to the last, over the limit) with lending and with fixed shares, never above the limit in any 1 s window.
    Reports on time and delivered, a new connection for each process's first request. Printed for the record."""
    for limit, backlogs in ((10, [240, 60]), (10, [150, 0, 0, 0, 0])):
        uses = {}
        for lending in (False, True):
            outcome = simulate(Cluster(limit, backlogs, lending=lending, cold=0.0, loss=0.0, late_reports=0.0,
                                       late_decisions=0.0, seed=7))
            assert outcome.busiest() <= limit and len(outcome.arrivals) == sum(backlogs)
            uses[lending] = outcome.use(limit)
        print(f"\nlimit {limit}/s, backlogs {backlogs}: use of the limit {100 * uses[False]:.1f} % with fixed shares, "
              f"{100 * uses[True]:.1f} % with lending")
        assert uses[True] > uses[False]


def test_the_cluster_is_named_by_its_topics_unless_told() -> None:
    """Two deployments differ in their topics, so by default their reports name different clusters; BWSM_CLUSTER_ID
    names it explicitly (one deployment reading two sets of topics, or a rename that must keep its loans)."""
    from bytewax.speechmatics.flows.settings import Settings

    one = Settings.from_env({}, argv=["x"]).submission.cluster_id
    other = Settings.from_env({"BWSM_AUDIO_TOPIC": "b.audio", "BWSM_TRANSCRIPT_TOPIC": "b.transcripts"},
                              argv=["x"]).submission.cluster_id
    assert one == "calls.audio>calls.transcripts" and other == "b.audio>b.transcripts"
    assert Settings.from_env({"BWSM_CLUSTER_ID": "prod-eu"}, argv=["x"]).submission.cluster_id == "prod-eu"
