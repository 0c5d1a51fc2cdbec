"""Speaker diarization for the whisper engine's mono jobs: voice embeddings over the speech, clustered (numpy only).

Windows of 1.6 s (the encoder's partial length) every HOP_S over the recognised words are embedded with the
Resemblyzer encoder (voice_encoder.py). Its embeddings share one large component whatever the voice, so the windows
are clustered after removing their mean (average-linkage agglomeration on cosine similarity), into as many voices as
the job allows: `speaker_diarization_config.max_speakers` (Speechmatics' option; default DEFAULT_SPEAKERS, the two
parties of a call). `speaker_sensitivity` (0..1, the API's default 0.5) sets how alike two clusters must be to be
taken for one voice. Each word takes the voice of the windows around it. Labels are S1, S2, ... in order of first
word, as the real API gives them.

Speaker identification, as the real API's (`get_speakers` returns `speakers: [{label, speaker_identifiers}]`; a later
job given `speakers: [{label, speaker_identifiers}]` labels those voices with the given labels, other voices S<n>):
an identifier here is the voice's mean embedding, encoded (float16, base64) after IDENTIFIER_PREFIX, so any engine
process can read it back without shared state. A voice of this job takes the label of the enrolled voice it is
closest to when that similarity reaches MATCH_FLOOR (one voice per label); two voices of this job that both come
closest to the same enrolled voice are one voice. The real API's identifiers are opaque too; ours are not portable
to it, nor its to us (foreign identifiers are ignored).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bytewax.speechmatics.connectors.worker.engines.voice_encoder import (
    HOP,
    PARTIAL_FRAMES,
    RATE,
    VoiceEncoder,
    mel_spectrogram,
    normalize_volume,
)

HOP_S = 0.4
#: Window centres further than this from every word are not speech worth embedding.
NEAR_WORD_S = 0.3
DEFAULT_SPEAKERS = 2
#: Fewer windows than this: one voice (too little speech to tell voices apart).
MIN_WINDOWS = 4
#: Raw cosine similarity from which a voice is taken for an enrolled one.
MATCH_FLOOR = 0.75
IDENTIFIER_PREFIX = "bwsm-voice-v1:"


@dataclass(frozen=True)
class Diarization:
    """One job's speakers: a label per word (in the order given) and the voices' identifiers."""

    labels: list[str]
    speakers: list[dict[str, Any]]


def encode_identifier(embedding: np.ndarray) -> str:
    return IDENTIFIER_PREFIX + base64.b64encode(np.asarray(embedding, dtype="<f2").tobytes()).decode()


def decode_identifier(identifier: str) -> np.ndarray | None:
    """The embedding an identifier of ours carries; None for anything else (another engine's, damaged)."""
    if not isinstance(identifier, str) or not identifier.startswith(IDENTIFIER_PREFIX):
        return None
    try:
        vector = np.frombuffer(base64.b64decode(identifier[len(IDENTIFIER_PREFIX):], validate=True), dtype="<f2")
    except ValueError:
        return None
    vector = vector.astype(np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if vector.size and np.isfinite(norm) and norm > 0 else None


def enrolled_voices(sdc: Mapping[str, Any]) -> list[tuple[str, np.ndarray]]:
    """(label, mean embedding) of each speaker the job enrols with identifiers of ours."""
    out = []
    for entry in sdc.get("speakers") or []:
        if not isinstance(entry, Mapping):
            continue
        vectors = [v for v in (decode_identifier(i) for i in entry.get("speaker_identifiers") or []) if v is not None]
        if vectors:
            mean = np.mean(vectors, axis=0)
            out.append((str(entry.get("label")), mean / np.linalg.norm(mean)))
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def cluster(vectors: np.ndarray, max_clusters: int, stop_similarity: float) -> np.ndarray:
    """Average-linkage agglomeration on cosine similarity: cluster index per row. Merging goes on while there are
    more than `max_clusters` clusters, or while the closest two are at least `stop_similarity` alike."""
    n = len(vectors)
    sims = vectors @ vectors.T
    members = [[i] for i in range(n)]
    # linkage[i, j]: mean similarity between clusters i and j (inf on the diagonal and for merged ones)
    linkage = sims.astype(np.float64).copy()
    np.fill_diagonal(linkage, -np.inf)
    alive = np.ones(n, dtype=bool)
    while alive.sum() > 1:
        masked = np.where(alive[:, None] & alive[None, :], linkage, -np.inf)
        i, j = np.unravel_index(int(np.argmax(masked)), masked.shape)
        if alive.sum() <= max_clusters and masked[i, j] < stop_similarity:
            break
        ni, nj = len(members[i]), len(members[j])
        merged = (linkage[i] * ni + linkage[j] * nj) / (ni + nj)
        linkage[i, :] = merged
        linkage[:, i] = merged
        linkage[i, i] = -np.inf
        members[i] += members[j]
        alive[j] = False
        linkage[j, :] = -np.inf
        linkage[:, j] = -np.inf
    labels = np.empty(n, dtype=int)
    for k, i in enumerate(np.flatnonzero(alive)):
        labels[members[i]] = k
    return labels


def window_centres(spans: Sequence[tuple[float, float]]) -> np.ndarray:
    """Centres of the embedding windows: every HOP_S over the words, kept near a word."""
    if not spans:
        return np.empty(0)
    grid = np.arange(spans[0][0], max(e for _, e in spans) + 1e-9, HOP_S)
    starts = np.array([s for s, _ in spans])
    ends = np.array([e for _, e in spans])
    near = ((grid[:, None] >= starts[None, :] - NEAR_WORD_S) & (grid[:, None] <= ends[None, :] + NEAR_WORD_S))
    kept = grid[near.any(axis=1)]
    return kept if kept.size else np.array([(spans[0][0] + spans[0][1]) / 2])


def embed_windows(encoder: VoiceEncoder, audio: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """One raw embedding per window centre (windows clipped to the audio)."""
    mels = mel_spectrogram(normalize_volume(np.asarray(audio, dtype=np.float32)))
    if len(mels) < PARTIAL_FRAMES:
        mels = np.pad(mels, ((0, PARTIAL_FRAMES - len(mels)), (0, 0)))
    per_second = RATE / HOP
    starts = np.clip((centres * per_second).astype(int) - PARTIAL_FRAMES // 2, 0, len(mels) - PARTIAL_FRAMES)
    return encoder.embed_partials(np.stack([mels[s : s + PARTIAL_FRAMES] for s in starts]))


def _voices(raw: np.ndarray, max_speakers: int, sensitivity: float) -> np.ndarray:
    """A voice index per window."""
    if len(raw) < MIN_WINDOWS or max_speakers <= 1:
        return np.zeros(len(raw), dtype=int)
    centred = _unit(raw - raw.mean(axis=0))
    # clusters at least this alike (after centring) are one voice; a more sensitive job splits more
    stop = 0.35 - 0.3 * sensitivity
    return cluster(centred, max_speakers, stop)


def diarize(encoder: VoiceEncoder, audio: np.ndarray, spans: Sequence[tuple[float, float]],
            sdc: Mapping[str, Any] | None) -> Diarization:
    """Speaker labels for the words at `spans` (seconds, in word order) of mono float audio at 16 kHz."""
    sdc = sdc or {}
    if not spans:
        return Diarization([], [])
    max_speakers = int(sdc.get("max_speakers") or DEFAULT_SPEAKERS)
    sensitivity = float(sdc.get("speaker_sensitivity", 0.5))
    centres = window_centres(spans)
    raw = embed_windows(encoder, audio, centres)
    enrolled = enrolled_voices(sdc)
    closest: dict[int, str] | None = None
    if len(enrolled) >= max(2, max_speakers):  # every voice the job may hold is known: each window to the closest
        nearest = np.argmax(raw @ np.stack([v for _, v in enrolled]).T, axis=1)
        known, voice = np.unique(nearest, return_inverse=True)  # voices numbered 0.. as they occur in the job
        closest = {k: enrolled[int(j)][0] for k, j in enumerate(known)}
    else:
        voice = _voices(raw, max(1, max_speakers), min(1.0, max(0.0, sensitivity)))
    count = int(voice.max()) + 1
    centred = _unit(raw - raw.mean(axis=0)) if count > 1 else raw
    centroids = _unit(np.stack([centred[voice == k].mean(axis=0) for k in range(count)]))
    raw_means = _unit(np.stack([raw[voice == k].mean(axis=0) for k in range(count)]))

    word_voice = []
    for start, end in spans:
        mid = (start + end) / 2
        distance = np.abs(centres - mid)
        near = distance <= max(HOP_S, (end - start) / 2)
        if not near.any():
            near = distance == distance.min()
        word_voice.append(int(np.argmax(centroids @ centred[near].mean(axis=0))) if count > 1 else 0)

    given = closest if closest is not None else _match(raw_means, enrolled)  # voice -> enrolled label
    names: dict[int, str] = {}
    used_labels = {label for label, _ in enrolled}
    next_number = 1
    for v in word_voice:  # S<n> in order of first word, skipping labels given by enrolment
        if v in names:
            continue
        if v in given:
            names[v] = given[v]
            continue
        while f"S{next_number}" in used_labels:
            next_number += 1
        names[v] = f"S{next_number}"
        used_labels.add(names[v])
    speakers = []
    seen: set[str] = set()
    for label in names.values():
        if label in seen:  # two voices of this job matched one enrolled voice: one speaker, one identifier
            continue
        seen.add(label)
        same = [u for u, name in names.items() if name == label]
        mean = _unit(np.mean([raw_means[u] for u in same], axis=0))
        speakers.append({"label": label, "speaker_identifiers": [encode_identifier(mean)]})
    return Diarization([names[v] for v in word_voice], speakers)


def _match(raw_means: np.ndarray, enrolled: list[tuple[str, np.ndarray]]) -> dict[int, str]:
    """This job's voices -> enrolled labels: each voice to the enrolled voice it is closest to, from MATCH_FLOOR."""
    if not enrolled:
        return {}
    known = np.stack([v for _, v in enrolled])
    sims = raw_means @ known.T
    out = {}
    for v in range(len(raw_means)):
        best = int(np.argmax(sims[v]))
        if sims[v, best] >= MATCH_FLOOR:
            out[v] = enrolled[best][0]
    return out
