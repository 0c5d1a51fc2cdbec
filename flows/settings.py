"""The flow's own settings (topics, partitions, sources), read from the environment once at start-up.

Chunking, submission and Kafka security settings live beside the code they configure; this module only holds what
wires the dataflow together.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from bytewax.speechmatics.connectors.kafka.config import bootstrap_servers
from bytewax.speechmatics.flows.env import SettingsError, env_flag, env_float, env_int
from bytewax.speechmatics.schemas.frames import DEFAULT_MAX_FRAME_SECONDS


def _positive(value: float, name: str) -> float:
    if value <= 0:
        raise SettingsError(f"{name} must be > 0, got {value}")
    return value


@dataclass(frozen=True)
class FlowSettings:
    """Topic names, partition count for topics the runner creates, and source options."""

    brokers: tuple[str, ...]
    audio_topic: str = "calls.audio"
    rt_topic: str = "calls.rt"
    transcript_topic: str = "calls.transcripts"
    dlq_topic: str = "calls.audio.dlq"
    topic_partitions: int = 4
    realtime: bool = True
    source_batch_size: int = 1000
    max_frame_seconds: float = DEFAULT_MAX_FRAME_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FlowSettings:
        env = os.environ if env is None else env
        return cls(
            brokers=tuple(bootstrap_servers(env).split(",")),
            audio_topic=env.get("BWSM_AUDIO_TOPIC", cls.audio_topic),
            rt_topic=env.get("BWSM_RT_TOPIC", cls.rt_topic),
            transcript_topic=env.get("BWSM_TRANSCRIPT_TOPIC", cls.transcript_topic),
            dlq_topic=env.get("BWSM_DLQ_TOPIC", cls.dlq_topic),
            topic_partitions=env_int(env, "BWSM_TOPIC_PARTITIONS", cls.topic_partitions),
            realtime=env_flag(env, "BWSM_REALTIME", cls.realtime),
            source_batch_size=env_int(env, "BWSM_SOURCE_BATCH_SIZE", cls.source_batch_size),
            max_frame_seconds=_positive(env_float(env, "BWSM_MAX_FRAME_SECONDS", cls.max_frame_seconds),
                                        "BWSM_MAX_FRAME_SECONDS"),
        )

    def topics(self) -> list[str]:
        """Every topic the flow reads or writes."""
        inputs = [self.audio_topic, self.rt_topic] if self.realtime else [self.audio_topic]
        return [*inputs, self.transcript_topic, self.dlq_topic]
