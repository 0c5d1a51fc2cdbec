"""What the engine behind a batch endpoint can do, and what a job asks for that it cannot (pure, no I/O).

The Speechmatics API answers every option of `transcription_config` in every language it lists, so a flow talking to
it needs no warnings. The project's local worker is not that API: its whisper engine has no
entities, no custom vocabulary, one model (and no speaker diarization when its speaker encoder could not be had).
Each local engine declares an `EngineCapabilities`; the worker serves it at
`GET /v1/discovery/features` (the real API's feature discovery document, plus a `local_engine` object the real one
does not have), refuses what the real API refuses, and the flow turns the rest into `call_started` warnings.

What happens to an option the engine cannot honour follows what the real API does with unsupported options:
- the language: the real API rejects a job whose language it does not offer (400 "Job rejected", config invalid),
  so the local worker does too, and the call's `call_started` says its jobs will be rejected;
- every other option (diarization mode, entities, vocabulary, locale, domain, punctuation overrides): the
  real API completes a job whose enrichment cannot run and lists the failure in the transcript's metadata (as with
  `summarization_errors`), so the local worker transcribes without it, lists it under the transcript's
  `metadata.warnings`, and the call's `call_started` names it.
The operating point is not among them: a local engine has one model whatever the job asks for, and the SDK asks for
`enhanced` on every job, so a warning would be on every call and bury the ones that matter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Where feature discovery lives, beside the batch API's /v2 (as on the real API: /v1/discovery/features).
DISCOVERY_PATH = "/v1/discovery/features"
#: The optional transcription options an engine may honour, with what a user loses when it does not.
FEATURES: dict[str, str] = {
    "additional_vocab": "custom vocabulary is not used",
    "enable_entities": "no entities are returned",
    "output_locale": "the output locale is not applied",
    "domain": "the domain is not applied",
    "punctuation_overrides": "punctuation overrides are not applied",
}
DIARIZATION_LOSS = {"speaker": "words have no speaker", "channel": "channels are not told apart"}


@dataclass(frozen=True)
class EngineCapabilities:
    """One local engine's declaration: languages (None: any), diarization modes and optional features honoured."""

    engine: str
    languages: tuple[str, ...] | None = None
    diarization: tuple[str, ...] = ("none", "speaker", "channel")
    features: tuple[str, ...] = tuple(FEATURES)
    #: The real API's transcription version string for this engine, as discovery reports it.
    version: str = field(default="local")

    def to_discovery(self) -> dict[str, Any]:
        """The feature discovery document: the real API's shape (`batch.transcription[].languages`, ...) plus
        `local_engine`, which says what the real document leaves unsaid because the real API supports it all."""
        languages = list(self.languages) if self.languages is not None else []
        return {
            "metadata": {"language_pack_info": {}},
            "batch": {"transcription": [{"version": self.version, "languages": languages, "locales": {},
                                         "domains": {}}],
                      "translation": [], "languageid": []},
            "local_engine": {"name": self.engine, "version": self.version,
                             "languages": None if self.languages is None else languages,
                             "diarization": list(self.diarization), "features": list(self.features)},
        }

    @classmethod
    def from_discovery(cls, doc: Mapping[str, Any]) -> EngineCapabilities | None:
        """The local engine a discovery document declares; None for the real API's (it supports every option)."""
        local = doc.get("local_engine")
        if not isinstance(local, Mapping) or not isinstance(local.get("name"), str):
            return None
        languages = local.get("languages")
        return cls(engine=local["name"],
                   languages=None if languages is None else tuple(str(x) for x in languages),
                   diarization=tuple(str(x) for x in local.get("diarization") or ("none",)),
                   features=tuple(str(x) for x in local.get("features") or ()),
                   version=str(local.get("version") or "local"))


@dataclass(frozen=True)
class Unsupported:
    """One option a job asks for that the engine cannot honour; `rejects`: the job is refused, as the API would."""

    feature: str
    message: str
    rejects: bool = False


def _requested(tc: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    """The optional features a transcription config really asks for (set, and not switched off)."""
    for name in FEATURES:
        value = tc.get(name)
        if value not in (None, False, [], {}, ""):
            yield name, value


def unsupported(caps: EngineCapabilities, tc: Mapping[str, Any]) -> list[Unsupported]:
    """What the job config `tc` (a `transcription_config` object) asks for that `caps` cannot do, in a fixed order
    (the messages go into events, which must be the same on every replay)."""
    where = f"the local {caps.engine} engine"
    out: list[Unsupported] = []
    language = str(tc.get("language") or "en")
    if caps.languages is not None and language not in caps.languages:
        out.append(Unsupported("language", f"language {language!r} is not available in {where}: the call's jobs "
                                           "are rejected", rejects=True))
    diarization = str(tc.get("diarization") or "none")
    if diarization not in caps.diarization:
        mode = "speaker" if "speaker" in diarization else diarization
        loss = DIARIZATION_LOSS.get(mode, "it is not applied")
        out.append(Unsupported("diarization", f"{mode} diarization is not available in {where}: {loss}"))
    for name, value in _requested(tc):
        if name not in caps.features:
            shown = f" {value!r}" if isinstance(value, str) else ""
            out.append(Unsupported(name, f"{name}{shown} is not available in {where}: {FEATURES[name]}"))
    return out


def capability_warnings(caps: EngineCapabilities | None, tc: Mapping[str, Any]) -> tuple[str, ...]:
    """The `call_started` warnings for a call whose jobs ask for `tc`; none when the engine is the real API's."""
    return () if caps is None else tuple(u.message for u in unsupported(caps, tc))
