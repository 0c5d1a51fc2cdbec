"""Kafka client settings shared by every consumer, producer and admin client the project creates.

`KafkaSettings` holds the brokers, the librdkafka properties for security and anything else (passed to every
client), and the source batch size. The flow's `Settings.from_env` fills it from KAFKA_BOOTSTRAP_SERVERS, the named
security variables (`SECURITY_VARIABLES`: KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME,
KAFKA_SASL_PASSWORD, KAFKA_SSL_CA_LOCATION, KAFKA_SSL_CERTIFICATE_LOCATION, KAFKA_SSL_KEY_LOCATION) and
KAFKA_CONF_<NAME> pass-through properties with dots written as underscores
(KAFKA_CONF_SOCKET_TIMEOUT_MS=30000 -> socket.timeout.ms=30000); nothing here reads the environment itself.

librdkafka's own log lines go to the `bytewax.speechmatics.librdkafka` logger instead of straight to stderr, so the
command line can keep them out of the way of its one-line errors unless `-v` asks for them (`show_client_logs`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from bytewax.speechmatics.connectors.kafka.source import DEFAULT_BATCH_SIZE, DEFAULT_PACE
from bytewax.speechmatics.connectors.kafka.source_rules import DEFAULT_OFFSET_RESET

DEFAULT_BOOTSTRAP = "localhost:9092"
CLIENT_LOGGER = "bytewax.speechmatics.librdkafka"

#: Environment variable -> librdkafka property, for the security settings every client needs.
SECURITY_VARIABLES = {
    "KAFKA_SECURITY_PROTOCOL": "security.protocol",
    "KAFKA_SASL_MECHANISM": "sasl.mechanism",
    "KAFKA_SASL_USERNAME": "sasl.username",
    "KAFKA_SASL_PASSWORD": "sasl.password",
    "KAFKA_SSL_CA_LOCATION": "ssl.ca.location",
    "KAFKA_SSL_CERTIFICATE_LOCATION": "ssl.certificate.location",
    "KAFKA_SSL_KEY_LOCATION": "ssl.key.location",
}
PASSTHROUGH_PREFIX = "KAFKA_CONF_"


@dataclass(frozen=True)
class KafkaSettings:
    """Where Kafka is and how to talk to it."""

    bootstrap_servers: str = DEFAULT_BOOTSTRAP
    #: librdkafka properties given to every client (security, KAFKA_CONF_*); may hold a password: not in repr.
    properties: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: The most Kafka messages one source batch holds (per partition read).
    source_batch_size: int = DEFAULT_BATCH_SIZE
    #: Seconds a busy, caught-up audio partition waits before it is read again (batches a call's frames; see
    #: audio_input).
    source_pace_seconds: float = DEFAULT_PACE
    #: What an audio partition does when the offset it should read next is gone: earliest, latest or error.
    source_offset_reset: str = DEFAULT_OFFSET_RESET

    @property
    def brokers(self) -> list[str]:
        return [b.strip() for b in self.bootstrap_servers.split(",") if b.strip()]

    def client_config(self, extra: Mapping[str, object] | None = None) -> dict:
        """A complete confluent-kafka config: bootstrap + properties + `extra` (which wins); logs to CLIENT_LOGGER."""
        conf: dict[str, object] = {"bootstrap.servers": self.bootstrap_servers,
                                   "logger": logging.getLogger(CLIENT_LOGGER), **self.properties}
        conf.update(extra or {})
        return conf


def properties_from(env: Mapping[str, str]) -> dict[str, str]:
    """The librdkafka properties an environment mapping names (security variables and KAFKA_CONF_*)."""
    conf = {prop: env[name] for name, prop in SECURITY_VARIABLES.items() if env.get(name)}
    for name, value in env.items():
        if name.startswith(PASSTHROUGH_PREFIX) and value:
            conf[name[len(PASSTHROUGH_PREFIX) :].lower().replace("_", ".")] = value
    return conf


def client_config(extra: Mapping[str, object] | None = None, kafka: KafkaSettings | None = None) -> dict:
    """`kafka.client_config(extra)`, with the built-in defaults when no settings are given."""
    return (kafka or KafkaSettings()).client_config(extra)


def show_client_logs(show: bool) -> None:
    """Let librdkafka's log lines through (the CLI's -v), or silence them: a CLI error is one line, not a log burst
    of reconnect attempts."""
    logging.getLogger(CLIENT_LOGGER).setLevel(logging.DEBUG if show else logging.CRITICAL + 1)
