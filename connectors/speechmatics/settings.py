"""Submission settings: the API, throttle, retries, waiting, and the transcription config of every job.

Plain values, no environment: `bytewax.speechmatics.flows.Settings.from_env` fills them from BWSM_* variables and
SPEECHMATICS_API_KEY / SPEECHMATICS_BATCH_URL. The key never appears in a repr or a log.

A job's transcription config, in order of precedence (later wins): the flow's fields (BWSM_LANGUAGE, ...), then
BWSM_TRANSCRIPTION_CONFIG, then the call's own settings from its start message (`CallConfig`, each field set
overriding the flow's default), then the speaker enrolment of speaker chaining.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
from speechmatics.batch import TranscriptionConfig

from bytewax.speechmatics.connectors.kafka.config import KafkaSettings
from bytewax.speechmatics.connectors.speechmatics.capabilities import EngineCapabilities, capability_warnings
from bytewax.speechmatics.schemas.call_start import NO_CONFIG, CallConfig
from bytewax.speechmatics.schemas.errors import SettingsError, in_words

WAIT_MODES = ("poll", "wait", "webhook")
DIARIZATIONS = ("none", "speaker", "channel")
_RESERVED = re.compile(r"^(S\d+|UU)$")


def is_reserved(label: str) -> bool:
    """Speaker labels the API hands out itself (S1, S2, ..., UU): ours must never look like them."""
    return bool(_RESERVED.match(label))


def parse_channel_labels(raw: str) -> tuple[str, ...]:
    """Comma-separated channel labels (agent,caller): distinct, non-empty, one per channel, not API labels."""
    labels = tuple(part.strip() for part in raw.split(","))
    if len(labels) < 2 or any(not label for label in labels) or len(set(labels)) != len(labels):
        raise ValueError(f"must be distinct non-empty labels separated by commas, one per channel (for example "
                         f"agent,caller), got {raw[:80]!r}")
    bad = [label for label in labels if is_reserved(label)]
    if bad:
        raise ValueError(f"channel labels must not look like the API's own speaker labels (S1, S2, ..., UU), got "
                         f"{', '.join(bad)}")
    return labels


BATCH_URL_EXAMPLE = "http://127.0.0.1:18000/v2"


def parse_batch_urls(raw: str) -> tuple[str, ...]:
    """SPEECHMATICS_BATCH_URL as one URL, or several on-prem workers separated by commas (a fleet): each an http(s)
    URL with a host and a valid port, none twice, and never the Speechmatics SaaS in a list (the SaaS is one
    endpoint with its own rate limits). SettingsError, one line, otherwise."""
    urls = tuple(part.strip() for part in raw.split(","))
    what = "SPEECHMATICS_BATCH_URL must be an http(s) URL such as " + BATCH_URL_EXAMPLE + \
        " (or several on-prem workers separated by commas)"
    for position, url in enumerate(urls, 1):
        where = f"URL {position} of {len(urls)}" if len(urls) > 1 else "got"
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises on a port that is not a number in range
        except ValueError:
            raise SettingsError(f"{what}; {where} has an invalid port: {url[:80]!r}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url) \
                or parts.query or parts.fragment or "://" in parts.path:  # "://" in the path: URLs run together
            raise SettingsError(f"{what}; {where} is not one: {url[:80]!r}")
    if len(set(urls)) != len(urls):
        raise SettingsError(f"{what}; a worker is listed twice: {raw[:120]!r}")
    if len(urls) > 1 and any((urlsplit(u).hostname or "").endswith("speechmatics.com") for u in urls):
        raise SettingsError("SPEECHMATICS_BATCH_URL: the Speechmatics SaaS is one endpoint; only on-prem workers "
                            "may be listed together")
    return urls


def channel_config(labels: tuple[str, ...]) -> dict[str, Any]:
    """TranscriptionConfig fields for two-channel calls: each channel's words carry its label."""
    return {"diarization": "channel", "channel_diarization_labels": list(labels)}


def parse_additional_vocab(raw: str) -> list[dict[str, Any]]:
    """Custom vocabulary: a JSON list (strings or {"content", "sounds_like"}) or a comma-separated list."""
    raw = raw.strip()
    if not raw:
        return []
    if raw.startswith("["):
        try:
            items = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
    else:
        items = [part.strip() for part in raw.split(",")]
    out: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, str) and item:
            out.append({"content": item})
        elif isinstance(item, dict) and isinstance(item.get("content"), str):
            out.append(item)
        elif item != "":
            raise ValueError(f"each entry must be a word or an object with a content field (and optionally "
                             f"sounds_like), got {_json_kind(item)}")
    return out


def _json_kind(value: Any) -> str:
    """What a JSON value is, in words (for messages that must not echo the value)."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return f"an object with the fields {', '.join(map(str, value)) or 'none'}" if value else "an empty object"
    if isinstance(value, list):
        return "a list"
    return "an empty word" if value == "" else "null" if value is None else "a string"


#: The fields of the SDK's TranscriptionConfig (what BWSM_TRANSCRIPTION_CONFIG may set).
TRANSCRIPTION_FIELDS = tuple(f.name for f in dataclasses.fields(TranscriptionConfig))


def check_transcription_extra(extra: Mapping[str, Any]) -> Mapping[str, Any]:
    """BWSM_TRANSCRIPTION_CONFIG's fields, refused when the SDK's TranscriptionConfig has no such field."""
    unknown = [str(name) for name in extra if name not in TRANSCRIPTION_FIELDS]
    if unknown:
        raise ValueError(f"unknown field{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(repr(n[:40]) for n in unknown[:3])} (allowed: {', '.join(TRANSCRIPTION_FIELDS)})")
    return extra


def apply_call_config(fields: dict[str, Any], call: CallConfig, flow_labels: tuple[str, ...]) -> dict[str, Any]:
    """TranscriptionConfig fields with the call's own settings merged over them (each set field wins).

    Diarization is one setting across three fields: a call's `none` removes the flow's diarization (and its channel
    labels and speaker config), `speaker` drops channel labels, `channel` labels the channels with the call's labels,
    else the ones in force, else the flow's. An empty `additional_vocab` turns the flow's vocabulary off.
    """
    out = dict(fields)
    if call.language:
        out["language"] = call.language
    if call.operating_point:  # the SDK's `model` replaces the deprecated `operating_point` field
        out.pop("operating_point", None)
        out["model"] = call.operating_point
    if call.output_locale:
        out["output_locale"] = call.output_locale
    if call.additional_vocab is not None:
        if call.additional_vocab:
            out["additional_vocab"] = [v.to_json() for v in call.additional_vocab]
        else:
            out.pop("additional_vocab", None)
    if call.punctuation_overrides is not None:
        out["punctuation_overrides"] = call.punctuation_overrides.to_json()
    if call.enable_entities is not None:
        out["enable_entities"] = call.enable_entities
    if call.domain:
        out["domain"] = call.domain
    if call.diarization == "none":
        for name in ("diarization", "channel_diarization_labels", "speaker_diarization_config"):
            out.pop(name, None)
    elif call.diarization == "speaker":
        out["diarization"] = "speaker"
        out.pop("channel_diarization_labels", None)
    elif call.diarization == "channel":
        labels = out.get("channel_diarization_labels") or list(flow_labels)
        out.update(channel_config(tuple(labels)))
        out.pop("speaker_diarization_config", None)
    if call.channel_labels and out.get("diarization") == "channel":
        out["channel_diarization_labels"] = list(call.channel_labels)
    return out


@dataclass(frozen=True)
class SubmitSettings:
    """Everything the submission service needs: the API (url and key), limits, retries, waiting, job config.

    `api_key` None: the speechmatics-batch SDK falls back to SPEECHMATICS_API_KEY itself (its documented habit);
    `build_flow` passes the key and URL explicitly (from `Settings.from_env`, or the embedded worker's). The key
    is never in a repr.
    """

    api_key: str | None = field(default=None, repr=False)
    batch_url: str | None = None

    post_rate: float = 10.0
    get_rate: float = 50.0
    max_in_flight: int = 256
    max_attempts: int = 8
    max_chunk_seconds: float = 900.0
    wait_mode: str = "poll"
    wait_seconds: int = 30
    cluster_processes: int = 1  # processes sharing the API limits (from Bytewax's -a / BYTEWAX_ADDRESSES)
    process_index: int = 0  # this process's index in the cluster (-i)
    rate_margin: float = 0.06
    rate_lending: bool = True  # lend unused POST share between processes (lending.py), through `kafka`
    limiter_topic: str = "bwsm.limiter"
    limiter_slot_seconds: float = 0.5
    clock_guard: float = 0.1  # seconds the processes' wall clocks may differ by (added to the lending hold)
    cluster_id: str | None = None  # names the cluster in its lending reports; others' are ignored (BWSM_CLUSTER_ID)
    aimd_decrease: float = 0.7
    aimd_floor: float = 0.25
    aimd_recovery: float = 0.05
    backoff_base: float = 0.25
    backoff_cap: float = 20.0
    poll_min: float = 0.25
    poll_max: float = 5.0
    collect_interval: float = 0.1
    skip_silence: bool = True  # send each chunk's speech with its silences shortened (flows/compaction.py)
    silence_keep_seconds: float = 0.5  # the longest stretch of non-speech sent, half after and half before speech
    journal_dir: str | None = None
    journal_retention: float = 86400.0
    language: str = "en"
    operating_point: str | None = None
    diarization: str | None = None
    channel_labels: tuple[str, ...] = ("agent", "caller")  # for diarization=channel, one label per channel
    additional_vocab: tuple[dict[str, Any], ...] = ()
    transcription_extra: Mapping[str, Any] = field(default_factory=dict)
    parallel_engines: int | None = None
    user_id: str | None = None
    webhook_url: str | None = None
    webhook_host: str = "0.0.0.0"  # noqa: S104 - the receiver must be reachable by the API
    webhook_port: int = 8765
    webhook_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    webhook_fallback_poll: float = 30.0
    #: The brokers of the lending reports (the flow's own Kafka; None: no lending, fixed shares).
    kafka: KafkaSettings | None = field(default=None, repr=False)
    #: Every on-prem worker of a fleet, when SPEECHMATICS_BATCH_URL lists more than one (`batch_url` is then the
    #: first); empty: one endpoint. Filled from `batch_url` itself (a copy keeps it while `batch_url` is its first;
    #: given with `batch_url` as its only URL, one worker is routed by engines as a fleet of one).
    worker_urls: tuple[str, ...] = ()
    fleet_refresh: float = 0.5  # seconds between GET /jobs of each fleet worker (fleet.py)
    fleet_failover: float = 10.0  # seconds a job waits for its silent worker before it is posted to another
    #: A fleet: engines a call's last chunk may ask for when they are free and no job waits (1: off; fleet.py).
    fleet_last_chunk_engines: int = 1
    #: What the engine behind `batch_url` honours, when it is a local worker's (learnt when the flow is built,
    #: connectors/speechmatics/endpoint.py); None: the real API's, which honours every option.
    capabilities: EngineCapabilities | None = None

    def __post_init__(self) -> None:
        if self.diarization == "none":
            object.__setattr__(self, "diarization", None)
        object.__setattr__(self, "channel_labels", tuple(self.channel_labels))
        object.__setattr__(self, "additional_vocab", tuple(self.additional_vocab))
        if self.cluster_processes < 1 or self.process_index < 0:
            raise SettingsError(f"cluster_processes must be >= 1 and process_index >= 0, got "
                                f"{self.cluster_processes}, {self.process_index}")
        if self.wait_mode not in WAIT_MODES:
            raise SettingsError(f"BWSM_WAIT_MODE must be {in_words(WAIT_MODES)}, got {self.wait_mode!r}")
        if self.wait_mode == "webhook" and not self.webhook_url:
            raise SettingsError("BWSM_WAIT_MODE=webhook needs BWSM_WEBHOOK_URL (the URL the API calls back)")
        if self.batch_url is not None:
            urls = parse_batch_urls(self.batch_url)
            fleet = urls if len(urls) > 1 else ()
            if len(urls) == 1 and self.worker_urls and self.worker_urls[0] == urls[0]:
                fleet = parse_batch_urls(",".join(self.worker_urls))  # a copy (`replace`), or a fleet of one
            object.__setattr__(self, "batch_url", urls[0])
            object.__setattr__(self, "worker_urls", fleet)
        else:
            object.__setattr__(self, "worker_urls", ())
        if self.fleet_refresh <= 0 or self.fleet_failover <= 0:
            raise SettingsError("BWSM_FLEET_REFRESH_SECONDS and BWSM_FLEET_FAILOVER_SECONDS must be > 0")
        if self.fleet_last_chunk_engines < 1:
            raise SettingsError(f"BWSM_FLEET_LAST_CHUNK_ENGINES must be >= 1, got {self.fleet_last_chunk_engines}")
        if self.diarization not in (None, *DIARIZATIONS):
            raise SettingsError(f"BWSM_DIARIZATION must be {in_words(DIARIZATIONS)}, got {self.diarization!r}")
        try:
            check_transcription_extra(self.transcription_extra)
        except ValueError as exc:
            raise SettingsError(f"BWSM_TRANSCRIPTION_CONFIG: {exc}") from None
        if self.limiter_slot_seconds <= 0 or self.clock_guard < 0:
            raise SettingsError("BWSM_LIMITER_SLOT_SECONDS must be > 0 and BWSM_CLOCK_GUARD_SECONDS >= 0")
        if not 0 < self.aimd_decrease < 1 or not 0 < self.aimd_floor <= 1:
            raise SettingsError("BWSM_AIMD_DECREASE and BWSM_AIMD_FLOOR must be in (0, 1)")

    @property
    def speaker_chaining(self) -> bool:
        """Speaker diarization labels must carry across chunks, so a call's jobs run one after another (the flow's
        default; a call's own diarization decides for that call: `chains`)."""
        return self.diarization == "speaker"

    def chains(self, call: CallConfig | None = None) -> bool:
        """Whether this call's jobs chain speakers (its effective diarization is `speaker`)."""
        if call is None or call.diarization is None:
            return self._fields(call).get("diarization") == "speaker"
        return call.diarization == "speaker"

    def transcription_config(self, speaker_config: dict[str, Any] | None = None,
                             call: CallConfig | None = None) -> TranscriptionConfig:
        """The SDK's TranscriptionConfig: our fields, then BWSM_TRANSCRIPTION_CONFIG merged over them, then the
        call's own settings (`call`, from its start message), then the speaker enrolment."""
        fields = self._fields(call)
        if speaker_config:
            fields["speaker_diarization_config"] = {**fields.get("speaker_diarization_config", {}), **speaker_config}
        try:
            return TranscriptionConfig(**fields)
        except (TypeError, ValueError) as exc:  # a value the SDK refuses (the fields were checked at construction)
            raise SettingsError(f"BWSM_TRANSCRIPTION_CONFIG or the call's settings: the SDK refuses them: "
                                f"{' '.join(str(exc).split())[:200]}") from exc

    def effective_config(self, call: CallConfig | None = None) -> CallConfig:
        """What a job of this call asks for, as a CallConfig with every field resolved (diarization `none` when
        off; channel labels only with channel diarization)."""
        fields = self.transcription_config(call=call).to_dict()
        diarization = str(fields.get("diarization") or "none")
        labels = fields.get("channel_diarization_labels") if diarization == "channel" else None
        model = fields.get("model") or fields.get("operating_point")
        return CallConfig.from_json({
            "language": fields.get("language"),
            "operating_point": None if model is None else getattr(model, "value", model),
            "output_locale": fields.get("output_locale"),
            "additional_vocab": fields.get("additional_vocab") or [],
            "punctuation_overrides": fields.get("punctuation_overrides"),
            "enable_entities": fields.get("enable_entities"),
            "diarization": diarization,
            "channel_labels": list(labels or self.channel_labels) if diarization == "channel" else None,
            "domain": fields.get("domain"),
        })

    def _fields(self, call: CallConfig | None = None) -> dict[str, Any]:
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
        if call is not None and call != NO_CONFIG:
            fields = apply_call_config(fields, call, self.channel_labels)
        return fields

    def capability_warnings(self, call: CallConfig | None = None) -> tuple[str, ...]:
        """What this call's jobs ask for that the engine cannot do, one warning each (none against the real API).
        A function of the settings and the call's config alone, so a replayed call_started says the same."""
        if self.capabilities is None:
            return ()
        return capability_warnings(self.capabilities, self.transcription_config(call=call).to_dict())

    def job_fingerprint(self, call: CallConfig | None = None) -> str:
        """A stable digest of what shapes a job's transcript besides its audio (the transcription config, the call's
        own settings included): the same chunk under other job settings is another job, never one found again in
        the journal or by lookup. Only job-shaping fields count, so a restart (a new webhook secret, another process
        index) finds its jobs; a call without settings of its own has the flow's fingerprint."""
        shape = {"config": self.transcription_config(call=call).to_dict(), "engines": self.parallel_engines,
                 "user": self.user_id}
        return hashlib.sha256(orjson.dumps(shape, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()[:16]

    def fingerprint(self) -> str:
        """A stable digest of every setting (the key included): one submission service per distinct settings."""
        return hashlib.sha256(orjson.dumps(asdict(self), option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()[:16]
