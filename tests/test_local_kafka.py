"""The no-Docker broker script: up waits for metadata, is idempotent, down stops the broker cleanly."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from bytewax.speechmatics.connectors.local_kafka import LocalKafka, _read_pid, broker_answers, down, up

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_up_is_idempotent_and_down_stops_it() -> None:
    port = free_port()
    kafka = dataclasses.replace(LocalKafka.from_env(), port=port, controller_port=free_port())
    assert not broker_answers(kafka.bootstrap)
    try:
        assert up(kafka) == f"127.0.0.1:{port}"
        assert broker_answers(kafka.bootstrap)
        pid = _read_pid(kafka)
        assert pid is not None
        up(kafka)  # a broker already answers: nothing new is started
        assert _read_pid(kafka) == pid
        assert "Kafka Server started" in kafka.log_file.read_text()
    finally:
        assert down(kafka)
    assert _read_pid(kafka) is None
    assert not broker_answers(kafka.bootstrap)
    assert not down(kafka)
