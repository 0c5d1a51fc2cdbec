"""Every refused setting is one message naming the variable and the values it allows in words: never a Python
list, set or tuple, a regular expression, or a function's name (what a user cannot act on)."""

from __future__ import annotations

import pytest

from bytewax.speechmatics.flows.settings import Settings
from bytewax.speechmatics.schemas.errors import SettingsError, in_words

#: What no settings message may show: Python reprs of lists/sets/tuples/dicts, regexes, call signatures.
INTERNALS = ("[", "{", "(0,", "('", "^", "$", "__init__", "()", "<class", "keyword argument")


@pytest.mark.parametrize(("env", "says"), [
    ({"BWSM_VAD_AGGRESSIVENESS": "7"}, "BWSM_VAD_AGGRESSIVENESS must be 0, 1, 2 or 3, got '7'"),
    ({"BWSM_VAD_FRAME_MS": "25"}, "BWSM_VAD_FRAME_MS must be 10, 20 or 30, got '25'"),
    ({"BWSM_WAIT_MODE": "sometimes"}, "BWSM_WAIT_MODE must be poll, wait or webhook, got 'sometimes'"),
    ({"BWSM_DIARIZATION": "both"}, "BWSM_DIARIZATION must be none, speaker or channel, got 'both'"),
    ({"BWSM_CHUNK_POLICY": "silence"}, "BWSM_CHUNK_POLICY must be fixed or vad, got 'silence'"),
    ({"BWSM_LOG_LEVEL": "loud"}, "BWSM_LOG_LEVEL must be debug, info, warning or error, got 'loud'"),
    ({"BWSM_CHANNEL_LABELS": "S1,caller"},
     "BWSM_CHANNEL_LABELS: channel labels must not look like the API's own speaker labels (S1, S2, ..., UU), got S1"),
    ({"BWSM_CHANNEL_LABELS": "agent"}, "BWSM_CHANNEL_LABELS: must be distinct non-empty labels separated by commas"),
    ({"BWSM_ADDITIONAL_VOCAB": '[{"sounds_like": ["x"]}]'},
     "BWSM_ADDITIONAL_VOCAB: each entry must be a word or an object with a content field (and optionally "
     "sounds_like), got an object with the fields sounds_like"),
    ({"BWSM_TRANSCRIPTION_CONFIG": '{"lang": "de"}'},
     "BWSM_TRANSCRIPTION_CONFIG: unknown field 'lang' (allowed: language, model, output_locale, diarization, "),
    ({"BWSM_TRANSCRIPTION_CONFIG": "[1]"}, "BWSM_TRANSCRIPTION_CONFIG must be a JSON object, got list"),
    ({"BWSM_POST_RATE": "fast"}, "BWSM_POST_RATE must be a number, at least 0.01, got 'fast'"),
    ({"BWSM_POST_RATE": "nan"}, "BWSM_POST_RATE must be a number, at least 0.01, got 'nan'"),
    ({"BWSM_CHUNK_SECONDS": "inf"}, "BWSM_CHUNK_SECONDS must be a number"),
    ({"BWSM_WORKERS": "0"}, "BWSM_WORKERS must be a whole number, at least 1, got '0'"),
    ({"BWSM_REALTIME": "maybe"}, "BWSM_REALTIME must be a boolean (1/0, true/false, yes/no, on/off), got 'maybe'"),
])
def test_a_refused_setting_says_what_is_allowed_in_words(env: dict[str, str], says: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env, argv=[])
    message = str(info.value)
    assert message.startswith(says), message
    assert not [bit for bit in INTERNALS if bit in message], message


def test_in_words_lists_values_as_a_sentence_does() -> None:
    assert in_words([8000, 16000, 32000, 48000]) == "8000, 16000, 32000 or 48000"
    assert in_words(("standard", "enhanced")) == "standard or enhanced"
    assert in_words(["content"], "and") == "content"
    assert in_words(["a", "b"], "and") == "a and b"
