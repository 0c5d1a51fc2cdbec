"""What a real-time session may ask for: the spec's transcription_config checks, and the error they end it with.

Checked against the public spec (`spec/realtime.yaml`): the fields of TranscriptionConfig, `max_delay` 0.7-4 s,
`max_delay_mode` flexible/fixed, `end_of_utterance_silence_trigger` 0-2 s, what SetRecognitionConfig may change
(MidSessionTranscriptionConfig), and multichannel sessions (channel diarization with two or more labels).
"""

from __future__ import annotations

from typing import Any

ENCODINGS = ("pcm_s16le", "pcm_f32le", "mulaw")
#: Fields SetRecognitionConfig may change (the spec's MidSessionTranscriptionConfig; language only unchanged).
MID_SESSION = frozenset({"max_delay", "max_delay_mode", "enable_partials", "conversation_config",
                         "audio_filtering_config", "language"})
TRANSCRIPTION_FIELDS = frozenset({
    "language", "model", "operating_point", "output_locale", "additional_vocab", "punctuation_overrides", "domain",
    "enable_entities", "audio_filtering_config", "transcript_filtering_config", "max_delay", "max_delay_mode",
    "enable_partials", "speaker_diarization_config", "streaming_mode", "conversation_config", "ctrl",
    "channel_diarization_labels", "diarization", "language_hints", "language_hints_strict",
})
DIARIZATION = ("none", "speaker", "channel", "channel_and_speaker")


class SessionError(Exception):
    """Ends a session with an `Error` message of the spec's `type`."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind, self.reason = kind, reason


def check_config(config: dict[str, Any]) -> None:
    unknown = set(config) - TRANSCRIPTION_FIELDS
    if unknown:
        raise SessionError("invalid_config", f"unknown transcription_config fields {sorted(unknown)}")
    language = config.get("language")
    if not isinstance(language, str) or not language.replace("-", "").isalpha() or len(language) > 8:
        raise SessionError("invalid_language", "language must be a language code such as 'en'")
    check_mid_session(config)
    if config.get("diarization", "none") not in DIARIZATION:
        raise SessionError("invalid_config", f"diarization must be one of {list(DIARIZATION)}")


def check_mid_session(config: dict[str, Any]) -> None:
    delay = config.get("max_delay")
    if delay is not None and (isinstance(delay, bool) or not isinstance(delay, int | float) or not 0.7 <= delay <= 4):
        raise SessionError("invalid_config", "max_delay must be a number from 0.7 to 4")
    if config.get("max_delay_mode", "flexible") not in ("flexible", "fixed"):
        raise SessionError("invalid_config", "max_delay_mode must be flexible or fixed")
    trigger = (config.get("conversation_config") or {}).get("end_of_utterance_silence_trigger")
    if trigger is not None and (not isinstance(trigger, int | float) or not 0 <= trigger <= 2):
        raise SessionError("invalid_config", "end_of_utterance_silence_trigger must be from 0 to 2")


def channel_labels(config: dict[str, Any]) -> list[Any]:
    """The channels of a multichannel session (channel diarization with two or more labels), else []."""
    labels = config.get("channel_diarization_labels")
    if config.get("diarization") not in ("channel", "channel_and_speaker") or not isinstance(labels, list):
        return []
    if len(labels) < 2 or len(set(map(str, labels))) != len(labels):
        raise SessionError("invalid_config", "channel_diarization_labels must name two or more distinct channels")
    return labels
