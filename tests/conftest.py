"""Shared fixtures: a real Kafka broker and unique topics.

The broker, in order: KAFKA_BOOTSTRAP_SERVERS when set; else testcontainers' Kafka when a Docker engine
answers; else the project's local KRaft broker from the Maven Central jars (started here if needed).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator

import pytest

# Fixtures that live in their own modules (tests/ is on sys.path under pytest).
pytest_plugins = ["worker_fixtures"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first (order otherwise kept): with the suite in two processes, a long test handed out last leaves
    the other process idle while it runs."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_configure(config: pytest.Config) -> None:
    """Each test process gets its own default journal directory.

    `make test` runs the suite in two processes (pytest-xdist); a flow built without a journal or recovery
    directory of its own would otherwise take the default journal's lock for process index 0 in both at once, and
    a test session would write into the user's own journal.
    """
    if not os.environ.get("BWSM_JOURNAL_DIR"):
        os.environ["BWSM_JOURNAL_DIR"] = tempfile.mkdtemp(prefix="bwsm-test-journal-")


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:  # noqa: BLE001 - any failure means no usable engine
        return False
    return True


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real Apache Kafka broker for this test session."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    from bytewax.speechmatics.connectors.cli.kafka import local_kafka
    from bytewax.speechmatics.connectors.kafka.local_broker import up

    yield up(local_kafka())


@pytest.fixture
def make_topic(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Create topics with unique names (so tests never see each other's data); delete them afterwards."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created: list[str] = []

    def make(prefix: str = "t", partitions: int = 1) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
            future.result(timeout=30)
        created.append(name)
        return name

    yield make
    if created:
        for future in admin.delete_topics(created).values():
            with contextlib.suppress(Exception):  # best-effort clean-up
                future.result(timeout=30)
