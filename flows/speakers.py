"""Stable speaker labels for a whole call across its chunks' jobs (pure: no I/O).

A batch job labels voices S1, S2, ... in order of appearance, per job, so the same voice can be S1 in one
chunk and S2 in the next. Speechmatics speaker identification fixes that: a job run with
`speaker_diarization_config.get_speakers` returns identifiers per voice, and a later job given
`speakers: [{label, speaker_identifiers}]` labels those voices with our labels. A call's jobs run one after
another (the submitter chains them), and a per-call SpeakerBook carries what was learnt:

    config = speaker_config(book)                      # speaker_diarization_config for the next job
    transcript = book.relabel(span, transcript)        # once per chunk, in chunk order

Our labels are `spk_1`, `spk_2`, ... in order of first appearance in the call (never `S<n>` or `UU`,
which the API reserves). A raw `S<n>` label (a voice the job did not recognise) is mapped by overlap
evidence: the words of the chunk's overlap were also heard at the end of the previous chunk, so the same
word at the same time names the same voice; a raw label with no such evidence becomes a new call label.
`UU` stays unknown (None downstream).

Two-channel audio (agent and caller on their own channels) needs none of this: channel diarization with our
labels (`channel_config`, channel_labels agent,caller by default) makes each word's channel its speaker; the
stitcher takes the channel label as the speaker of a word the API left as `UU`.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bytewax.speechmatics.connectors.speechmatics.settings import channel_config, is_reserved
from bytewax.speechmatics.schemas.chunks import ChunkSpan
from bytewax.speechmatics.schemas.snapshots import evolvable

__all__ = ["SpeakerBook", "channel_config", "is_reserved", "speaker_config"]

LABEL_PREFIX = "spk_"
#: The API's limit on identifiers per job.
MAX_IDENTIFIERS = 50
#: Words this close to a chunk's end are kept as evidence for the next chunk's overlap (seconds).
EVIDENCE_SECONDS = 5.0
UNKNOWN = "UU"
_MATCH_EPS = 1e-3


@evolvable
@dataclass(frozen=True, slots=True)
class _Heard:
    """A word near the end of the previous chunk, in call time, under its call label."""

    text: str
    start: float
    end: float
    label: str


@evolvable
@dataclass(slots=True)
class SpeakerBook:
    """One call's speakers: our labels, their identifiers (oldest first), and the last chunk's closing words.

    Picklable and small (at most a few dozen identifiers and the words of the last few seconds).
    """

    labels: list[str] = field(default_factory=list)
    identifiers: dict[str, list[str]] = field(default_factory=dict)
    heard: tuple[_Heard, ...] = ()

    # ----------------------------------------------------------------------------------------- for the next job

    def enrollment(self) -> list[dict[str, Any]]:
        """[{label, speaker_identifiers}] for the next job: at most MAX_IDENTIFIERS in all, newest first.

        When there are too many, each speaker keeps its most recent identifiers, taken in turns so that every
        speaker stays enrolled.
        """
        chosen: dict[str, list[str]] = {label: [] for label in self.labels}
        depth, total = 0, 0
        while total < MAX_IDENTIFIERS:
            took = False
            for label in self.labels:
                idents = self.identifiers.get(label, [])
                if depth < len(idents) and total < MAX_IDENTIFIERS:
                    chosen[label].append(idents[-1 - depth])
                    total += 1
                    took = True
            if not took:
                break
            depth += 1
        return [{"label": label, "speaker_identifiers": ids} for label, ids in chosen.items() if ids]

    # ----------------------------------------------------------------------------------------- after a job

    def relabel(self, span: ChunkSpan, transcript: Mapping[str, Any]) -> dict[str, Any]:
        """The transcript with the call's labels; learns identifiers and the chunk's closing words.

        Call once per chunk, in chunk order (the evidence is the previous chunk's end). Returns a copy.
        """
        out = copy.deepcopy(dict(transcript))
        results = [r for r in out.get("results") or [] if _has_alternative(r)]
        mapping = self._mapping(span, results)
        for result in results:
            for alt in result["alternatives"]:
                if isinstance(alt, dict) and alt.get("speaker") is not None:
                    alt["speaker"] = mapping.get(str(alt["speaker"]), str(alt["speaker"]))
        for entry in out.get("speakers") or []:
            if not isinstance(entry, dict):
                continue
            label = mapping.get(str(entry.get("label")))
            if label is None or label == UNKNOWN:
                continue
            entry["label"] = label
            self._learn(label, entry.get("speaker_identifiers") or [])
        self._remember(span, results)
        return out

    def _mapping(self, span: ChunkSpan, results: list[dict[str, Any]]) -> dict[str, str]:
        """Chunk label -> call label for every label the chunk uses."""
        seen = list(dict.fromkeys(str(r["alternatives"][0].get("speaker")) for r in results
                                  if r["alternatives"][0].get("speaker") is not None))
        mapping = {label: label for label in seen if label == UNKNOWN or not is_reserved(label)}
        for label in mapping:
            if label != UNKNOWN and label not in self.labels:
                self.labels.append(label)  # a label of ours from an earlier book: adopt it
        taken = set(mapping.values())
        votes = self._votes(span, results)
        for (raw, label), _ in sorted(votes.items(), key=lambda kv: (-kv[1], kv[0])):
            if raw not in mapping and label not in taken:
                mapping[raw] = label
                taken.add(label)
        for raw in seen:
            if raw not in mapping:
                mapping[raw] = self._new_label()
        return mapping

    def _votes(self, span: ChunkSpan, results: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
        """(raw label, call label) -> words of the overlap both chunks heard as the same word at the same time."""
        votes: Counter[tuple[str, str]] = Counter()
        overlap_end = span.overlap_end_time
        for result in results:
            alt = result["alternatives"][0]
            raw = alt.get("speaker")
            if result.get("type") != "word" or raw is None or not is_reserved(str(raw)) or raw == UNKNOWN:
                continue
            start, end = _times(span, result)
            if start >= overlap_end:
                continue
            text = str(alt.get("content", "")).casefold()
            for word in self.heard:
                if word.text == text and min(end, word.end) - max(start, word.start) > _MATCH_EPS:
                    votes[(str(raw), word.label)] += 1
        return votes

    def _new_label(self) -> str:
        n = len(self.labels) + 1
        while f"{LABEL_PREFIX}{n}" in self.labels:
            n += 1
        label = f"{LABEL_PREFIX}{n}"
        self.labels.append(label)
        return label

    def _learn(self, label: str, identifiers: list[Any]) -> None:
        known = self.identifiers.setdefault(label, [])
        for ident in identifiers:
            ident = str(ident)
            if ident in known:
                known.remove(ident)
            known.append(ident)
        del known[:-MAX_IDENTIFIERS]

    def _remember(self, span: ChunkSpan, results: list[dict[str, Any]]) -> None:
        """Keep the chunk's closing words (call time, call labels): evidence for the next chunk's overlap."""
        floor = span.end_time - EVIDENCE_SECONDS
        heard = []
        for result in results:
            alt = result["alternatives"][0]
            label = alt.get("speaker")
            if result.get("type") != "word" or label in (None, UNKNOWN):
                continue
            start, end = _times(span, result)
            if end > floor:
                heard.append(_Heard(str(alt.get("content", "")).casefold(), start, end, str(label)))
        self.heard = tuple(heard)


def _has_alternative(result: Any) -> bool:
    """Only well-formed results are relabelled; the stitcher reports the others as a bad transcript."""
    if not isinstance(result, dict):
        return False
    alts = result.get("alternatives")
    return isinstance(alts, list) and bool(alts) and all(isinstance(a, dict) for a in alts)


def _times(span: ChunkSpan, result: Mapping[str, Any]) -> tuple[float, float]:
    """A result's times in call seconds; a result without usable times is evidence of nothing (inf)."""
    try:
        return span.start_time + float(result["start_time"]), span.start_time + float(result["end_time"])
    except (KeyError, TypeError, ValueError):
        return float("inf"), float("-inf")


def speaker_config(book: SpeakerBook) -> dict[str, Any]:
    """speaker_diarization_config for a call's next job: ask for identifiers, enrol the voices known so far."""
    config: dict[str, Any] = {"get_speakers": True}
    enrolled = book.enrollment()
    if enrolled:
        config["speakers"] = enrolled
    return config
