"""The producer's Kafka settings: keyword names, callbacks kept, idempotence not negotiable."""

from __future__ import annotations

import pytest


def test_producer_settings_take_keyword_names_and_keep_idempotence() -> None:
    from bytewax.speechmatics.connectors.kafka.delivery import kafka_config

    def on_error(err: object) -> None:
        pass

    conf = kafka_config(["a:1", "b:2"], {"linger_ms": 20, "security.protocol": "SSL", "error_cb": on_error})
    assert conf["bootstrap.servers"] == "a:1,b:2" and conf["linger.ms"] == 20 and conf["error_cb"] is on_error
    assert conf["security.protocol"] == "SSL" and conf["enable.idempotence"] is True
    with pytest.raises(ValueError, match="idempotence"):
        kafka_config("a:1", {"enable_idempotence": False})
