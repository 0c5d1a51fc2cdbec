"""Which word a punctuation mark belongs to, and how words read as text (pure: no I/O).

One rule for the flow (the stitcher groups a chunk's results into units) and the read side (`CallTranscript`,
`tail`), so the two never disagree:

- Each channel is its own timeline. A json-v2 result list of a two-channel job interleaves the channels by time,
  so the result before a punctuation mark is often a word of the other party; a mark belongs to a word of its
  own channel (results without a channel form one timeline).
- In its channel, `attaches_to: next` punctuation joins the following word, any other the preceding one;
  punctuation with no such word stands alone (never joined to another channel's word).
- A mark takes the speaker of the word it joins (it is not voiced) and a time inside that word.

Display text glues punctuation to the side it attaches to. Words that carry a `channel` (channel diarization)
read as one line per turn, `label: text`: interleaving two parties' words by time, word by word, reads as neither.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
Word = Mapping[str, Any]

GLUE_BEFORE = ("previous", "both")  # no space before such punctuation
GLUE_AFTER = ("next", "both")  # no space after it


def group(items: Iterable[T], *, is_word: Callable[[T], bool], attaches_to: Callable[[T], str | None],
          channel: Callable[[T], Hashable]) -> list[list[T]]:
    """`items` (words and punctuation in result order) as groups: a word with the punctuation attached to it, or
    punctuation with no word of its channel to attach to. Groups come in the order of their words in `items`."""
    groups: list[list[T]] = []
    last: dict[Hashable, int] = {}  # channel -> index of its latest group
    waiting: dict[Hashable, list[T]] = {}  # channel -> `next` punctuation before its word
    for item in items:
        ch = channel(item)
        pending = waiting.setdefault(ch, [])
        if is_word(item):
            groups.append([*pending, item])
            pending.clear()
            last[ch] = len(groups) - 1
        elif attaches_to(item) == "next":
            pending.append(item)
        elif ch in last and not pending:
            groups[last[ch]].append(item)
        else:
            groups.extend([t] for t in pending)
            pending.clear()
            groups.append([item])
            last[ch] = len(groups) - 1
    for pending in waiting.values():
        groups.extend([t] for t in pending)
    return groups


def _is_word(word: Word) -> bool:
    return word["type"] == "word"


def _attaches(word: Word) -> str | None:
    return word.get("attaches_to")


def _channel(word: Word) -> Any:
    return word.get("channel")


def word_groups(words: Iterable[Word]) -> list[list[Word]]:
    """Event word dicts (`schemas/transcript_event.schema.json`) grouped by `group`."""
    return group(words, is_word=_is_word, attaches_to=_attaches, channel=_channel)


def host_of(words: Sequence[Word]) -> Word:
    """The word of a group (its first mark when it has none)."""
    return next((w for w in words if w["type"] == "word"), words[0])


def placed(words: Sequence[Word]) -> list[Word]:
    """A group's words with each mark inside its word: the word's speaker, a time within the word's (events
    written before the rule gave a mark the time and speaker of the other party's word)."""
    host = host_of(words)
    if host["type"] != "word":
        return list(words)
    out = []
    for word in words:
        if word is not host:
            at = min(max(word["start_time"], host["start_time"]), host["end_time"])
            if (at, at, host.get("speaker")) != (word["start_time"], word["end_time"], word.get("speaker")):
                word = {**word, "start_time": at, "end_time": at, "speaker": host.get("speaker")}
        out.append(word)
    return out


def display_text(words: Iterable[Word]) -> str:
    """Words joined with spaces; punctuation glued to the side it attaches to (`previous` when unknown)."""
    parts: list[str] = []
    glue_next = True
    for word in words:
        attaches = (word.get("attaches_to") or "previous") if word["type"] == "punctuation" else None
        if parts and not glue_next and attaches not in GLUE_BEFORE:
            parts.append(" ")
        parts.append(word["text"])
        glue_next = attaches in GLUE_AFTER
    return "".join(parts)


def turn_key(word: Word) -> tuple[Any, Any]:
    """What a turn shares: one channel and one speaker."""
    return word.get("channel"), word.get("speaker")


def label_of(word: Word) -> str | None:
    """A turn's label: its speaker, else its channel."""
    return word.get("speaker") or word.get("channel")


def runs(groups: Iterable[T], key: Callable[[T], Hashable]) -> list[list[T]]:
    """Consecutive groups with the same key."""
    out: list[list[T]] = []
    last: Any = object()
    for item in groups:
        k = key(item)
        if not out or k != last:
            out.append([])
            last = k
        out[-1].append(item)
    return out


def speaker_turns(words: Iterable[Word]) -> list[tuple[str | None, str]]:
    """(label, display text) per turn of a word list in its order: groups by `group`, turns by channel and speaker."""
    turns = runs(word_groups(words), lambda g: turn_key(host_of(g)))
    return [(label_of(host_of(turn[0])), display_text(w for g in turn for w in g)) for turn in turns]


def transcript_text(words: Sequence[Word]) -> str:
    """A word list as display text: one line per turn, `label: text`, when its words carry a channel (channel
    diarization); else the words in one line, without labels."""
    if not any(w.get("channel") is not None for w in words):
        return display_text(words)
    return "\n".join(f"{label}: {text}" if label else text for label, text in speaker_turns(words))
