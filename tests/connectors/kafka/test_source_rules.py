"""The batch source's decisions (connectors/kafka/source_rules.py): where a partition reads on when its offset is gone
and what that skips, which errors stop the flow, the pacing rule, and the log rate limit, on a simulated clock; and
the policy as a setting of the flow."""

from __future__ import annotations

from datetime import timedelta

import pytest
from confluent_kafka import KafkaError
from hypothesis import given
from hypothesis import strategies as st

from bytewax.speechmatics.connectors.kafka.source_rules import (
    OFFSET_RESETS,
    PACE_FROM_BATCH,
    LogLimit,
    is_refused,
    offset_reset_policy,
    pace_after,
    reset_to,
)

offsets = st.integers(min_value=0, max_value=10**12)


@given(failed=offsets, low=offsets, retained=st.integers(min_value=0, max_value=10**6))
def test_earliest_reads_on_at_the_low_watermark_and_counts_only_what_retention_deleted(failed: int, low: int,
                                                                                        retained: int) -> None:
    high = low + retained
    reset = reset_to("earliest", failed, low, high)
    assert reset.offset == low
    if failed > high:  # truncated or recreated: nothing between failed and low was ever there to read
        assert reset.beyond_end and reset.skipped == 0
    else:
        assert not reset.beyond_end and reset.skipped == max(0, low - failed)


@given(failed=offsets, low=offsets, retained=st.integers(min_value=0, max_value=10**6))
def test_latest_jumps_to_the_end_and_counts_everything_it_jumps_over(failed: int, low: int, retained: int) -> None:
    high = low + retained
    reset = reset_to("latest", failed, low, high)
    assert reset.offset == high
    assert reset.skipped == (0 if failed > high else high - failed)


def test_a_logical_offset_skips_nothing_countable() -> None:
    assert reset_to("earliest", -1001, 40, 90).skipped == 0
    assert reset_to("latest", -1001, 40, 90).skipped == 0


def test_the_error_policy_has_no_position() -> None:
    with pytest.raises(ValueError, match="error"):
        reset_to("error", 5, 40, 90)


def test_policies_and_librdkafka_aliases() -> None:
    assert [offset_reset_policy(p) for p in OFFSET_RESETS] == list(OFFSET_RESETS)
    assert offset_reset_policy("smallest") == offset_reset_policy(" Beginning") == "earliest"
    assert offset_reset_policy("largest") == offset_reset_policy("end") == "latest"
    with pytest.raises(ValueError, match="earliest, latest, error"):
        offset_reset_policy("none")


def test_refused_credentials_acls_and_fatal_errors_stop_the_flow_other_errors_do_not() -> None:
    for code in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED,
                 KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED):
        assert is_refused(code, fatal=False)
    assert is_refused(KafkaError._TRANSPORT, fatal=True)
    # the source uses no consumer group: a group ACL it lacks must not stop it
    for code in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError.GROUP_AUTHORIZATION_FAILED,
                 KafkaError._TIMED_OUT, KafkaError.NOT_LEADER_FOR_PARTITION):
        assert not is_refused(code, fatal=False)


@given(n=st.integers(min_value=0, max_value=20_000), batch_size=st.integers(min_value=1, max_value=20_000))
def test_pacing_waits_only_after_a_sizeable_batch_that_was_not_full(n: int, batch_size: int) -> None:
    pace = timedelta(seconds=0.05)
    waits = pace_after(n, batch_size, pace)
    assert waits == (pace if PACE_FROM_BATCH <= n < batch_size else None)
    assert pace_after(n, batch_size, timedelta(0)) is None


def test_the_log_limit_allows_one_line_per_interval_and_says_what_it_held() -> None:
    limit = LogLimit(10.0)
    assert limit.allow(100.0) == 0
    assert [limit.allow(t) for t in (100.1, 101.0, 109.9)] == [None, None, None]
    assert limit.allow(110.0) == 3
    assert limit.allow(115.0) is None
    assert limit.allow(200.0) == 1


@given(times=st.lists(st.floats(min_value=0, max_value=1000, allow_nan=False), min_size=1, max_size=200))
def test_the_log_limit_never_loses_count(times: list[float]) -> None:
    limit = LogLimit(10.0)
    results = [limit.allow(t) for t in sorted(times)]
    logged = [r for r in results if r is not None]
    held_now = results[::-1].index(next(r for r in results[::-1] if r is not None))  # held after the last line
    assert len(logged) + sum(logged) + held_now == len(times)
    lines = sorted(t for t, r in zip(sorted(times), results, strict=True) if r is not None)
    assert all(b - a >= 10.0 for a, b in zip(lines, lines[1:], strict=False))


def test_the_policy_is_a_setting_that_reaches_both_inputs_of_the_flow(tmp_path) -> None:  # noqa: ANN001
    from bytewax.speechmatics.flows.microbatch import build_flow
    from bytewax.speechmatics.flows.settings import Settings, SettingsError

    assert Settings().kafka.source_offset_reset == "earliest"
    with pytest.raises(SettingsError, match="BWSM_SOURCE_OFFSET_RESET must be .*earliest, latest.*error"):
        Settings.from_env({"BWSM_SOURCE_OFFSET_RESET": "none"}, argv=[])
    settings = Settings.from_env({"BWSM_SOURCE_OFFSET_RESET": "Latest", "SPEECHMATICS_API_KEY": "k",
                                  "BWSM_JOURNAL_DIR": str(tmp_path)}, argv=[])
    steps = {step.step_name: step for step in build_flow(settings).substeps}
    assert steps["audio_in"].offset_reset == "latest"
    assert steps["rt_in"].add_config["auto.offset.reset"] == "latest"
