"""Create the flow's topics on purpose (never by broker auto-creation), or fail with a clear message."""

from __future__ import annotations

from collections.abc import Iterable

from .kafka_config import client_config


class TopicError(RuntimeError):
    """A topic the flow needs is missing and could not (or must not) be created."""


def ensure_topics(
    topics: Iterable[str],
    partitions: int,
    create: bool,
    replication: int = 1,
    timeout: float = 30.0,
    config: dict | None = None,
) -> list[str]:
    """Make sure every topic exists; create the missing ones when `create`; return the names created."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(config or client_config())
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except Exception as exc:
        raise TopicError(f"cannot reach Kafka to list topics: {exc}") from exc
    missing = [t for t in dict.fromkeys(topics) if t not in existing]
    if not missing:
        return []
    if not create:
        raise TopicError(
            f"topics missing: {', '.join(missing)}; create them (partitions >= the number of Bytewax workers you "
            "will run), or run `bytewax-speechmatics run --create-topics`"
        )
    futures = admin.create_topics([NewTopic(t, partitions, replication) for t in missing])
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise TopicError(f"could not create topic {name!r}: {exc}") from exc
    return missing
