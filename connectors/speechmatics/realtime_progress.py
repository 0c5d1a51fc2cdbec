"""What the real-time bridge persists so that kill -9 costs nothing: pure bookkeeping, no Kafka, no I/O.

The bridge reads `calls.audio` with its own consumer group, and the only state it keeps outside memory is that
group's committed offsets, each with a small metadata string. Per partition:
- the committed offset is the first message (start message or frame) of the oldest call still streaming, or
  the position when none is: a restart reads every unfinished call again from its beginning, so it sees the
  call's start message (its settings) and can count the audio already acknowledged (the new session's time
  offset);
- the metadata lists, for every call with a message at or after that offset, the highest frame `seq` the API
  acknowledged (`AudioAdded`) in any session, the sessions started so far and whether the call is done. A
  restarted bridge skips acknowledged frames, numbers its next session after the last one, and leaves finished
  calls alone.
A commit happens only after the messages produced so far are acknowledged by Kafka, so what the metadata calls
acknowledged is on `calls.rt`. Audio acknowledged after the last commit is streamed again, into a new session
(at most BWSM_RT_COMMIT_SECONDS of it): never twice into one session.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson

log = logging.getLogger(__name__)

#: Kafka's default `offset.metadata.max.bytes` is 4096; calls beyond this budget are left out (logged).
MAX_METADATA_BYTES = 3800
_VERSION = 1


@dataclass
class CallProgress:
    """One call as the bridge has seen it in one partition."""

    call_id: str
    first_offset: int
    last_offset: int
    acked_seq: int = -1  # highest frame seq acknowledged by the API, any session
    sessions: int = 0  # sessions started for the call so far
    done: bool = False  # nothing more to stream (EndOfTranscript, a final error, or batch-only)


def encode_metadata(calls: list[CallProgress]) -> str:
    """The commit metadata for these calls (unfinished ones first, so a full budget drops finished calls first)."""
    entries: dict[str, list[int]] = {}
    size = 16
    for call in sorted(calls, key=lambda c: (c.done, c.first_offset)):
        item = [call.acked_seq, call.sessions, int(call.done)]
        cost = len(orjson.dumps({call.call_id: item})) + 1
        if size + cost > MAX_METADATA_BYTES:
            log.warning("real-time progress of %d calls left out of a commit (metadata budget)",
                        len(calls) - len(entries))
            break
        entries[call.call_id] = item
        size += cost
    return orjson.dumps({"v": _VERSION, "c": entries}).decode()


def decode_metadata(text: str | None) -> dict[str, tuple[int, int, bool]]:
    """call id -> (acked seq, sessions, done) from commit metadata; {} for none or metadata of another kind."""
    if not text:
        return {}
    try:
        doc = orjson.loads(text)
        return {str(call): (int(v[0]), int(v[1]), bool(v[2])) for call, v in doc["c"].items()} \
            if doc.get("v") == _VERSION else {}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError, AttributeError):
        log.warning("real-time progress metadata unreadable: starting those calls afresh")
        return {}


class PartitionProgress:
    """The calls of one partition since its committed offset, and what may be committed next."""

    def __init__(self, restored: dict[str, tuple[int, int, bool]] | None = None) -> None:
        self.restored = dict(restored or {})
        self.calls: dict[str, CallProgress] = {}
        self.position: int | None = None  # the offset after the last message read

    def seen(self, call_id: str, offset: int) -> tuple[CallProgress, bool]:
        """The call's progress after reading one of its messages at `offset`; True when it is new here."""
        self.position = offset + 1 if self.position is None else max(self.position, offset + 1)
        call = self.calls.get(call_id)
        if call is not None:
            call.last_offset = max(call.last_offset, offset)
            return call, False
        call = CallProgress(call_id, offset, offset)
        if call_id in self.restored:
            call.acked_seq, call.sessions, call.done = self.restored.pop(call_id)
        self.calls[call_id] = call
        return call, True

    def commit_point(self) -> tuple[int, str] | None:
        """(offset, metadata) to commit now, or None before any message; forgets calls wholly behind it."""
        if self.position is None:
            return None
        open_starts = [c.first_offset for c in self.calls.values() if not c.done]
        offset = min(open_starts, default=self.position)
        for call_id in [c.call_id for c in self.calls.values() if c.last_offset < offset]:
            del self.calls[call_id]
        # restored calls not read again yet still have messages ahead (at or after the position): keep them
        ahead = [CallProgress(call_id, self.position, self.position, *state)
                 for call_id, state in self.restored.items()]
        return offset, encode_metadata([*self.calls.values(), *ahead])
