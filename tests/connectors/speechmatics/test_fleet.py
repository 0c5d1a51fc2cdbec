"""The fleet's engine view (fleet.py): never a job to a worker without a free engine, refusals and health."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bytewax.speechmatics.connectors.speechmatics.fleet import Fleet, engines_for, qualify, unqualify, worker_name
from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings, parse_batch_urls
from bytewax.speechmatics.schemas.errors import SettingsError

A, B, C = "http://127.0.0.1:1001/v2", "http://127.0.0.1:1002/v2", "http://127.0.0.1:1003/v2"


def test_a_job_goes_to_the_worker_with_the_most_free_engines_and_never_to_a_full_one() -> None:
    fleet = Fleet((A, B, C))
    fleet.report(A, 2, 0)
    fleet.report(B, 2, 1)
    fleet.report(C, 2, 2)
    picks = []
    while (url := fleet.pick()) is not None:
        fleet.reserve(url, 1)
        fleet.posted(url, 1, f"job{len(picks)}")
        picks.append(url)
    assert sorted(picks) == [B, C, C]
    assert picks[0] == C
    fleet.release(B, 1, f"job{picks.index(B)}")
    assert fleet.pick() == B


def test_jobs_a_report_may_not_have_seen_are_kept_on_top_of_it() -> None:
    fleet = Fleet((A,))
    fleet.report(A, 4, 4)
    fleet.reserve(A, 1)
    fleet.posted(A, 1, "before")  # created before the report was asked for: the report counts it
    fleet.reserve(A, 1)  # still on its way when the report is answered
    fleet.refreshing(A)
    fleet.reserve(A, 1)
    fleet.posted(A, 1, "during")  # created while the report was on its way, which did not see it
    fleet.reserve(A, 1)
    fleet.posted(A, 1, "seen")  # created while the report was on its way, which saw it
    fleet.report(A, 4, 2, {"before", "seen"})
    assert fleet.free(A) == 0
    fleet.posted(A, 1, None)  # the one on its way was refused after all
    assert fleet.free(A) == 1


def test_a_job_that_ended_before_the_report_is_not_freed_twice() -> None:
    fleet = Fleet((A,))
    fleet.report(A, 2, 2)
    fleet.reserve(A, 1)
    fleet.posted(A, 1, "j1")
    fleet.reserve(A, 1)
    fleet.posted(A, 1, "j2")
    fleet.refreshing(A)
    fleet.report(A, 2, 1, {"j2"})  # j1 ended at the worker before we noticed
    fleet.release(A, 1, "j1")
    assert fleet.free(A) == 1
    fleet.release(A, 1, "j2")
    assert fleet.free(A) == 2


def test_a_refusal_makes_the_worker_full_until_its_next_report() -> None:
    fleet = Fleet((A, B))
    fleet.report(A, 4, 4)
    fleet.refused(A)
    assert fleet.free(A) == 0 and fleet.pick() is None
    fleet.report(A, 4, 3)
    assert fleet.pick() == A


def test_a_silent_worker_leaves_rotation_and_rejoins_when_it_answers() -> None:
    fleet = Fleet((A, B))
    assert fleet.report(A, 2, 2) is True  # a first answer brings it in
    assert fleet.report(A, 2, 2) is False
    assert fleet.failed(A) is False  # one failure is not enough
    assert fleet.failed(A) is True
    assert fleet.pick() is None
    assert fleet.report(A, 2, 2) is True


def test_job_ids_carry_their_worker() -> None:
    assert unqualify(qualify("abc123", A)) == ("abc123", worker_name(A))
    assert unqualify("abc123") == ("abc123", None)
    assert Fleet((A, B)).by_name(worker_name(B)) == B


@given(st.lists(st.tuples(st.sampled_from("rsfpa"), st.sampled_from((A, B, C)), st.integers(0, 4)), max_size=60))
def test_the_view_never_sends_a_job_to_a_worker_it_sees_without_an_engine(ops) -> None:
    fleet = Fleet((A, B, C))
    ours: dict[str, list[str]] = {A: [], B: [], C: []}
    for step, (op, url, n) in enumerate(ops):
        if op == "r":
            fleet.refreshing(url)
            active = set(ours[url][:1])  # the worker holds one of our jobs (at most) and others' jobs
            fleet.report(url, 4, min(n, 4 - len(active)), active)
        elif op == "s" and ours[url]:
            fleet.release(url, 1, ours[url].pop())
        elif op == "f":
            fleet.failed(url)
        before = {u: fleet.free(u) for u in fleet.urls}
        picked = fleet.pick()
        if picked is None:
            assert not any(fleet.is_up(u) and before[u] >= 1 for u in fleet.urls)
        else:
            assert fleet.is_up(picked) and before[picked] == max(before[u] for u in fleet.urls if fleet.is_up(u))
            fleet.reserve(picked, 1)
            assert fleet.free(picked) == before[picked] - 1
            accepted = n % 2 == 0
            fleet.posted(picked, 1, f"j{step}" if accepted else None)
            if accepted:
                ours[picked].append(f"j{step}")
        assert all(0 <= fleet.free(u) <= 4 for u in fleet.urls)


def test_several_urls_make_a_fleet() -> None:
    settings = SubmitSettings(batch_url=f"{A}, {B},{C}")
    assert settings.worker_urls == (A, B, C) and settings.batch_url == A
    assert SubmitSettings(batch_url=A).worker_urls == ()
    assert SubmitSettings(batch_url=A, worker_urls=(A,)).worker_urls == (A,)  # a fleet of one, routed by engines
    assert replace(settings, api_key="other").worker_urls == (A, B, C)
    assert replace(settings, batch_url=B).worker_urls == ()  # another endpoint (the embedded worker's)


@pytest.mark.parametrize(("raw", "says"), [
    (f"{A} {B}", "is not one"),  # a list joined with a space
    (f"{A};{B}", "is not one"),  # joined with a semicolon
    ("http://127.0.0.1:99999/v2", "invalid port"),
    (f"{A},{A}", "listed twice"),
    (f"{A},", "is not one"),
    (f"{A},https://asr.api.speechmatics.com/v2", "SaaS is one endpoint"),
    ("ftp://127.0.0.1/v2", "is not one"),
])
def test_a_value_that_is_not_a_url_list_is_one_line(raw: str, says: str) -> None:
    with pytest.raises(SettingsError, match=says) as caught:
        parse_batch_urls(raw)
    assert "\n" not in str(caught.value) and str(caught.value).startswith("SPEECHMATICS_BATCH_URL")


@given(base=st.integers(1, 4), wanted=st.integers(1, 8), last=st.booleans(), free=st.integers(0, 8),
       waiting=st.integers(0, 3))
def test_a_last_chunk_asks_for_free_engines_only_while_no_job_waits(base, wanted, last, free, waiting) -> None:
    """BWSM_FLEET_LAST_CHUNK_ENGINES: a call's last chunk asks for up to `wanted` engines, never more than are free
    (a free engine a job waits for is never taken) and never fewer than usual; other chunks, or any job waiting
    for an engine, keep the usual `base`."""
    n = engines_for(base, wanted, last, max(free, base), waiting)
    assert base <= n <= max(base, wanted)
    assert n <= max(free, base)
    if not last or waiting:
        assert n == base
    else:
        assert n == max(base, min(wanted, free))


def test_a_last_chunk_takes_the_free_engines_of_the_worker_it_is_sent_to() -> None:
    fleet = Fleet((A, B))
    fleet.report(A, 4, 3)
    fleet.report(B, 4, 1)
    url = fleet.pick(1)
    assert url == A and engines_for(1, 2, True, fleet.free(url), waiting=0) == 2
    assert engines_for(1, 8, True, fleet.free(url), waiting=0) == 3
    assert engines_for(1, 8, True, fleet.free(url), waiting=1) == 1


def test_the_last_chunk_engines_setting_is_read_and_checked() -> None:
    from bytewax.speechmatics.flows.settings import Settings

    assert Settings.from_env({"BWSM_FLEET_LAST_CHUNK_ENGINES": "3"}, []
                             ).submission.fleet_last_chunk_engines == 3
    with pytest.raises(SettingsError, match="BWSM_FLEET_LAST_CHUNK_ENGINES"):
        Settings.from_env({"BWSM_FLEET_LAST_CHUNK_ENGINES": "0"}, [])
