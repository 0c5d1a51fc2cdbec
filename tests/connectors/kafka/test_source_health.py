"""One partition of the batch source against a real broker: consumer errors (refused credentials stop the flow, a
broker that is down is counted and logged sparingly), the lag it publishes, and when it asks to be read again.

The partition is driven the way Bytewax drives it (`next_batch`, `next_awake`), without a dataflow around it, so
each test sees exactly what the source decides after each read.
"""

from __future__ import annotations

import socket
import threading
from datetime import datetime, timedelta, timezone

import pytest
from confluent_kafka import KafkaError
from kafka_source_support import produce_numbered, sample, source_log, wait_for

from bytewax.speechmatics.connectors.kafka.source import BatchKafkaSource, KafkaSourceError

pytestmark = pytest.mark.kafka

#: SASL against the broker's PLAINTEXT listener: the broker refuses the handshake, librdkafka reports _AUTHENTICATION.
BAD_SASL = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": "flow",
            "sasl.password": "not-it", "log_level": 0}


def counts(msgs: list) -> list[int]:
    return [len(msgs)]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_refused_credentials_stop_the_flow_with_one_line(kafka_bootstrap: str, make_topic) -> None:  # noqa: ANN001
    topic = make_topic("auth")
    part = BatchKafkaSource([kafka_bootstrap], [topic], counts, add_config=BAD_SASL).build_part(
        "auth_test", f"0-{topic}", None)
    try:
        with source_log() as lines, pytest.raises(KafkaSourceError) as info:
            # before: the error was never even seen, and the partition read nothing, forever
            wait_for(lambda: False, 30, "the refused handshake to stop the partition", step=part.next_batch)
    finally:
        part.close()
    message = str(info.value)
    assert "\n" not in message and message.startswith("kafka source: stopping the flow: ")
    assert f"topic {topic!r} partition 0" in message and "_AUTHENTICATION" in message
    assert "not-it" not in message
    assert lines == [f"ERROR {message}"]


def test_refused_credentials_stop_the_flow_at_start(kafka_bootstrap: str, make_topic) -> None:  # noqa: ANN001
    topic = make_topic("auth")
    source = BatchKafkaSource([kafka_bootstrap], [topic], counts, add_config=BAD_SASL)
    outcome: list[BaseException | list[str]] = []

    def list_parts() -> None:
        try:
            outcome.append(source.list_parts())
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    thread = threading.Thread(target=list_parts, daemon=True)  # before: blocked forever, waiting for metadata
    thread.start()
    thread.join(30)
    assert outcome, "list_parts still waiting after 30 s with refused credentials"
    assert isinstance(outcome[0], KafkaSourceError) and f"cannot read topic {topic!r}" in str(outcome[0])
    assert "_AUTHENTICATION" in str(outcome[0])


def test_a_broker_that_is_down_is_counted_logged_sparingly_and_waited_for() -> None:
    seen: list[int] = []
    source = BatchKafkaSource([f"127.0.0.1:{closed_port()}"], ["nowhere"], counts,
                              on_error=lambda _t, _p, error: seen.append(error.code()),
                              add_config={"reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 20,
                                          "log_level": 0})
    part = source.build_part("down_test", "0-nowhere", None)
    try:
        with source_log() as lines:
            # before: the errors never reached on_error (librdkafka reports them through error_cb only)
            wait_for(lambda: len(seen) >= 10, 30, "ten connection errors", step=part.next_batch)
    finally:
        part.close()
    assert set(seen) <= {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN}
    retrying = [line for line in lines if "retrying" in line]
    assert len(retrying) <= 1 + len(seen) // 100 and len(retrying) < len(seen), lines  # one line per 10 s
    assert all("nowhere" in line and "partition 0" in line for line in retrying)


def test_lag_is_published_while_behind_and_falls_to_zero_once_caught_up(kafka_bootstrap: str,
                                                                       make_topic) -> None:  # noqa: ANN001
    topic = make_topic("lag")
    produce_numbered(kafka_bootstrap, topic, 300)
    part = BatchKafkaSource([kafka_bootstrap], [topic], counts, batch_size=50).build_part(
        "lag_test", f"0-{topic}", None)
    lag = {"step_id": "lag_test", "topic": topic, "partition": 0}
    read: list[int] = []
    try:
        wait_for(lambda: read, 30, "the first batch", step=lambda: read.extend(part.next_batch()))
        assert read == [50] and sample("bytewax_kafka_consumer_lag", **lag) == 250
        # nothing more arrives: the gauge must come down to 0, not keep the lag of the last busy read
        wait_for(lambda: sum(read) == 300 and sample("bytewax_kafka_consumer_lag", **lag) == 0, 30,
                 "lag 0 after catching up", step=lambda: read.extend(part.next_batch()))
    finally:
        part.close()


def test_a_busy_caught_up_partition_is_read_again_after_pace_others_at_once(kafka_bootstrap: str,
                                                                           make_topic) -> None:  # noqa: ANN001
    topic = make_topic("pace")
    pace = timedelta(seconds=30)  # far longer than the test: a paced read is unmistakable

    def reads(batch_size: int, messages: int) -> list[tuple[int, bool]]:
        """(messages read, paced exactly `pace` after the read) for every non-empty read until `messages`."""
        part = BatchKafkaSource([kafka_bootstrap], [topic], counts, batch_size=batch_size, pace=30.0).build_part(
            "pace_test", f"0-{topic}", None)
        out: list[tuple[int, bool]] = []
        try:
            def step() -> None:
                before = datetime.now(timezone.utc)
                got = part.next_batch()
                after = datetime.now(timezone.utc)
                awake = part.next_awake()
                if got:
                    out.append((got[0], awake is not None and before + pace <= awake <= after + pace))
                else:
                    assert awake is None  # an empty read: look again at once
            wait_for(lambda: sum(n for n, _ in out) >= messages, 30, f"{messages} messages", step=step)
        finally:
            part.close()
        return out

    produce_numbered(kafka_bootstrap, topic, 5)
    assert reads(1000, 5) == [(5, False)]  # quiet: small reads are not paced
    produce_numbered(kafka_bootstrap, topic, 495, first_seq=5)
    busy = reads(1000, 500)  # busy and caught up: 100 or more messages, but not a full batch
    assert all(paced == (100 <= n < 1000) for n, paced in busy) and any(paced for _, paced in busy), busy
    behind = reads(100, 500)  # behind: every read is a full batch and the next one comes at once
    assert [n for n, _ in behind] == [100] * 5 and not any(paced for _, paced in behind)
