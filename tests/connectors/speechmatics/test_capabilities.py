"""What a local engine can do, what a job asks for that it cannot, and the endpoint a flow is built against."""

from __future__ import annotations

import pytest

from bytewax.speechmatics.connectors.speechmatics.capabilities import EngineCapabilities, unsupported
from bytewax.speechmatics.connectors.speechmatics.endpoint import (
    PLACEHOLDER_KEY,
    check_endpoint,
    is_self_hosted,
    settle,
    with_key,
)
from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings
from bytewax.speechmatics.connectors.worker.engines.reference import CAPABILITIES as REFERENCE
from bytewax.speechmatics.connectors.worker.engines.whisper import capabilities as whisper_capabilities
from bytewax.speechmatics.schemas.call_start import CallConfig
from bytewax.speechmatics.schemas.errors import SettingsError

WHISPER = whisper_capabilities("base")
#: The whisper engine of a worker whose speaker encoder could not be had.
WHISPER_NO_SPEAKER = whisper_capabilities("base", speaker=False)
SPEAKER = "speaker diarization is not available in the local whisper engine: words have no speaker"


def test_whisper_says_what_it_cannot_do_and_rejects_only_a_language_it_lacks() -> None:
    assert unsupported(WHISPER, {"language": "de", "diarization": "channel"}) == []
    assert unsupported(WHISPER, {"language": "en", "diarization": "speaker"}) == []  # diarize.py
    asked = {"language": "xx", "diarization": "speaker", "enable_entities": True, "model": "enhanced",
             "additional_vocab": [{"content": "a"}], "output_locale": "en-GB"}
    found = unsupported(WHISPER_NO_SPEAKER, asked)
    assert [(u.feature, u.rejects) for u in found] == [
        ("language", True), ("diarization", False), ("additional_vocab", False), ("enable_entities", False),
        ("output_locale", False)]  # no operating point: the SDK asks for one on every job, and one model answers
    assert found[1].message == SPEAKER
    assert "'xx'" in found[0].message and "rejected" in found[0].message
    assert "'en-GB'" in found[4].message
    # Switched off is not asked for.
    assert unsupported(WHISPER, {"language": "en", "enable_entities": False, "additional_vocab": []}) == []
    assert unsupported(whisper_capabilities("base.en"), {"language": "de"})[0].feature == "language"


def test_the_reference_engine_stands_in_for_the_real_api_and_honours_everything() -> None:
    asked = {"language": "xx", "diarization": "speaker", "enable_entities": True, "model": "enhanced",
             "additional_vocab": [{"content": "a"}], "domain": "finance", "punctuation_overrides": {"sensitivity": 1}}
    assert unsupported(REFERENCE, asked) == []


def test_discovery_documents_round_trip_and_the_real_apis_declares_no_local_engine() -> None:
    for caps in (WHISPER, REFERENCE):
        doc = caps.to_discovery()
        assert doc["batch"]["transcription"][0]["version"] == caps.version  # the real document's shape
        assert EngineCapabilities.from_discovery(doc) == caps
    real = {"metadata": {"language_pack_info": {}},
            "batch": {"transcription": [{"version": "2", "languages": ["en", "de"]}], "translation": []}}
    assert EngineCapabilities.from_discovery(real) is None


def test_call_started_warnings_come_from_the_calls_effective_config() -> None:
    assert SubmitSettings(api_key="k", capabilities=WHISPER).capability_warnings(CallConfig(diarization="speaker")) \
        == ()
    settings = SubmitSettings(api_key="k", capabilities=WHISPER_NO_SPEAKER)
    assert settings.capability_warnings() == ()
    assert settings.capability_warnings(CallConfig(diarization="speaker")) == (SPEAKER,)
    flow_speaker = SubmitSettings(api_key="k", diarization="speaker", capabilities=WHISPER_NO_SPEAKER)
    assert flow_speaker.capability_warnings() == (SPEAKER,)
    assert flow_speaker.capability_warnings(CallConfig(diarization="channel")) == ()  # the call's own setting wins
    assert SubmitSettings(api_key="k", diarization="speaker").capability_warnings() == ()  # the real API: none


@pytest.mark.parametrize("url", ["localhost:18000/v2", "ftp://host/v2", "http:///v2", "127.0.0.1"])
def test_a_batch_url_that_is_not_http_is_one_settings_error(url: str) -> None:
    with pytest.raises(SettingsError, match="SPEECHMATICS_BATCH_URL must be an http"):
        SubmitSettings(batch_url=url)


def test_a_self_hosted_endpoint_needs_no_key_and_the_saas_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPEECHMATICS_API_KEY", raising=False)
    assert is_self_hosted("http://127.0.0.1:18000/v2") and is_self_hosted("https://asr.example.org/v2")
    assert not is_self_hosted(None) and not is_self_hosted("https://eu1.asr.api.speechmatics.com/v2")
    assert with_key(SubmitSettings(batch_url="http://127.0.0.1:1/v2")).api_key == PLACEHOLDER_KEY
    assert with_key(SubmitSettings(api_key="mine", batch_url="http://127.0.0.1:1/v2")).api_key == "mine"
    for saas in (SubmitSettings(), SubmitSettings(batch_url="https://asr.api.speechmatics.com/v2")):
        with pytest.raises(SettingsError, match="no Speechmatics API key: set SPEECHMATICS_API_KEY"):
            settle(saas)
    monkeypatch.setenv("SPEECHMATICS_API_KEY", "from-env")  # the SDK finds it itself: nothing to add
    assert with_key(SubmitSettings(batch_url="http://127.0.0.1:1/v2")).api_key is None


def test_an_endpoint_without_discovery_is_taken_to_honour_everything() -> None:
    settled = settle(SubmitSettings(batch_url="http://127.0.0.1:9/v2"))  # nothing listens on the discard port
    assert settled.capabilities is None and settled.api_key == PLACEHOLDER_KEY


def test_an_endpoint_check_without_an_answer_leaves_it_to_the_running_flow() -> None:
    assert check_endpoint(SubmitSettings(api_key="k", batch_url="http://127.0.0.1:9/v2"), timeout=2) is None


def test_a_url_that_names_no_batch_api_is_one_settings_error(reference_worker) -> None:  # noqa: ANN001
    with pytest.raises(SettingsError, match=r"GET /jobs at 127.0.0.1:\d+ answered 404: SPEECHMATICS_BATCH_URL does"):
        settle(SubmitSettings(batch_url=reference_worker.url.removesuffix("/v2") + "/v1"))
    settle(SubmitSettings(batch_url=reference_worker.url))  # the right path: no error


def test_a_self_hosted_worker_that_wants_a_key_says_so_when_none_is_given(local_worker, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("SPEECHMATICS_API_KEY", raising=False)
    worker = local_worker(engine="reference", parallel=1, api_key="its-key")
    with pytest.raises(SettingsError, match="requires an API key .* set SPEECHMATICS_API_KEY"):
        settle(SubmitSettings(batch_url=worker.url))
    with pytest.raises(SettingsError, match="refused the API key: authentication failed"):
        settle(SubmitSettings(batch_url=worker.url, api_key="not-its-key"))
    assert settle(SubmitSettings(batch_url=worker.url, api_key="its-key")).api_key == "its-key"


def test_a_local_worker_is_discovered_when_the_flow_is_built(reference_worker) -> None:  # noqa: ANN001
    settled = settle(SubmitSettings(batch_url=reference_worker.url, api_key="k"))
    assert settled.capabilities == REFERENCE and settled.api_key == "k"
