"""A call's own settings merged over the flow's: each field set wins, diarization stays consistent across its three
fields, the job fingerprint changes exactly when the job's config does, and speaker chaining follows the call."""

from __future__ import annotations

from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings
from bytewax.speechmatics.schemas.call_start import NO_CONFIG, CallConfig, Punctuation, Vocab

FLOW = SubmitSettings(language="en", operating_point="standard", diarization="speaker", channel_labels=("l", "r"),
                      additional_vocab=({"content": "Flow"},), transcription_extra={"domain": "finance"})


def asked(call: CallConfig | None, settings: SubmitSettings = FLOW, **kw) -> dict:  # noqa: ANN003
    return settings.transcription_config(call=call, **kw).to_dict()


def test_a_call_without_settings_asks_for_the_flows_config() -> None:
    assert asked(None) == asked(NO_CONFIG) == FLOW.transcription_config().to_dict()
    assert FLOW.job_fingerprint(None) == FLOW.job_fingerprint(NO_CONFIG) == FLOW.job_fingerprint()


def test_each_field_the_call_sets_wins_over_the_flow_and_its_transcription_config() -> None:
    call = CallConfig(language="de", operating_point="enhanced", output_locale="de-AT",
                      additional_vocab=(Vocab("Lisinopril", ("lie sin oh pril",)),),
                      punctuation_overrides=Punctuation((".",), 0.3), enable_entities=True, domain="medical")
    got = asked(call)
    assert got["language"] == "de" and got["model"] == "enhanced" and got["output_locale"] == "de-AT"
    assert got["additional_vocab"] == [{"content": "Lisinopril", "sounds_like": ["lie sin oh pril"]}]
    assert got["punctuation_overrides"] == {"permitted_marks": ["."], "sensitivity": 0.3}
    assert got["enable_entities"] is True and got["domain"] == "medical"  # over BWSM_TRANSCRIPTION_CONFIG's
    assert got["diarization"] == "speaker"  # not set by the call: the flow's
    assert "additional_vocab" not in asked(CallConfig(additional_vocab=()))  # [] turns the flow's vocabulary off


def test_diarization_is_one_setting_across_its_fields() -> None:
    none = asked(CallConfig(diarization="none"), speaker_config=None)
    assert "diarization" not in none and "channel_diarization_labels" not in none
    channel = asked(CallConfig(diarization="channel"))
    assert channel["diarization"] == "channel" and channel["channel_diarization_labels"] == ["l", "r"]
    own = asked(CallConfig(diarization="channel", channel_labels=("agent", "caller")))
    assert own["channel_diarization_labels"] == ["agent", "caller"]
    channel_flow = SubmitSettings(diarization="channel", channel_labels=("a", "b"))
    assert asked(CallConfig(channel_labels=("x", "y")), channel_flow)["channel_diarization_labels"] == ["x", "y"]
    speaker = asked(CallConfig(diarization="speaker"), channel_flow)
    assert speaker["diarization"] == "speaker" and "channel_diarization_labels" not in speaker
    assert asked(CallConfig(channel_labels=("x", "y")))["diarization"] == "speaker"  # labels alone change nothing


def test_the_effective_config_is_what_the_job_asks_for() -> None:
    effective = FLOW.effective_config(CallConfig(language="fr", diarization="channel"))
    assert effective == CallConfig(language="fr", operating_point="standard", additional_vocab=(Vocab("Flow"),),
                                   diarization="channel", channel_labels=("l", "r"), domain="finance")
    assert FLOW.effective_config(None).diarization == "speaker" and FLOW.effective_config(None).channel_labels is None
    assert SubmitSettings().effective_config(None).diarization == "none"


def test_the_fingerprint_changes_with_the_config_the_job_asks_for() -> None:
    configs = [NO_CONFIG, CallConfig(language="de"), CallConfig(language="fr"), CallConfig(diarization="none"),
               CallConfig(additional_vocab=(Vocab("Acme"),)), CallConfig(diarization="channel"),
               CallConfig(diarization="channel", channel_labels=("agent", "caller"))]
    prints = [FLOW.job_fingerprint(c) for c in configs]
    assert len(set(prints)) == len(prints)
    assert FLOW.job_fingerprint(CallConfig(language="en")) == FLOW.job_fingerprint()  # the same job config


def test_speaker_chaining_follows_the_calls_diarization() -> None:
    assert FLOW.chains(None) and FLOW.chains(CallConfig(language="de"))
    assert not FLOW.chains(CallConfig(diarization="channel")) and not FLOW.chains(CallConfig(diarization="none"))
    assert SubmitSettings().chains(CallConfig(diarization="speaker")) and not SubmitSettings().chains(None)
