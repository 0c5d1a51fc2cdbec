"""What flows between the stages: a chunk of one call's audio, what became of its transcription job, and the
announcement that a call started (which passes through submission and stitching to become its call_started event).

Every chunk carries its call's settings (`CallSettings`: the per-call config of its start message and the metadata),
as they were when the chunk was cut, so each stage shapes the chunk's job and events from the chunk alone, and a
restored snapshot keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bytewax.speechmatics.schemas.call_start import NO_SETTINGS, CallSettings
from bytewax.speechmatics.schemas.frames import BYTES_PER_SAMPLE
from bytewax.speechmatics.schemas.snapshots import evolvable

#: (topic, partition, first offset, last offset) of the frames a chunk was cut from: enough to replay it.
SourceRange = tuple[str, int, int, int]


@evolvable
@dataclass(frozen=True, slots=True)
class ChunkSpan:
    """Where a chunk lies in its call (samples are per channel, counted from the call's first sample).

    The chunk covers samples [start_sample, end_sample). Its first `overlap_samples` repeat the end of the
    previous chunk, so the chunks minus their overlaps concatenate to the call's audio exactly.
    """

    call_id: str
    index: int
    start_sample: int
    end_sample: int
    overlap_samples: int
    sample_rate: int
    encoding: str
    channels: int
    gaps_filled: int = 0  # missing frames replaced by silence inside this chunk
    last: bool = False
    closed_at: float = 0.0  # wall-clock time (time.time()) the chunk was cut: the latency clock starts here

    @property
    def start_time(self) -> float:
        return self.start_sample / self.sample_rate

    @property
    def end_time(self) -> float:
        return self.end_sample / self.sample_rate

    @property
    def overlap_end_time(self) -> float:
        """End of the span this chunk shares with the previous one (== start_time when none)."""
        return (self.start_sample + self.overlap_samples) / self.sample_rate

    @property
    def duration(self) -> float:
        return (self.end_sample - self.start_sample) / self.sample_rate

    @property
    def reference(self) -> str:
        """The job's idempotency key at the API: tracking.reference."""
        return f"{self.call_id}/{self.index}"


@evolvable
@dataclass(frozen=True, slots=True)
class Chunk:
    """A chunk's span plus its audio, in the frames' own encoding (WAV-encoded only at submission)."""

    span: ChunkSpan
    audio: bytes
    source: tuple[SourceRange, ...] = ()
    call: CallSettings = NO_SETTINGS  # the call's config (overrides of the flow's defaults) and metadata
    warnings: tuple[str, ...] = ()  # said once, on the first chunk cut after what caused them (a second start)

    @property
    def new_audio(self) -> bytes:
        """The audio this chunk adds to the call: everything after its overlap."""
        width = BYTES_PER_SAMPLE[self.span.encoding] * self.span.channels
        return self.audio[self.span.overlap_samples * width :]


@evolvable
@dataclass(frozen=True, slots=True)
class ChunkResult:
    """The outcome of one chunk's job: a json-v2 transcript, or the reason it failed (never both).

    `call` is the call's *effective* settings for this chunk: the config its job really asked for (the call's own
    settings merged over the flow's defaults by submission) and the call's metadata.
    """

    span: ChunkSpan
    transcript: dict[str, Any] | None = None
    error: str | None = None
    job_id: str | None = None
    attempts: int = 1
    source: tuple[SourceRange, ...] = field(default=())
    call: CallSettings = NO_SETTINGS
    warnings: tuple[str, ...] = ()
    billed_seconds: float = 0.0  # seconds of audio the job was sent (0: not sent)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class CallStarted:
    """A call was seen for the first time (its start message, or its first frame when it has none).

    The chunker emits it once per call, before the call's first chunk; submission resolves `call.config` to the
    effective config (what the call's jobs ask for) and passes it on; stitching turns it into the call_started
    event. Deterministic: it depends only on the input (no clock), so a replay repeats it byte for byte.
    """

    call_id: str
    call: CallSettings = NO_SETTINGS
    warnings: tuple[str, ...] = ()
