"""Submission settings from the environment (BWSM_*): throttle, retries, waiting, transcription config.

The API key and URL are NOT read here: the speechmatics-batch SDK reads SPEECHMATICS_API_KEY and
SPEECHMATICS_BATCH_URL itself, so the key never passes through our objects (nor our logs or reprs).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from speechmatics.batch import TranscriptionConfig

from bytewax.speechmatics.flows.env import SettingsError, env_float, env_int
from bytewax.speechmatics.flows.speakers import channel_config, channel_labels_from_env

WAIT_MODES = ("poll", "wait", "webhook")







def _json_object(env: Mapping[str, str], name: str) -> dict[str, Any]:
    raw = env.get(name, "").strip()
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SettingsError(f"{name} must be a JSON object: {exc}") from exc
    if not isinstance(value, dict):
        raise SettingsError(f"{name} must be a JSON object, got {type(value).__name__}")
    return value


def _channel_labels(env: Mapping[str, str]) -> tuple[str, ...]:
    try:
        return channel_labels_from_env(env)
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc


def parse_additional_vocab(raw: str) -> list[dict[str, Any]]:
    """BWSM_ADDITIONAL_VOCAB: a JSON list (strings or {"content", "sounds_like"}) or a comma-separated list."""
    raw = raw.strip()
    if not raw:
        return []
    if raw.startswith("["):
        try:
            items = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise SettingsError(f"BWSM_ADDITIONAL_VOCAB is not valid JSON: {exc}") from exc
    else:
        items = [part.strip() for part in raw.split(",")]
    out: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, str) and item:
            out.append({"content": item})
        elif isinstance(item, dict) and isinstance(item.get("content"), str):
            out.append(item)
        elif item != "":
            raise SettingsError(f"BWSM_ADDITIONAL_VOCAB entries must be strings or {{'content': ...}}, got {item!r}")
    return out


@dataclass(frozen=True)
class SubmitSettings:
    """Everything the submitter needs besides the API key; see from_env for the variables."""

    post_rate: float = 10.0
    get_rate: float = 50.0
    max_in_flight: int = 256
    max_attempts: int = 8
    max_chunk_seconds: float = 900.0
    wait_mode: str = "poll"
    wait_seconds: int = 30
    cluster_processes: int | None = None
    rate_margin: float = 0.06
    aimd_decrease: float = 0.7
    aimd_floor: float = 0.25
    aimd_recovery: float = 0.05
    backoff_base: float = 0.25
    backoff_cap: float = 20.0
    poll_min: float = 0.25
    poll_max: float = 5.0
    collect_interval: float = 0.1
    journal_dir: str | None = None
    journal_retention: float = 86400.0
    language: str = "en"
    operating_point: str | None = None
    diarization: str | None = None
    channel_labels: tuple[str, ...] = ("agent", "caller")  # BWSM_CHANNEL_LABELS, for BWSM_DIARIZATION=channel
    additional_vocab: tuple[dict[str, Any], ...] = ()
    transcription_extra: Mapping[str, Any] = field(default_factory=dict)
    parallel_engines: int | None = None
    user_id: str | None = None
    webhook_url: str | None = None
    webhook_host: str = "0.0.0.0"  # noqa: S104 - the receiver must be reachable by the API
    webhook_port: int = 8765
    webhook_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    webhook_fallback_poll: float = 30.0

    def __post_init__(self) -> None:
        if self.wait_mode not in WAIT_MODES:
            raise SettingsError(f"BWSM_WAIT_MODE must be one of {list(WAIT_MODES)}, got {self.wait_mode!r}")
        if self.wait_mode == "webhook" and not self.webhook_url:
            raise SettingsError("BWSM_WAIT_MODE=webhook needs BWSM_WEBHOOK_URL (the URL the API calls back)")
        if self.diarization not in (None, "none", "speaker", "channel"):
            raise SettingsError(f"BWSM_DIARIZATION must be none, speaker or channel, got {self.diarization!r}")
        if not 0 < self.aimd_decrease < 1 or not 0 < self.aimd_floor <= 1:
            raise SettingsError("BWSM_AIMD_DECREASE and BWSM_AIMD_FLOOR must be in (0, 1)")

    @property
    def speaker_chaining(self) -> bool:
        """Speaker diarization labels must carry across chunks, so a call's jobs run one after another."""
        return self.diarization == "speaker"

    def transcription_config(self, speaker_config: dict[str, Any] | None = None) -> TranscriptionConfig:
        """The SDK's TranscriptionConfig: our fields, then BWSM_TRANSCRIPTION_CONFIG merged over them."""
        fields: dict[str, Any] = {"language": self.language}
        if self.operating_point:  # the SDK's `model` replaces the deprecated `operating_point` field
            fields["model"] = self.operating_point
        if self.diarization == "channel":  # each channel's words carry its label (agent, caller, ...)
            fields.update(channel_config(self.channel_labels))
        elif self.diarization and self.diarization != "none":
            fields["diarization"] = self.diarization
        if self.additional_vocab:
            fields["additional_vocab"] = [dict(v) for v in self.additional_vocab]
        fields.update(self.transcription_extra)
        if speaker_config:
            fields["speaker_diarization_config"] = {**fields.get("speaker_diarization_config", {}), **speaker_config}
        try:
            return TranscriptionConfig(**fields)
        except TypeError as exc:
            raise SettingsError(f"BWSM_TRANSCRIPTION_CONFIG has a field the SDK does not know: {exc}") from exc

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SubmitSettings:
        """Read BWSM_* variables (unset or empty = default); raise SettingsError naming a bad one."""
        env = os.environ if env is None else env
        kwargs: dict[str, Any] = {
            "post_rate": env_float(env, "BWSM_POST_RATE", 10.0, 0.01),
            "get_rate": env_float(env, "BWSM_GET_RATE", 50.0, 0.01),
            "max_in_flight": env_int(env, "BWSM_MAX_IN_FLIGHT", 256),
            "max_attempts": env_int(env, "BWSM_MAX_ATTEMPTS", 8),
            "max_chunk_seconds": env_float(env, "BWSM_MAX_CHUNK_SECONDS", 900.0, 1.0),
            "wait_mode": env.get("BWSM_WAIT_MODE", "").strip() or "poll",
            "wait_seconds": env_int(env, "BWSM_WAIT_SECONDS", 30),
            "cluster_processes": env_int(env, "BWSM_CLUSTER_PROCESSES", None),
            "rate_margin": env_float(env, "BWSM_RATE_MARGIN", 0.06),
            "aimd_decrease": env_float(env, "BWSM_AIMD_DECREASE", 0.7),
            "aimd_floor": env_float(env, "BWSM_AIMD_FLOOR", 0.25),
            "aimd_recovery": env_float(env, "BWSM_AIMD_RECOVERY", 0.05),
            "backoff_base": env_float(env, "BWSM_BACKOFF_BASE", 0.25),
            "backoff_cap": env_float(env, "BWSM_BACKOFF_CAP", 20.0),
            "poll_min": env_float(env, "BWSM_POLL_MIN", 0.25, 0.01),
            "poll_max": env_float(env, "BWSM_POLL_MAX", 5.0, 0.01),
            "collect_interval": env_float(env, "BWSM_COLLECT_INTERVAL", 0.1, 0.001),
            "journal_dir": env.get("BWSM_JOURNAL_DIR", "").strip() or None,
            "journal_retention": env_float(env, "BWSM_JOURNAL_RETENTION", 86400.0),
            "language": env.get("BWSM_LANGUAGE", "").strip() or "en",
            "operating_point": env.get("BWSM_OPERATING_POINT", "").strip() or None,
            "diarization": env.get("BWSM_DIARIZATION", "").strip() or None,
            "additional_vocab": tuple(parse_additional_vocab(env.get("BWSM_ADDITIONAL_VOCAB", ""))),
            "transcription_extra": _json_object(env, "BWSM_TRANSCRIPTION_CONFIG"),
            "parallel_engines": env_int(env, "BWSM_PARALLEL_ENGINES", None),
            "user_id": env.get("BWSM_USER_ID", "").strip() or None,
            "channel_labels": _channel_labels(env),
            "webhook_url": env.get("BWSM_WEBHOOK_URL", "").strip() or None,
            "webhook_host": env.get("BWSM_WEBHOOK_HOST", "").strip() or "0.0.0.0",  # noqa: S104
            "webhook_port": env_int(env, "BWSM_WEBHOOK_PORT", 8765, 0),
            "webhook_fallback_poll": env_float(env, "BWSM_WEBHOOK_FALLBACK_POLL", 30.0, 0.1),
        }
        secret = env.get("BWSM_WEBHOOK_SECRET", "").strip()
        if secret:
            kwargs["webhook_secret"] = secret
        return cls(**kwargs)
