"""Kafka client settings from the environment, shared by every consumer, producer and admin client.

KAFKA_BOOTSTRAP_SERVERS (default localhost:9092) plus the usual security settings, so SASL/TLS reach every
client the project creates: KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME,
KAFKA_SASL_PASSWORD, KAFKA_SSL_CA_LOCATION, KAFKA_SSL_CERTIFICATE_LOCATION, KAFKA_SSL_KEY_LOCATION.
Any other librdkafka property passes through as KAFKA_CONF_<NAME> with dots written as underscores
(KAFKA_CONF_SOCKET_TIMEOUT_MS=30000 -> socket.timeout.ms=30000).

librdkafka's own log lines go to the `bytewax.speechmatics.librdkafka` logger instead of straight to stderr, so the
command line can keep them out of the way of its one-line errors unless `-v` asks for them (`show_client_logs`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

DEFAULT_BOOTSTRAP = "localhost:9092"
CLIENT_LOGGER = "bytewax.speechmatics.librdkafka"

_NAMED = {
    "KAFKA_SECURITY_PROTOCOL": "security.protocol",
    "KAFKA_SASL_MECHANISM": "sasl.mechanism",
    "KAFKA_SASL_USERNAME": "sasl.username",
    "KAFKA_SASL_PASSWORD": "sasl.password",
    "KAFKA_SSL_CA_LOCATION": "ssl.ca.location",
    "KAFKA_SSL_CERTIFICATE_LOCATION": "ssl.certificate.location",
    "KAFKA_SSL_KEY_LOCATION": "ssl.key.location",
}
_PASSTHROUGH_PREFIX = "KAFKA_CONF_"


def bootstrap_servers(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("KAFKA_BOOTSTRAP_SERVERS") or DEFAULT_BOOTSTRAP


def security_config(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """librdkafka properties for security and pass-through settings (no bootstrap servers)."""
    env = os.environ if env is None else env
    conf = {prop: env[name] for name, prop in _NAMED.items() if env.get(name)}
    for name, value in env.items():
        if name.startswith(_PASSTHROUGH_PREFIX) and value:
            conf[name[len(_PASSTHROUGH_PREFIX) :].lower().replace("_", ".")] = value
    return conf


def client_config(extra: Mapping[str, object] | None = None, env: Mapping[str, str] | None = None) -> dict:
    """A complete confluent-kafka config: bootstrap + security + `extra` (which wins); logs to CLIENT_LOGGER."""
    conf: dict[str, object] = {
        "bootstrap.servers": bootstrap_servers(env), "logger": logging.getLogger(CLIENT_LOGGER), **security_config(env),
    }
    conf.update(extra or {})
    return conf


def show_client_logs(show: bool) -> None:
    """Let librdkafka's log lines through (the CLI's -v), or silence them: a CLI error is one line, not a log burst
    of reconnect attempts."""
    logging.getLogger(CLIENT_LOGGER).setLevel(logging.DEBUG if show else logging.CRITICAL + 1)
