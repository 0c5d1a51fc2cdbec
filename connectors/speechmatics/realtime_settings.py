"""Settings of the real-time bridge (`bytewax-speechmatics realtime`): plain values, no environment.

`Settings.from_env` fills them (SPEECHMATICS_API_KEY, SPEECHMATICS_RT_URL, BWSM_RT_*). The key is never in a repr.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bytewax.speechmatics.schemas.errors import SettingsError

OVERFLOW = ("wait", "batch")


@dataclass(frozen=True)
class BridgeSettings:
    """One bridge process: where the real-time API is, how many sessions it may hold, how it retries and commits."""

    api_key: str | None = field(default=None, repr=False)  # None: the SDK reads SPEECHMATICS_API_KEY itself
    rt_url: str | None = None  # None: the SDK's SPEECHMATICS_RT_URL, else the SaaS endpoint
    group: str = "bwsm-realtime"  # the bridge's own consumer group on the audio topic
    max_sessions: int = 10  # BWSM_RT_MAX_SESSIONS: concurrent sessions of this process (the API's quota)
    overflow: str = "wait"  # a call beyond max_sessions waits for a session, or goes batch-only
    start_rate: float = 5.0  # session starts per second, at most
    max_delay: float = 1.0  # the API's max_delay (0.7-4 s): how long a word may stay partial
    partials: bool = True  # ask for AddPartialTranscript
    max_attempts: int = 3  # sessions tried per call for errors that may be retried (quota, dropped socket)
    commit_seconds: float = 1.0  # how often acknowledged audio is committed (the most a resume re-sends)

    def __post_init__(self) -> None:
        if self.overflow not in OVERFLOW:
            raise SettingsError(f"BWSM_RT_OVERFLOW must be one of {', '.join(OVERFLOW)}, got {self.overflow!r}")
        if not 0.7 <= self.max_delay <= 4.0:
            raise SettingsError(f"BWSM_RT_MAX_DELAY must be from 0.7 to 4 (the API's range), got {self.max_delay}")
