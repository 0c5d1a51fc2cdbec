"""Stitch per-chunk transcripts into one timeline per call (pure: no Bytewax, no I/O, no clock).

Chunk k's first `overlap_samples` repeat the end of chunk k-1, so words near a seam come back from both jobs, and
a recogniser mishears the words a chunk edge cuts (clipping, dropping or garbling them: "ecclesiast the mystical"
for "ecclesiastical") and times the overlap a little differently in each chunk. The rule here:

1. Every result is moved to call time (offset by its chunk's start) and grouped into *units*: a word plus the
   punctuation attached to it (`attaches_to`), so punctuation always travels with its word.
2. Align: per channel, the previous chunk's words around the overlap [a, b] are aligned with the new chunk's
   (`_align`: order-preserving, equal normalised text, copies that intersect in time; among pairings with as many
   pairs, the one with the closest times). Each pair is one word: its times are the union of the two copies
   (each is the word clipped to the audio its chunk heard) and its other fields come from the copy on the side of
   the hand-over its midpoint lies on.
3. Hand over (`_handover`) at the aligned word nearest the overlap's middle: inside the aligned stretch the
   previous chunk's words before it are kept and the new chunk's after it, so a word the chunks disagree on comes
   whole from one of them and neither edge is trusted. A hand-over that would drop an already released word does
   not qualify. Words outside the aligned stretch, and every word when nothing aligns, are kept from the chunk on
   whose side of the hand-over time their midpoint lies; without an alignment that time is a quiet point near the
   overlap's middle (`_quiet_point`: no word of either chunk there), else the middle itself.
4. Safety nets: the old pairing (`_pair`: same word by time, a prefix heard by a chunk that cut the word, a word
   cut at a seam without overlap) for what the alignment left, and a repeated n-gram (n <= 5) exactly at the seam
   dropped from the new chunk when every one of those words lies wholly inside the overlap near its earlier copy.
5. Order: the previous chunk's words in its order, then the new chunk's in its order (`_in_order`); a word timed
   before the word it follows is made to start with it, so the timeline never goes backwards.

Why this is exact for the reference engine's artefacts (`midpoint`, `drop` and `keep` rules, times clipped),
given that words of one channel never overlap in time:
- copies of one word kept by both chunks intersect in [s, e] ∩ [a, b]; copies of different words intersect in at
  most a point, so the alignment pairs exactly the words both chunks kept (the time tie-break picks the true
  pairing among repeated words);
- a word only the previous chunk kept straddles a or lies before it, so it precedes every aligned word; a word only
  the new chunk kept straddles b or lies after it, so it follows every aligned word. Handing over at an aligned
  word keeps each exactly once; without an aligned word, the quiet point lies between them (or is the middle,
  where the midpoint argument holds: the first has its midpoint before (a + b) / 2, the second at or after it);
- the repeat check needs a new-chunk word wholly inside [a, b] that was not paired, which the artefacts never
  produce.

At a seam without overlap (a cut in silence), a word cut at the seam and kept by both chunks comes back as two
copies that only touch there; they are paired too. (Two different words with the same text, one ending exactly
at such a seam and one starting exactly there, look the same and are taken as one: a measure-zero case.)

Low latency: a chunk's words are released as soon as every earlier chunk is, except its *held* tail (units from
the first one ending in the last `hold_seconds` on: the only ones a later chunk can still extend); they go out
with the next chunk's segment. Recently released units stay as *context* (not emitted again) so that the next
chunk's copies of them are dropped; `context_seconds` must exceed the largest overlap.

Each release is one chunk's `segment`; its `supersedes` span runs from where the previous release stopped to the
start of what it holds back (the chunk's end for the last chunk). A failed chunk releases nothing of its own
(error set, no span); if the chunk before it held words, they go out first in a `tail` release of that chunk,
since no later chunk will share their audio.

Per-call settings: each release carries the settings of the chunk it belongs to (`ChunkResult.call`: the
effective config and the call's metadata, which its event copies) and the completion those of the last chunk.
With channel diarization a word's speaker is its channel's label, and a channel the API named `channel_N` (an
engine that ignores `channel_diarization_labels`) is given the call's label N.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from bytewax.speechmatics.schemas import punctuation
from bytewax.speechmatics.schemas.call_start import NO_SETTINGS, CallSettings
from bytewax.speechmatics.schemas.chunks import ChunkResult, ChunkSpan
from bytewax.speechmatics.schemas.errors import ContractError
from bytewax.speechmatics.schemas.snapshots import evolvable

#: Minimum intersection (seconds) of two copies' intervals for them to be one word.
MATCH_EPS = 1e-3
#: Decimal places of emitted times: removes float noise from offsetting, far below any recogniser's precision.
TIME_DECIMALS = 6
#: Longest repeated n-gram the seam check looks for.
MAX_NGRAM = 5
#: How far around the overlap the alignment looks for copies of its words (seconds).
MAX_SHIFT = 1.0
_NON_WORD = re.compile(r"[^\w']+")
UNKNOWN_SPEAKER = "UU"
UNDETERMINED_LANGUAGE = "und"
_KINDS = ("word", "punctuation")
_ATTACHMENTS = ("previous", "next", "both", "none")

#: Maps a chunk's speaker labels to the call's: `SpeakerBook.relabel` fits.
Relabel = Callable[[ChunkSpan, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class StitchSettings:
    """Tuning of the seam (BWSM_STITCH_* variables). Defaults suit overlaps up to 1 s (hold >= overlap / 2 + 0.5)."""

    hold_seconds: float = 1.0  # units ending this close to a chunk's end wait for the next chunk (>= overlap / 2 + 0.5)
    context_seconds: float = 5.0  # released units kept for matching; must exceed the largest overlap
    seam_tolerance: float = 0.3  # safety net: max distance (s) between midpoints of a repeated n-gram
    linger_seconds: float = 3600.0  # a completed call is remembered this long (repeated results are ignored)
    relabel_speakers: bool = False  # map each chunk's S1/S2 labels to stable call labels here (SpeakerBook)

    def __post_init__(self) -> None:
        # A word cut by a chunk's end is only made whole by the next chunk if it is held back for it.
        if self.hold_seconds <= 0:
            raise ValueError(f"BWSM_STITCH_HOLD_SECONDS must be > 0, got {self.hold_seconds}")
        if self.context_seconds < self.hold_seconds:
            raise ValueError("BWSM_STITCH_CONTEXT_SECONDS must be >= BWSM_STITCH_HOLD_SECONDS, got "
                             f"{self.context_seconds} < {self.hold_seconds}")


@evolvable
@dataclass(frozen=True, slots=True)
class Token:
    """One json-v2 result (word or punctuation), times in seconds from the call's start."""

    text: str
    start: float
    end: float
    confidence: float
    speaker: str | None
    kind: str
    channel: str | None = None
    attaches_to: str | None = None
    is_eos: bool | None = None
    language: str | None = None

    @property
    def mid(self) -> float:
        return (self.start + self.end) / 2


@evolvable
@dataclass(frozen=True, slots=True)
class Unit:
    """A word with the punctuation attached to it: the unit that is kept, merged or dropped as a whole."""

    host: Token
    before: tuple[Token, ...] = ()
    after: tuple[Token, ...] = ()

    def tokens(self) -> tuple[Token, ...]:
        return (*self.before, self.host, *self.after)

    @property
    def key(self) -> tuple[str, str | None, str]:
        """What must be equal for two copies to be one word."""
        return (self.host.text.casefold(), self.host.channel, self.host.kind)


# --------------------------------------------------------------------------------------------- parsing


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ContractError(f"expected a number, got {value!r}", where)
    return float(value)


def _attachment(value: Any) -> str:
    """json-v2 `attaches_to`; punctuation without a known value attaches to the previous word (the default)."""
    return value if value in _ATTACHMENTS else "previous"


def _channel_name(channel: str, labels: tuple[str, ...]) -> str:
    """`channel_N` as the call's label N (when it has one), any other name as it is."""
    if labels and channel.startswith("channel_") and channel[8:].isdigit():
        n = int(channel[8:])
        if 0 < n <= len(labels):
            return labels[n - 1]
    return channel


def parse_tokens(transcript: Mapping[str, Any], offset: float, where: str = "transcript",
                 channel_labels: tuple[str, ...] = ()) -> list[Token]:
    """json-v2 results as Tokens in call time; entities and unknown result types are skipped.

    A word's speaker is its label, or with channel diarization (label UU) its channel's label; `channel_labels`
    (the call's, with channel diarization) name channels the API left as `channel_N`.
    """
    results = transcript.get("results")
    if not isinstance(results, list):
        raise ContractError("'results' must be a list", where)
    out = []
    for n, result in enumerate(results):
        at = f"{where}.results[{n}]"
        if not isinstance(result, Mapping):
            raise ContractError("expected an object", at)
        kind = result.get("type")
        if kind not in _KINDS:
            continue
        alts = result.get("alternatives")
        if not isinstance(alts, list) or not alts or not isinstance(alts[0], Mapping):
            raise ContractError("'alternatives' must be a non-empty list of objects", at)
        alt = alts[0]
        content = alt.get("content")
        if not isinstance(content, str):
            raise ContractError("alternatives[0].content must be a string", at)
        start = _number(result.get("start_time"), f"{at}.start_time")
        end = max(start, _number(result.get("end_time"), f"{at}.end_time"))
        confidence = min(1.0, max(0.0, _number(alt.get("confidence", 1.0), f"{at}.confidence")))
        channel = None if result.get("channel") is None else _channel_name(str(result["channel"]), channel_labels)
        speaker = alt.get("speaker")
        speaker = channel if speaker in (None, UNKNOWN_SPEAKER) else str(speaker)  # channel diarization
        out.append(Token(
            text=content, start=start + offset, end=end + offset, confidence=confidence,
            speaker=speaker, kind=kind, channel=channel,
            attaches_to=_attachment(result.get("attaches_to")) if kind == "punctuation" else None,
            is_eos=bool(result.get("is_eos")) if kind == "punctuation" else None,
            language=alt.get("language") if isinstance(alt.get("language"), str) else None,
        ))
    return out


def transcript_language(transcript: Mapping[str, Any], tokens: Iterable[Token] = ()) -> str:
    """The language words were recognised in, else the job's configured one, else 'und'."""
    for token in tokens:
        if token.language:
            return token.language
    config = (transcript.get("metadata") or {}).get("transcription_config") or {}
    return str(config.get("language") or UNDETERMINED_LANGUAGE)


def group_units(tokens: list[Token]) -> list[Unit]:
    """Attach punctuation to a word of its own channel (`schemas/punctuation.py`): `next` to the channel's
    following word, anything else to its preceding one; a mark takes its word's speaker.

    Punctuation with no word of its channel to attach to stands alone (a unit of its own, never paired).
    """
    units = []
    for tokens_of in punctuation.group(tokens, is_word=lambda t: t.kind == "word",
                                       attaches_to=lambda t: t.attaches_to, channel=lambda t: t.channel):
        host = next((t for t in tokens_of if t.kind == "word"), tokens_of[0])
        marks = [t if t is host or t.speaker == host.speaker else replace(t, speaker=host.speaker)
                 for t in tokens_of]
        at = tokens_of.index(host)
        units.append(Unit(marks[at], before=tuple(marks[:at]), after=tuple(marks[at + 1:])))
    return units


def chunk_units(result: ChunkResult) -> tuple[list[Unit], str]:
    """A successful chunk's units in call time, sorted, and its language."""
    assert result.transcript is not None
    where = f"transcript of chunk {result.span.reference}"
    config = result.call.config
    labels = (config.channel_labels or ()) if config.diarization == "channel" else ()
    tokens = parse_tokens(result.transcript, result.span.start_time, where, labels)
    return sort_units(group_units(tokens)), transcript_language(result.transcript, tokens)


def sort_units(units: Iterable[Unit]) -> list[Unit]:
    """By start time; units that start together keep their order (a channel's own order: an engine that clamps
    a word's start to the one before it must not see the two swapped by their ends)."""
    return sorted(units, key=lambda u: u.host.start)


# --------------------------------------------------------------------------------------------- the seam


@evolvable
@dataclass(frozen=True, slots=True)
class Tail:
    """What a chunk leaves for the next one: its end, units held back, recently released units (context)."""

    span: ChunkSpan
    job_id: str | None
    attempts: int
    language: str
    released_until: float  # end of the time span the released units are authoritative for
    held: tuple[Unit, ...] = ()
    context: tuple[Unit, ...] = ()
    call: CallSettings = NO_SETTINGS


def _intersection(x: Token, y: Token) -> float:
    return min(x.end, y.end) - max(x.start, y.start)


def _merge(left: Unit, right: Unit, cut: float) -> Unit:
    """One word from two copies: union of times, other fields from the copy whose chunk owns the midpoint."""
    start, end = min(left.host.start, right.host.start), max(left.host.end, right.host.end)
    owner = left if (start + end) / 2 < cut else right
    return replace(owner, host=replace(owner.host, start=start, end=end))


def _cut_at(seam: float, left: Token, right: Token) -> bool:
    """The left copy ends at the seam and the right copy starts there: one word cut in two."""
    return abs(left.end - seam) <= MATCH_EPS and abs(right.start - seam) <= MATCH_EPS and left.start < seam


def _pair(candidates: list[Unit], used: set[int], unit: Unit, seam: float | None) -> int | None:
    """Index of the unused candidate that is the same word as `unit`, if any: same text and the largest
    intersection first, else a partial copy (see `_partial_copy`).

    `seam` is set when the chunks do not overlap: then a word cut at the seam and kept by both chunks comes
    back as two copies that only touch there (one ending at it, the other starting at it).
    """
    best, best_score = None, 0.0
    for i, cand in enumerate(candidates):
        if i in used:
            continue
        overlap = _intersection(cand.host, unit.host)
        if cand.key == unit.key:
            if overlap > MATCH_EPS:
                score = 2.0 + overlap
            elif seam is not None and _cut_at(seam, cand.host, unit.host):
                score = 2.0
            else:
                continue
        elif _partial_copy(cand.host, unit.host, overlap):
            score = 1.0 + overlap  # only when no copy with the same text is there
        else:
            continue
        if score > best_score:
            best, best_score = i, score
    return best


def _partial_copy(x: Token, y: Token, overlap: float) -> bool:
    """A recogniser that heard only part of a word cut by a chunk edge names a prefix of it ("Tex" / "Texas"):
    the same word when the two share most of the shorter one's time. (Copies from the reference artefacts
    always have equal text, so this never fires there.)"""
    if x.kind != "word" or y.kind != "word" or x.channel != y.channel:
        return False
    a, b = x.text.casefold(), y.text.casefold()
    shorter = min(x.end - x.start, y.end - y.start)
    return a != b and (a.startswith(b) or b.startswith(a)) and overlap > max(MATCH_EPS, shorter / 2)


def _seam_repeats(left: list[Unit], right: list[Unit], lo: float, hi: float, tolerance: float) -> int:
    """How many leading `right` units repeat the last units of `left` (safety net; 0 when none).

    Only new-chunk units wholly inside the overlap [lo, hi], which both chunks heard in full, can count as
    repeats, so a word that occurs once (which the artefacts always leave partly outside) is never dropped.
    """
    inside = []
    for unit in right[:MAX_NGRAM]:
        if not (lo <= unit.host.start and unit.host.end <= hi):
            break
        inside.append(unit)
    for n in range(min(len(inside), len(left)), 0, -1):
        pairs = zip(left[-n:], inside[:n], strict=True)
        if all(x.key == y.key and abs(x.host.mid - y.host.mid) <= tolerance for x, y in pairs):
            return n
    return 0


def normalised(text: str) -> str:
    """A word as the alignment compares it: case-folded, without punctuation (apostrophes inside kept)."""
    return _NON_WORD.sub("", text.casefold())


def _align(left: list[Unit], right: list[Unit]) -> list[tuple[int, int]]:
    """The order-preserving pairing of `left` and `right` words with the most equal (normalised) texts.

    A pair must share its channel and its two copies must intersect in time: copies of one word heard by both
    chunks do (each is the word as its chunk heard it), copies of two different words of one channel never do.
    Among pairings with as many pairs, the smallest total distance between midpoints wins (time is the
    tie-breaker), so repeated words ("words words words") pair with their own copies. Classic dynamic
    programming over the (short) overlap.
    """
    n, m = len(left), len(right)
    keys_l = [normalised(u.host.text) for u in left]
    keys_r = [normalised(u.host.text) for u in right]
    zero = (0, 0.0)
    score = [[zero] * (m + 1) for _ in range(n + 1)]
    move = [[0] * (m + 1) for _ in range(n + 1)]  # 0: skip left, 1: skip right, 2: pair
    for i in range(1, n + 1):
        x = left[i - 1].host
        for j in range(1, m + 1):
            best, how = score[i - 1][j], 0
            if score[i][j - 1] > best:
                best, how = score[i][j - 1], 1
            y = right[j - 1].host
            if (keys_l[i - 1] and keys_l[i - 1] == keys_r[j - 1] and x.channel == y.channel
                    and x.kind == y.kind == "word" and _intersection(x, y) > MATCH_EPS):
                prev = score[i - 1][j - 1]
                paired = (prev[0] + 1, prev[1] - abs(x.mid - y.mid))
                if paired > best:
                    best, how = paired, 2
            score[i][j], move[i][j] = best, how
    pairs = []
    i, j = n, m
    while i and j:
        how = move[i][j]
        if how == 2:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif how == 0:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


@dataclass(frozen=True, slots=True)
class Handover:
    """Where one channel's seam hands over from the previous chunk (left) to the new one (right).

    `time`: the switch time for words outside the aligned stretch (midpoint rule). `left` / `right`: the
    windowed words of each chunk that the alignment assigned (kept), by their index in the window; words
    neither kept nor paired inside the aligned stretch are dropped.
    """

    time: float
    aligned: bool = False
    left: frozenset[int] = frozenset()
    right: frozenset[int] = frozenset()
    span_left: tuple[int, int] = (0, -1)  # window indices the alignment decides (first pair .. last pair)
    span_right: tuple[int, int] = (0, -1)


def _handover(left: list[Unit], right: list[Unit], pairs: list[tuple[int, int]], released: set[int],
              a: float, b: float) -> Handover:
    """Hand over at the aligned word (both chunks heard it alike) nearest the overlap's middle, so that neither
    chunk's edge (where a recogniser mishears the word the edge cut) is trusted: within the aligned stretch,
    the previous chunk's words before it and the new chunk's after it, each disputed word whole from one chunk.
    A hand-over that would drop a released (already emitted) word of the previous chunk does not qualify.
    Without an aligned word: a quiet point near the overlap's middle, by time (`_quiet_point`)."""
    middle = (a + b) / 2
    paired_left, paired_right = {i for i, _ in pairs}, {j for _, j in pairs}
    best: tuple[float, Handover] | None = None
    for i, j in pairs:
        t = (min(left[i].host.start, right[j].host.start) + max(left[i].host.end, right[j].host.end)) / 2
        dropped = set(range(i + 1, len(left))) - paired_left  # in the stretch, or after it by the time rule
        if dropped & released:
            continue
        keep_left = set(range(pairs[0][0], i)) - paired_left
        keep_right = set(range(j + 1, pairs[-1][1] + 1)) - paired_right
        handover = Handover(t, True, frozenset(keep_left), frozenset(keep_right),
                            (pairs[0][0], pairs[-1][0]), (pairs[0][1], pairs[-1][1]))
        if best is None or abs(t - middle) < best[0]:
            best = (abs(t - middle), handover)
    if best is None:
        return Handover(_quiet_point(left, right, released, a, b))
    return best[1]


def _quiet_point(left: list[Unit], right: list[Unit], released: set[int], a: float, b: float) -> float:
    """Without an aligned word: the point of the overlap nearest its middle where neither chunk has a word and
    every released word of the previous chunk has ended (so the time rule splits no word, and takes back none);
    the middle itself when there is no such point."""
    middle = (a + b) / 2
    floor = max([left[k].host.end for k in released] + [a])
    busy = sorted((u.host.start, u.host.end) for u in (*left, *right))
    points, at = [], floor
    for start, end in busy:
        if start > at:
            points.append((at, min(start, b)))
        at = max(at, end)
    if at < b:
        points.append((at, b))
    best = None
    for lo, hi in points:
        if hi <= lo:
            continue
        t = min(max(middle, lo), hi) if lo < middle < hi else (lo + hi) / 2
        if best is None or abs(t - middle) < abs(best - middle):
            best = t
    return middle if best is None else best


def join_seam(tail: Tail, span: ChunkSpan, units: list[Unit], settings: StitchSettings) -> list[Unit]:
    """The units to release at the seam between `tail`'s chunk and the next chunk: held ones and new ones.

    1. Align: per channel, the two chunks' words around the overlap are paired by sequence alignment (`_align`).
    2. Hand over (`_handover`) at the aligned word nearest the overlap's middle; inside the aligned stretch words
       are taken by their place in the alignment, outside it by the midpoint rule around the hand-over time
       (without an alignment, around the overlap's middle).
    3. Pairs are one word (merged or, when the earlier copy is out already, dropped); then the old pairing rules
       (`_pair`) and the repeat check (`_seam_repeats`) as safety nets.
    """
    b = tail.span.end_time
    a = min(span.start_time, b)
    middle = (a + b) / 2
    held = list(tail.held)
    candidates = held + list(tail.context)
    released = set(range(len(held), len(candidates)))
    used: set[int] = set()
    twin: dict[int, int] = {}  # new unit index -> candidate index, from the alignment
    cut_of: dict[str | None, float] = {}
    decided_old: dict[int, bool] = {}  # candidate index -> kept, for units the alignment decides
    decided_new: dict[int, bool] = {}  # new unit index -> kept
    if b - a > MATCH_EPS:
        for channel in {u.host.channel for u in candidates} | {u.host.channel for u in units}:
            left = [k for k, u in enumerate(candidates)
                    if u.host.channel == channel and u.host.end > a - MAX_SHIFT]
            left.sort(key=lambda k: (candidates[k].host.start, candidates[k].host.end))
            right = [k for k, u in enumerate(units) if u.host.channel == channel and u.host.start < b + MAX_SHIFT]
            pairs = _align([candidates[k] for k in left], [units[k] for k in right])
            for i, j in pairs:
                twin[right[j]] = left[i]
                used.add(left[i])
            hand = _handover([candidates[k] for k in left], [units[k] for k in right], pairs,
                             {n for n, k in enumerate(left) if k in released}, a, b)
            cut_of[channel] = hand.time
            if hand.aligned:
                for n in range(hand.span_left[0], hand.span_left[1] + 1):
                    decided_old[left[n]] = n in hand.left
                for n in range(hand.span_right[0], hand.span_right[1] + 1):
                    decided_new[right[n]] = n in hand.right
    merged: dict[int, Unit] = {}
    merged_from: dict[int, int] = {}  # held index -> the new unit merged into it
    kept_new: list[int] = []
    for n, unit in enumerate(units):
        cut = cut_of.get(unit.host.channel, middle)
        j = twin.get(n)
        if j is None and n not in decided_new and unit.host.start < b + MATCH_EPS:
            j = _pair(candidates, used, unit, b if b - a <= MATCH_EPS else None)
            if j is not None:
                used.add(j)
        if j is not None:
            if j < len(held):
                merged[j] = _merge(held[j], unit, cut)
                merged_from[j] = n
            continue  # the same word as an earlier copy: merged into it (held) or already out (context)
        keep = decided_new.get(n)
        if keep is None:
            keep = unit.host.mid >= max(cut, b - settings.context_seconds)  # earlier, the previous chunk spoke
        if keep:
            kept_new.append(n)
    kept = [i for i, h in enumerate(held)
            if i in merged or decided_old.get(i, h.host.mid < cut_of.get(h.host.channel, middle))]
    kept_old = [merged.get(i, held[i]) for i in kept]
    left_units = sort_units([*tail.context, *kept_old])
    taken: set[int] = set()
    for channel in dict.fromkeys(units[n].host.channel for n in kept_new):  # each channel's own seam
        mine = [n for n in kept_new if units[n].host.channel == channel]
        repeats = _seam_repeats([u for u in left_units if u.host.channel == channel], [units[n] for n in mine],
                                a, b, settings.seam_tolerance)
        taken.update(mine[repeats:])
    # Order: the previous chunk's words in its order up to the hand-over, then the new chunk's in its order
    # (a pair merged after the hand-over takes its new copy's place).
    late = {merged_from[i]: i for i in kept if i in merged
            and merged[i].host.mid >= cut_of.get(merged[i].host.channel, middle)}
    before = [merged.get(i, held[i]) for i in kept if i not in late.values()]
    after = [merged[late[n]] if n in late else units[n] for n in range(len(units)) if n in late or n in taken]
    return _in_order(before, after)


def _in_order(old: list[Unit], new: list[Unit]) -> list[Unit]:
    """Per channel `old` then `new`, each in its given order (the order the alignment decided), channels
    interleaved by time. Two recognisers time the overlap a little differently, so sorting the mix by time could
    swap words ("how talk to" for "how to talk"); a word timed before the word it follows is made to start with
    it."""
    runs = []
    for channel in dict.fromkeys(u.host.channel for u in (*old, *new)):
        run: list[Unit] = []
        for unit in (*(u for u in old if u.host.channel == channel), *(u for u in new if u.host.channel == channel)):
            if run and unit.host.start < run[-1].host.start:
                start = run[-1].host.start
                unit = replace(unit, host=replace(unit.host, start=start, end=max(unit.host.end, start)))
            run.append(unit)
        runs.append(run)
    return list(heapq.merge(*runs, key=lambda u: u.host.start))


def split_release(units: list[Unit], span: ChunkSpan, settings: StitchSettings) -> tuple[list[Unit], list[Unit]]:
    """(released now, held for the next chunk): hold from the first unit ending near the chunk's end on."""
    if span.last:
        return units, []
    edge = span.end_time - settings.hold_seconds
    for i, unit in enumerate(units):
        if unit.host.end > edge:
            return units[:i], units[i:]
    return units, []


def context_of(released: list[Unit], tail: Tail | None, span: ChunkSpan, settings: StitchSettings) -> tuple[Unit, ...]:
    """Released units recent enough that the next chunk may repeat them."""
    floor = span.end_time - settings.context_seconds
    earlier = tail.context if tail is not None and tail.span.index == span.index - 1 else ()
    return tuple(u for u in (*earlier, *released) if u.host.end > floor)


# --------------------------------------------------------------------------------------------- in order


@dataclass(frozen=True, slots=True)
class Release:
    """Units that became final together, for one chunk's segment (or the held tail of a chunk whose successor
    failed: `part` == "tail"). `supersedes` is the time span the release is authoritative for (None on error)."""

    span: ChunkSpan
    units: tuple[Unit, ...]
    supersedes: tuple[float, float] | None
    language: str
    job_id: str | None
    attempts: int
    error: str | None = None
    part: str = "segment"
    call: CallSettings = NO_SETTINGS  # the chunk's (effective) settings and the call's metadata
    warnings: tuple[str, ...] = ()
    billed_seconds: float = 0.0  # the chunk's job's (a held tail: 0, its chunk's segment counted it)


@dataclass(frozen=True, slots=True)
class Completion:
    """The call is complete: every chunk up to the last one has been released."""

    call_id: str
    chunks: int
    failed_chunks: int
    words: int
    audio_seconds: float
    gaps_filled: int
    speakers: tuple[str, ...]
    language: str
    closed_at: float
    call: CallSettings = NO_SETTINGS  # the last chunk's
    billed_seconds: float = 0.0  # every chunk's job's, summed


def _speakers(units: Iterable[Unit]) -> set[str]:
    return {t.speaker for u in units for t in u.tokens() if t.speaker is not None}


def _word_count(units: Iterable[Unit]) -> int:
    return sum(1 for u in units if u.host.kind == "word")


@evolvable
@dataclass(slots=True)
class CallTimeline:
    """One call's stitching state: results wait here until every earlier chunk has been released.

    Picklable and small: out-of-order results, the previous chunk's tail, and counters.
    """

    call_id: str
    next_index: int = 0
    waiting: dict[int, ChunkResult] | None = None
    tail: Tail | None = None
    failed: int = 0
    words: int = 0
    gaps_filled: int = 0
    speakers: frozenset[str] = frozenset()
    language: str = UNDETERMINED_LANGUAGE
    completed: bool = False
    billed_seconds: float = 0.0

    def push(self, result: ChunkResult, settings: StitchSettings,
             relabel: Relabel | None = None) -> list[Release | Completion]:
        """Accept one result (any order, repeats ignored); return what became releasable, in chunk order.

        `relabel(span, transcript) -> transcript` (optional) maps speaker labels, called in chunk order.
        """
        index = result.span.index
        if index < self.next_index:
            return []
        if self.completed:
            if index != self.next_index:
                return []
            # The call went idle (its chunk was cut as the last) and then spoke again: its next chunk reopens
            # the timeline, whose counts carry on, and a later call_completed (with a new id) supersedes this one.
            self.completed = False
        waiting = self.waiting if self.waiting is not None else {}
        waiting.setdefault(index, result)
        out: list[Release | Completion] = []
        while self.next_index in waiting and not self.completed:
            out.extend(self._release(waiting.pop(self.next_index), settings, relabel))
            self.next_index += 1
        self.waiting = waiting or None
        return out

    def _release(self, result: ChunkResult, settings: StitchSettings,
                 relabel: Relabel | None) -> list[Release | Completion]:
        span = result.span
        self.gaps_filled += span.gaps_filled
        self.billed_seconds += result.billed_seconds
        error, units, language = result.error, [], self.language
        if error is None and result.transcript is None:
            error = "no transcript"
        if error is None:
            try:
                transcript = relabel(span, result.transcript) if relabel is not None else result.transcript
                units, language = chunk_units(replace(result, transcript=transcript))
            except ContractError as exc:
                error = f"bad transcript: {exc}"
        out: list[Release | Completion] = []
        if error is not None:
            self.failed += 1
            if self.tail is not None and self.tail.held:
                out.append(self._note(Release(
                    span=self.tail.span, units=self.tail.held, job_id=self.tail.job_id, attempts=self.tail.attempts,
                    supersedes=(self.tail.released_until, max(self.tail.released_until, self.tail.span.end_time)),
                    language=self.tail.language, part="tail", call=self.tail.call,
                )))
            self.tail = None
            out.append(Release(span=span, units=(), supersedes=None, language=language, job_id=result.job_id,
                               attempts=result.attempts, error=error, call=result.call, warnings=result.warnings,
                               billed_seconds=result.billed_seconds))
        else:
            self.language = language
            follows = self.tail is not None and self.tail.span.index == span.index - 1
            if follows:
                assert self.tail is not None
                units = join_seam(self.tail, span, units, settings)
                lo = self.tail.released_until
            else:
                lo = span.start_time
            released, held = split_release(units, span, settings)
            hi = max(lo, held[0].host.start if held else span.end_time)
            out.append(self._note(Release(span=span, units=tuple(released), supersedes=(lo, hi), language=language,
                                          job_id=result.job_id, attempts=result.attempts, call=result.call,
                                          warnings=result.warnings, billed_seconds=result.billed_seconds)))
            self.tail = Tail(span=span, job_id=result.job_id, attempts=result.attempts, language=language,
                             released_until=hi, held=tuple(held),
                             context=context_of(released, self.tail if follows else None, span, settings),
                             call=result.call)
        if span.last:
            self.completed = True
            self.tail = None
            out.append(Completion(
                call_id=self.call_id, chunks=span.index + 1, failed_chunks=self.failed, words=self.words,
                audio_seconds=span.end_time, gaps_filled=self.gaps_filled, speakers=tuple(sorted(self.speakers)),
                language=self.language, closed_at=span.closed_at, call=result.call,
                billed_seconds=self.billed_seconds,
            ))
        return out

    def _note(self, release: Release) -> Release:
        self.words += _word_count(release.units)
        self.speakers = self.speakers | _speakers(release.units)
        return release
