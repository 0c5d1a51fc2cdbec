"""Lag in seconds: never below the true age of the oldest unread message, 0 when nothing is unread."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bytewax.speechmatics.connectors import metrics
from bytewax.speechmatics.connectors.kafka.lag import Position, Positions


def test_nothing_unread_is_no_lag() -> None:
    assert Position(position=10, high=10, read_ts=1.0).lag_seconds(100.0) == 0.0
    assert Position().lag_seconds(100.0) == 0.0  # nothing known yet


def test_the_age_counts_from_the_later_of_last_read_and_last_caught_up() -> None:
    assert Position(position=5, high=9, read_ts=40.0, caught_up_at=30.0).lag_seconds(100.0) == 60.0
    assert Position(position=5, high=9, read_ts=40.0, caught_up_at=70.0).lag_seconds(100.0) == 30.0


@given(gaps=st.lists(st.floats(0.001, 100.0), min_size=1, max_size=30), data=st.data())
def test_the_estimate_is_an_upper_bound_of_the_oldest_unread_age(gaps: list[float], data: st.DataObject) -> None:
    written = [sum(gaps[: i + 1]) for i in range(len(gaps))]  # message i written at written[i]
    position = data.draw(st.integers(0, len(written) - 1))  # the next unread message
    # The reader last saw the partition caught up at some moment before message `position` was written.
    before = written[position - 1] if position else 0.0
    caught_up = data.draw(st.one_of(st.just(0.0), st.floats(before, written[position], exclude_max=True)))
    now = written[-1] + data.draw(st.floats(0.0, 1000.0))
    positions = Positions()
    positions.read("t", 0, position, len(written), written[position - 1] if position else 0.0, caught_up or 0.0)
    if caught_up:
        positions.watermark("t", 0, position, caught_up)  # seen caught up then
        positions.watermark("t", 0, len(written), now)
    estimate = positions._parts["t", 0].lag_seconds(now)  # noqa: SLF001
    if position or caught_up:
        assert estimate >= now - written[position] - 1e-9


def test_publish_sets_the_gauges() -> None:
    positions = Positions()
    positions.read("lag-test", 3, 7, 10, 50.0, 60.0)
    positions.publish(80.0)
    assert metrics.SOURCE_LAG_SECONDS.labels(topic="lag-test", partition="3")._value.get() == 30.0  # noqa: SLF001
    assert metrics.SOURCE_READ_TIMESTAMP.labels(topic="lag-test", partition="3")._value.get() == 50.0  # noqa: SLF001
