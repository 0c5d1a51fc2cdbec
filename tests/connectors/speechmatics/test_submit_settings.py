"""Submission settings from BWSM_* variables (through Settings.from_env): defaults, parsing, named errors."""

from __future__ import annotations

import pytest

from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings, parse_additional_vocab
from bytewax.speechmatics.flows.settings import Settings
from bytewax.speechmatics.schemas.errors import SettingsError


def submission_from_env(env: dict[str, str]) -> SubmitSettings:
    return Settings.from_env(env, []).submission


def test_defaults_hold_the_saas_limits() -> None:
    s = submission_from_env({})
    assert (s.post_rate, s.get_rate, s.wait_mode, s.language) == (10.0, 50.0, "poll", "en")
    config = s.transcription_config().to_dict()
    assert config["language"] == "en" and "diarization" not in config and "additional_vocab" not in config


def test_transcription_settings_pass_through_and_json_merges_last() -> None:
    env = {
        "BWSM_LANGUAGE": "de", "BWSM_OPERATING_POINT": "enhanced", "BWSM_DIARIZATION": "speaker",
        "BWSM_ADDITIONAL_VOCAB": "Bytewax, Speechmatics", "BWSM_TRANSCRIPTION_CONFIG": '{"enable_entities": true}',
        "BWSM_PARALLEL_ENGINES": "2", "BWSM_USER_ID": "tenant-7", "BWSM_POST_RATE": "4.5",
    }
    s = submission_from_env(env)
    config = s.transcription_config({"get_speakers": True}).to_dict()
    assert config["language"] == "de" and config["model"] == "enhanced"
    assert config["diarization"] == "speaker" and config["enable_entities"] is True
    assert config["additional_vocab"] == [{"content": "Bytewax"}, {"content": "Speechmatics"}]
    assert config["speaker_diarization_config"] == {"get_speakers": True}
    assert (s.parallel_engines, s.user_id, s.post_rate, s.speaker_chaining) == (2, "tenant-7", 4.5, True)


def test_additional_vocab_accepts_json_with_sounds_like() -> None:
    vocab = parse_additional_vocab('["gnocchi", {"content": "CEO", "sounds_like": ["C.E.O."]}]')
    assert vocab == [{"content": "gnocchi"}, {"content": "CEO", "sounds_like": ["C.E.O."]}]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"BWSM_POST_RATE": "fast"}, "BWSM_POST_RATE"),
        ({"BWSM_MAX_ATTEMPTS": "0"}, "BWSM_MAX_ATTEMPTS"),
        ({"BWSM_WAIT_MODE": "sometimes"}, "BWSM_WAIT_MODE"),
        ({"BWSM_WAIT_MODE": "webhook"}, "BWSM_WEBHOOK_URL"),
        ({"BWSM_DIARIZATION": "everyone"}, "BWSM_DIARIZATION"),
        ({"BWSM_TRANSCRIPTION_CONFIG": "[1]"}, "BWSM_TRANSCRIPTION_CONFIG"),
        ({"BWSM_ADDITIONAL_VOCAB": "[1]"}, "BWSM_ADDITIONAL_VOCAB"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        submission_from_env(env)


def test_unknown_transcription_field_is_a_clear_error() -> None:
    with pytest.raises(SettingsError) as info:
        submission_from_env({"BWSM_TRANSCRIPTION_CONFIG": '{"no_such_field": 1}'})
    assert str(info.value).startswith("BWSM_TRANSCRIPTION_CONFIG: unknown field 'no_such_field' (allowed: language, ")
    assert "__init__" not in str(info.value)


def test_webhook_secret_is_not_in_the_repr() -> None:
    s = submission_from_env({"BWSM_WAIT_MODE": "webhook", "BWSM_WEBHOOK_URL": "http://h/",
                                 "BWSM_WEBHOOK_SECRET": "very-secret-1"})
    assert "very-secret-1" not in repr(s)


def test_channel_diarization_sends_our_channel_labels() -> None:
    settings = submission_from_env({"BWSM_DIARIZATION": "channel", "BWSM_CHANNEL_LABELS": "agent,customer"})
    config = settings.transcription_config()
    assert config.diarization == "channel"
    assert config.channel_diarization_labels == ["agent", "customer"]
    assert not settings.speaker_chaining


def test_reserved_channel_labels_are_refused_by_name() -> None:
    with pytest.raises(SettingsError, match="BWSM_CHANNEL_LABELS"):
        submission_from_env({"BWSM_DIARIZATION": "channel", "BWSM_CHANNEL_LABELS": "S1,caller"})


def test_a_job_is_the_same_job_across_restarts_and_another_under_other_job_settings() -> None:
    """The job fingerprint (part of the hash the journal and the server lookup match on) ignores what differs per
    start (the random webhook secret, the process index) and changes with what shapes the transcript."""
    first, again = submission_from_env({}), submission_from_env({})
    assert first.webhook_secret != again.webhook_secret and first.fingerprint() != again.fingerprint()
    assert first.job_fingerprint() == again.job_fingerprint()
    assert submission_from_env({"BWSM_LANGUAGE": "de"}).job_fingerprint() != first.job_fingerprint()
