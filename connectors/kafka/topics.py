"""Create the flow's topics on purpose (never by broker auto-creation), or fail with a clear message; check that
the brokers answer before a command starts its work."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from bytewax.speechmatics.connectors.kafka.config import client_config
from bytewax.speechmatics.schemas.errors import BytewaxSpeechmaticsError

# Long enough for a remote broker behind TLS/SASL, short enough that a wrong address is reported within 10 s.
PROBE_SECONDS = 5.0


class TopicError(BytewaxSpeechmaticsError, RuntimeError):
    """A topic the flow needs is missing and could not (or must not) be created."""


class KafkaUnavailable(TopicError):
    """The brokers did not answer, or the Kafka settings are not valid; the message names them, on one line."""


class TopicMissing(TopicError):
    """A topic a command reads does not exist (or its metadata cannot be read); the message names it."""


def watermarks(consumer, topic: str, timeout: float, hint: str) -> dict[int, tuple[int, int]]:  # noqa: ANN001
    """Each partition of `topic` with its (low, high) offsets now, as `consumer` (a confluent-kafka Consumer) sees
    them; `hint` tells where the topic's name came from (`(BWSM_DLQ_TOPIC or --topic)`).

    Raises:
        TopicMissing: the topic does not exist, or its metadata did not come within `timeout` seconds.
    """
    from confluent_kafka import KafkaException, TopicPartition

    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    except KafkaException as exc:
        raise TopicMissing(f"cannot read the metadata of topic {topic}: {exc}") from exc
    if meta is None or meta.error is not None or not meta.partitions:
        raise TopicMissing(f"topic {topic} does not exist {hint}")
    return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            for p in sorted(meta.partitions)}


def probe_brokers(config: Mapping[str, object] | None = None, timeout: float = PROBE_SECONDS) -> None:
    """Raise KafkaUnavailable unless the brokers answer a metadata request within `timeout` seconds.

    librdkafka retries an unreachable broker forever in the background, so without this a command would hang or
    print reconnect logs instead of saying, once, which address does not answer.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    conf = dict(config or client_config())
    servers = conf.get("bootstrap.servers", "?")
    try:
        admin = AdminClient(conf)
    except (KafkaException, ValueError, TypeError) as exc:
        raise KafkaUnavailable(f"invalid Kafka client setting: {_one_line(exc)}") from exc
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        admin.poll(0)  # hand librdkafka's queued log lines (its reasons) to the client logger, shown with -v
        raise KafkaUnavailable(
            f"Kafka at {servers} (KAFKA_BOOTSTRAP_SERVERS) did not answer within {timeout:g} s: {_one_line(exc)}"
        ) from exc


def _one_line(exc: BaseException) -> str:
    """librdkafka's reason without the KafkaError wrapping and without line breaks."""
    first = exc.args[0] if exc.args else exc
    text = first.str() if hasattr(first, "str") else str(first)
    return " ".join(text.split())


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
