"""The flow's one configuration: frozen dataclasses by concern, read from the environment in one place.

`Settings()` is the built-in defaults; `Settings.from_env(env)` is the only function of the library that reads
environment variables (the command line and the `flow` factories of `flows.microbatch` and
`flows.final_transcripts` call it). Operators take their group as an argument
(`chunk_calls(..., config=settings.chunking)`) and never read the environment.

Each field that a variable sets names it in its metadata (`env(...)`), so the README's table is checked against
these dataclasses by a test, and a bad value raises one SettingsError naming the variable and what it allows.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import orjson

from bytewax.speechmatics.connectors.kafka.config import KafkaSettings, properties_from
from bytewax.speechmatics.connectors.kafka.source_rules import OFFSET_RESETS
from bytewax.speechmatics.connectors.logs import LoggingSettings
from bytewax.speechmatics.connectors.speechmatics.journal import cache_journal_dir
from bytewax.speechmatics.connectors.speechmatics.realtime_settings import OVERFLOW, BridgeSettings
from bytewax.speechmatics.connectors.speechmatics.settings import (
    DIARIZATIONS,
    WAIT_MODES,
    SubmitSettings,
    check_transcription_extra,
    parse_additional_vocab,
    parse_channel_labels,
)
from bytewax.speechmatics.flows.chunking import POLICIES, ChunkConfig
from bytewax.speechmatics.flows.collector import CollectSettings
from bytewax.speechmatics.flows.decode import DecodeSettings
from bytewax.speechmatics.flows.realtime import RealtimeSettings
from bytewax.speechmatics.flows.run_args import RunArgs, parse_run_args, process_argv
from bytewax.speechmatics.flows.stitching import StitchSettings
from bytewax.speechmatics.flows.vad import AGGRESSIVENESS, VAD_FRAME_MS
from bytewax.speechmatics.schemas.errors import SettingsError, bounds_in_words, in_words

__all__ = ["VARIABLES", "RunSettings", "Settings", "SettingsError", "TopicSettings", "Variable", "WorkerSettings"]


@dataclass(frozen=True)
class TopicSettings:
    """The four topics, and how `run` creates missing ones."""

    audio: str = "calls.audio"
    realtime: str = "calls.rt"
    transcripts: str = "calls.transcripts"
    dead_letters: str = "calls.audio.dlq"
    partitions: int = 4
    create: bool = False
    final_transcripts: str = "calls.transcripts.final"  # one document per call (flows/final_transcripts.py)

    def names(self, realtime: bool = True) -> list[str]:
        """Every topic the flow reads or writes."""
        inputs = [self.audio, self.realtime] if realtime else [self.audio]
        return [*inputs, self.transcripts, self.dead_letters]


@dataclass(frozen=True)
class WorkerSettings:
    """The embedded local worker, started by `build_flow` when no API key is set (needs the `[worker]` extra)."""

    embedded: bool = True
    engine: str = "whisper"
    parallel: int = 1


@dataclass(frozen=True)
class RunSettings:
    """What `bytewax-speechmatics run` hands to Bytewax's runner."""

    workers: int | None = None
    recovery_dir: str | None = None
    recovery_partitions: int = 4
    snapshot_seconds: int = 5
    backup_seconds: int = 0
    #: Allocations between two young-generation garbage collections in the flow's process (BWSM_GC_THRESHOLD;
    #: 0 keeps Python's 700). A frame's headers are a dozen short-lived objects, so at Python's default the
    #: collector runs every few dozen frames and cost a quarter of the ingest CPU. Set by the entry points
    #: (`run`'s flow process, `microbatch:flow(tune=True)`); a flow you build yourself keeps your process's setting.
    gc_threshold: int = 100_000
    #: Seconds a thread may hold the GIL while another waits (BWSM_GIL_SWITCH_SECONDS; 0 keeps Python's 0.005).
    #: The submission loop thread does a system call per request step and must win the GIL back from the
    #: dataflow's worker thread after each; at Python's 5 ms it waits that long every time, and past a few hundred
    #: requests a second the loop falls behind while the CPU is half idle. Set by the entry point, like gc_threshold.
    switch_interval: float = 0.001
    #: Port of the flow process's admin endpoint (/live, /ready, /status, /metrics; BWSM_ADMIN_PORT); 0 = none.
    admin_port: int = 0
    #: Seconds a source partition may go unpolled before /live fails (BWSM_LIVE_STALL_SECONDS; 0 = never): a
    #: worker polls its partitions between steps, so a step that never returns stops the polls, and a liveness
    #: probe that fails is what gets the process restarted from its last snapshot.
    live_stall_seconds: float = 120.0


@dataclass(frozen=True)
class Settings:
    """Every setting of the flow, by concern; `Settings()` is the built-in defaults."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    decoding: DecodeSettings = field(default_factory=DecodeSettings)
    chunking: ChunkConfig = field(default_factory=ChunkConfig)
    submission: SubmitSettings = field(default_factory=SubmitSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    stitching: StitchSettings = field(default_factory=StitchSettings)
    realtime: RealtimeSettings = field(default_factory=RealtimeSettings)
    bridge: BridgeSettings = field(default_factory=BridgeSettings)  # `bytewax-speechmatics realtime`
    collect: CollectSettings = field(default_factory=CollectSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    run: RunSettings = field(default_factory=RunSettings)

    def __post_init__(self) -> None:
        # The cluster's POST-limit lending reports go through the flow's own Kafka unless told otherwise.
        if self.submission.kafka is None:
            object.__setattr__(self, "submission", replace(self.submission, kafka=self.kafka))
        # Lending reports name their cluster (BWSM_CLUSTER_ID): by default its topics, which no other deployment uses.
        if self.submission.cluster_id is None:
            object.__setattr__(self, "submission", replace(
                self.submission, cluster_id=f"{self.topics.audio}>{self.topics.transcripts}"))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, argv: Sequence[str] | None = None) -> Settings:
        """Settings from environment variables (unset or empty = default); `argv` is the `python -m bytewax.run`
        command line after the program (read by Bytewax's own parser: flows/run_args.py; by default this
        process's own when it was started that way), which places the process in its cluster and its journal
        beside the recovery store.

        Raises:
            SettingsError: a variable has a value that cannot be used; the message names it and what it allows.
        """
        env = os.environ if env is None else env
        run_args = parse_run_args(process_argv() if argv is None else argv, env)
        groups: dict[str, dict[str, Any]] = {f.name: {} for f in fields(cls)}
        for var in VARIABLES:
            raw = env.get(var.name, "").strip()
            if raw:
                groups[var.group][var.field] = var.parse(raw, var.name)
        groups["kafka"]["properties"] = properties_from(env)
        sub = groups["submission"]
        sub["api_key"] = env.get("SPEECHMATICS_API_KEY") or None  # the SDK's own variables
        sub["batch_url"] = env.get("SPEECHMATICS_BATCH_URL") or None
        groups["bridge"].update(api_key=sub["api_key"], rt_url=env.get("SPEECHMATICS_RT_URL") or None)
        sub.setdefault("cluster_processes", run_args.processes)
        if run_args.process_id >= sub["cluster_processes"]:
            raise SettingsError(f"BWSM_CLUSTER_PROCESSES={sub['cluster_processes']} but this is process "
                                f"{run_args.process_id} (-i): the index must be below the process count")
        sub["process_index"] = run_args.process_id
        sub.setdefault("journal_dir", str(default_journal_dir(run_args, env)))
        sub.setdefault("journal_retention", replay_horizon(
            run_args, sub.get("max_chunk_seconds", SubmitSettings.max_chunk_seconds)))
        built = {}
        for f in fields(cls):
            try:
                built[f.name] = f.default_factory(**groups[f.name])  # type: ignore[misc]
            except SettingsError:
                raise
            except (TypeError, ValueError) as exc:
                raise SettingsError(f"{f.name} settings: {exc}") from None
        return cls(**built)

    def with_endpoint(self, url: str, api_key: str) -> Settings:
        """These settings with submission going to another API endpoint (the embedded local worker)."""
        return replace(self, submission=replace(self.submission, batch_url=url, api_key=api_key))


#: Running seconds a journal entry outlives the longest replay Bytewax's recovery allows (see replay_horizon).
REPLAY_MARGIN_SECONDS = 3600.0


def replay_horizon(run_args: RunArgs, max_chunk_seconds: float) -> float:
    """How long (in the journal's running time: downtime does not count) a job journal entry can still be needed.

    Bytewax resumes from the last epoch every worker snapshotted, and keeps older snapshots for the backup interval
    (`-b`) so that a restored backup of the recovery store still resumes; older ones are deleted. An entry is
    written at the intent and the job id, and again at the done mark; its chunk's job ends within
    `max_chunk_seconds` of the write, its outcome is in a snapshot within one snapshot interval (`-s`) after that,
    and no snapshot a resume may start from is older than the backup interval behind it. Past that sum, no
    replay can bring the chunk back without its job id in state. The margin covers a resumed flow catching up on
    the replayed input. Defaults: 900 + 10 + 0 + 3600 = 4510 s.
    """
    snapshot = run_args.snapshot_seconds if run_args.snapshot_seconds is not None else 10.0
    return max_chunk_seconds + snapshot + (run_args.backup_seconds or 0.0) + REPLAY_MARGIN_SECONDS


def default_journal_dir(run_args: RunArgs, env: Mapping[str, str]) -> Path:
    """BWSM_JOURNAL_DIR, else next to the recovery directory, else the user's cache directory."""
    if env.get("BWSM_JOURNAL_DIR"):
        return Path(env["BWSM_JOURNAL_DIR"])
    if run_args.recovery_directory is not None:
        path = Path(run_args.recovery_directory).resolve()
        return path.with_name(path.name + "-bwsm-journal")
    return cache_journal_dir(Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else None)


# ---- the variables -----------------------------------------------------------------------------------------------

Parser = Callable[[str, str], Any]


@dataclass(frozen=True)
class Variable:
    """One environment variable: the field it sets, how it is parsed, and its default as the README shows it."""

    name: str
    group: str
    field: str
    parse: Parser


def _number(kind: type, low: float | None = None, above: float | None = None) -> Parser:
    noun = "a whole number" if kind is int else "a number"
    bound = bounds_in_words(low, None) if low is not None else bounds_in_words(above, None, above=True)

    def parse(raw: str, name: str) -> Any:
        try:
            value = kind(raw)
        except ValueError:
            value = None
        if (value is None or (kind is float and not math.isfinite(value)) or (low is not None and value < low)
                or (above is not None and value <= above)):
            raise SettingsError(f"{name} must be {noun}{bound}, got {raw[:40]!r}")
        return value
    return parse


def _flag(raw: str, name: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be a boolean (1/0, true/false, yes/no, on/off), got {raw[:40]!r}")


def _text(raw: str, _name: str) -> str:
    return raw


def _choice(*allowed: str) -> Parser:
    def parse(raw: str, name: str) -> str:
        value = raw.lower()
        if value not in allowed:
            raise SettingsError(f"{name} must be {in_words(allowed)}, got {raw[:40]!r}")
        return value
    return parse


def _int_choice(*allowed: int) -> Parser:
    def parse(raw: str, name: str) -> int:
        if not raw.isdigit() or int(raw) not in allowed:
            raise SettingsError(f"{name} must be {in_words(allowed)}, got {raw[:40]!r}")
        return int(raw)
    return parse


def _json_object(raw: str, name: str) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SettingsError(f"{name} must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise SettingsError(f"{name} must be a JSON object, got {type(value).__name__}")
    return value


def _wrap(parse: Callable[[str], Any]) -> Parser:
    def run(raw: str, name: str) -> Any:
        try:
            return parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{name}: {exc}") from None
    return run


def _transcription_config(raw: str, name: str) -> dict[str, Any]:
    """A JSON object of the SDK's TranscriptionConfig fields (an unknown field names the allowed ones)."""
    value = _json_object(raw, name)
    try:
        check_transcription_extra(value)
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}") from None
    return value


_POSITIVE, _NONNEG = _number(float, above=0.0), _number(float, low=0.0)
_COUNT, _INT = _number(int, low=1), _number(int, low=0)


def _v(name: str, group: str, field_name: str, parse: Parser) -> Variable:
    return Variable(name, group, field_name, parse)


VARIABLES: tuple[Variable, ...] = (
    _v("KAFKA_BOOTSTRAP_SERVERS", "kafka", "bootstrap_servers", _text),
    _v("BWSM_SOURCE_BATCH_SIZE", "kafka", "source_batch_size", _COUNT),
    _v("BWSM_SOURCE_PACE_SECONDS", "kafka", "source_pace_seconds", _NONNEG),
    _v("BWSM_SOURCE_OFFSET_RESET", "kafka", "source_offset_reset", _choice(*OFFSET_RESETS)),
    _v("BWSM_AUDIO_TOPIC", "topics", "audio", _text),
    _v("BWSM_RT_TOPIC", "topics", "realtime", _text),
    _v("BWSM_TRANSCRIPT_TOPIC", "topics", "transcripts", _text),
    _v("BWSM_DLQ_TOPIC", "topics", "dead_letters", _text),
    _v("BWSM_TOPIC_PARTITIONS", "topics", "partitions", _COUNT),
    _v("BWSM_CREATE_TOPICS", "topics", "create", _flag),
    _v("BWSM_MAX_FRAME_SECONDS", "decoding", "max_frame_seconds", _POSITIVE),
    _v("BWSM_CHUNK_POLICY", "chunking", "policy", _choice(*POLICIES)),
    _v("BWSM_CHUNK_SECONDS", "chunking", "chunk_seconds", _POSITIVE),
    _v("BWSM_CHUNK_OVERLAP_SECONDS", "chunking", "overlap_seconds", _NONNEG),
    _v("BWSM_VAD_MIN_SECONDS", "chunking", "vad_min_seconds", _POSITIVE),
    _v("BWSM_VAD_MAX_SECONDS", "chunking", "vad_max_seconds", _POSITIVE),
    _v("BWSM_VAD_MIN_SILENCE_SECONDS", "chunking", "vad_min_silence_seconds", _POSITIVE),
    _v("BWSM_VAD_AGGRESSIVENESS", "chunking", "vad_aggressiveness", _int_choice(*AGGRESSIVENESS)),
    _v("BWSM_VAD_FRAME_MS", "chunking", "vad_frame_ms", _int_choice(*VAD_FRAME_MS)),
    _v("BWSM_IDLE_TIMEOUT_SECONDS", "chunking", "idle_timeout_seconds", _POSITIVE),
    _v("BWSM_FORGET_SECONDS", "chunking", "forget_seconds", _POSITIVE),
    _v("BWSM_REORDER_WINDOW_FRAMES", "chunking", "reorder_window_frames", _INT),
    _v("BWSM_MAX_GAP_FRAMES", "chunking", "max_gap_frames", _INT),
    _v("BWSM_POST_RATE", "submission", "post_rate", _number(float, low=0.01)),
    _v("BWSM_GET_RATE", "submission", "get_rate", _number(float, low=0.01)),
    _v("BWSM_MAX_IN_FLIGHT", "submission", "max_in_flight", _COUNT),
    _v("BWSM_MAX_ATTEMPTS", "submission", "max_attempts", _COUNT),
    _v("BWSM_MAX_CHUNK_SECONDS", "submission", "max_chunk_seconds", _number(float, low=1.0)),
    _v("BWSM_WAIT_MODE", "submission", "wait_mode", _choice(*WAIT_MODES)),
    _v("BWSM_WAIT_SECONDS", "submission", "wait_seconds", _COUNT),
    _v("BWSM_CLUSTER_PROCESSES", "submission", "cluster_processes", _COUNT),
    _v("BWSM_RATE_MARGIN", "submission", "rate_margin", _NONNEG),
    _v("BWSM_RATE_LENDING", "submission", "rate_lending", _flag),
    _v("BWSM_LIMITER_TOPIC", "submission", "limiter_topic", _text),
    _v("BWSM_LIMITER_SLOT_SECONDS", "submission", "limiter_slot_seconds", _number(float, low=0.05)),
    _v("BWSM_CLOCK_GUARD_SECONDS", "submission", "clock_guard", _NONNEG),
    _v("BWSM_CLUSTER_ID", "submission", "cluster_id", _text),
    _v("BWSM_AIMD_DECREASE", "submission", "aimd_decrease", _POSITIVE),
    _v("BWSM_AIMD_FLOOR", "submission", "aimd_floor", _POSITIVE),
    _v("BWSM_AIMD_RECOVERY", "submission", "aimd_recovery", _NONNEG),
    _v("BWSM_BACKOFF_BASE", "submission", "backoff_base", _NONNEG),
    _v("BWSM_BACKOFF_CAP", "submission", "backoff_cap", _NONNEG),
    _v("BWSM_POLL_MIN", "submission", "poll_min", _number(float, low=0.01)),
    _v("BWSM_FLEET_REFRESH_SECONDS", "submission", "fleet_refresh", _number(float, low=0.01)),
    _v("BWSM_FLEET_FAILOVER_SECONDS", "submission", "fleet_failover", _number(float, low=0.1)),
    _v("BWSM_FLEET_LAST_CHUNK_ENGINES", "submission", "fleet_last_chunk_engines", _COUNT),
    _v("BWSM_POLL_MAX", "submission", "poll_max", _number(float, low=0.01)),
    _v("BWSM_COLLECT_INTERVAL", "submission", "collect_interval", _number(float, low=0.001)),
    _v("BWSM_SKIP_SILENCE", "submission", "skip_silence", _flag),
    _v("BWSM_SILENCE_KEEP_SECONDS", "submission", "silence_keep_seconds", _NONNEG),
    _v("BWSM_JOURNAL_DIR", "submission", "journal_dir", _text),
    _v("BWSM_JOURNAL_RETENTION_SECONDS", "submission", "journal_retention", _NONNEG),
    _v("BWSM_LANGUAGE", "submission", "language", _text),
    _v("BWSM_OPERATING_POINT", "submission", "operating_point", _text),
    _v("BWSM_DIARIZATION", "submission", "diarization", _choice(*DIARIZATIONS)),
    _v("BWSM_CHANNEL_LABELS", "submission", "channel_labels", _wrap(parse_channel_labels)),
    _v("BWSM_ADDITIONAL_VOCAB", "submission", "additional_vocab", _wrap(parse_additional_vocab)),
    _v("BWSM_TRANSCRIPTION_CONFIG", "submission", "transcription_extra", _transcription_config),
    _v("BWSM_PARALLEL_ENGINES", "submission", "parallel_engines", _COUNT),
    _v("BWSM_USER_ID", "submission", "user_id", _text),
    _v("BWSM_WEBHOOK_URL", "submission", "webhook_url", _text),
    _v("BWSM_WEBHOOK_HOST", "submission", "webhook_host", _text),
    _v("BWSM_WEBHOOK_PORT", "submission", "webhook_port", _INT),
    _v("BWSM_WEBHOOK_SECRET", "submission", "webhook_secret", _text),
    _v("BWSM_WEBHOOK_FALLBACK_POLL", "submission", "webhook_fallback_poll", _number(float, low=0.1)),
    _v("BWSM_EMBEDDED_WORKER", "worker", "embedded", _flag),
    _v("BWSM_WORKER_ENGINE", "worker", "engine", _choice("whisper", "reference")),
    _v("BWSM_WORKER_PARALLEL", "worker", "parallel", _COUNT),
    _v("BWSM_STITCH_HOLD_SECONDS", "stitching", "hold_seconds", _POSITIVE),
    _v("BWSM_STITCH_CONTEXT_SECONDS", "stitching", "context_seconds", _POSITIVE),
    _v("BWSM_STITCH_SEAM_TOLERANCE", "stitching", "seam_tolerance", _NONNEG),
    _v("BWSM_STITCH_LINGER_SECONDS", "stitching", "linger_seconds", _NONNEG),
    _v("BWSM_REALTIME", "realtime", "enabled", _flag),
    _v("BWSM_RT_IDLE_SECONDS", "realtime", "idle_seconds", _POSITIVE),
    _v("BWSM_RT_GROUP", "bridge", "group", _text),
    _v("BWSM_RT_MAX_SESSIONS", "bridge", "max_sessions", _COUNT),
    _v("BWSM_RT_OVERFLOW", "bridge", "overflow", _choice(*OVERFLOW)),
    _v("BWSM_RT_START_RATE", "bridge", "start_rate", _POSITIVE),
    _v("BWSM_RT_MAX_DELAY", "bridge", "max_delay", _POSITIVE),
    _v("BWSM_RT_PARTIALS", "bridge", "partials", _flag),
    _v("BWSM_RT_MAX_ATTEMPTS", "bridge", "max_attempts", _COUNT),
    _v("BWSM_RT_COMMIT_SECONDS", "bridge", "commit_seconds", _POSITIVE),
    _v("BWSM_FINAL_TOPIC", "topics", "final_transcripts", _text),
    _v("BWSM_COLLECT_IDLE_SECONDS", "collect", "idle_seconds", _POSITIVE),
    _v("BWSM_COLLECT_FORGET_SECONDS", "collect", "forget_seconds", _POSITIVE),
    _v("BWSM_LOG_LEVEL", "logging", "level", _choice("debug", "info", "warning", "error")),
    _v("BWSM_LOG_FORMAT", "logging", "format", _choice("text", "json")),
    _v("BWSM_WORKERS", "run", "workers", _COUNT),
    _v("BWSM_RECOVERY_DIR", "run", "recovery_dir", _text),
    _v("BWSM_RECOVERY_PARTITIONS", "run", "recovery_partitions", _COUNT),
    _v("BWSM_SNAPSHOT_SECONDS", "run", "snapshot_seconds", _COUNT),
    _v("BWSM_BACKUP_SECONDS", "run", "backup_seconds", _INT),
    _v("BWSM_GC_THRESHOLD", "run", "gc_threshold", _INT),
    _v("BWSM_GIL_SWITCH_SECONDS", "run", "switch_interval", _NONNEG),
    _v("BWSM_ADMIN_PORT", "run", "admin_port", _INT),
    _v("BWSM_LIVE_STALL_SECONDS", "run", "live_stall_seconds", _NONNEG),
)
