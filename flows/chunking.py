"""Per-call chunking, as pure code: reorder frames by seq, fill lost frames with silence, cut chunks.

No Bytewax here (flows/chunker.py wraps CallChunker in a stateful operator), so every rule below is
unit- and property-tested on its own.

Rules (all lengths are samples per channel, counted from the call's first sample):
- Reorder: frames are released in seq order. A frame whose seq was already released (or filled) is dropped
  and counted as a duplicate: replays after recovery and producer retries are normal. A missing seq is
  waited for until a frame `reorder_window_frames` or more seqs ahead of it arrives; then it is filled
  with silence and never blocks the call.
- Length of a filled frame: the length of the last real frame released before it (producers send frames of
  a fixed size; the call's final frame may be shorter, so the frame *after* a gap is not trusted); when no
  frame has been released yet, the length of the first frame received. Empty frames are never a reference.
- A seq more than `max_gap_frames` ahead of the next expected one is refused (dead letter): filling it
  would mean allocating minutes of silence for what is almost certainly a producer bug.
- fixed: chunks of `chunk_seconds` (overlap included); each next chunk starts `overlap_seconds` before the
  previous one ended.
- vad: once a chunk holds `vad_min_seconds`, webrtcvad classifies its audio from that point on, each VAD
  frame once (a cursor); at the first run of non-speech frames lasting `vad_min_silence_seconds` the chunk
  is cut in the middle of that run, with no overlap. A chunk that reaches `vad_max_seconds` is forced to
  cut there, and the next chunk starts with the fixed overlap so no word is lost.
- The `end` frame flushes at once: every seq still missing before the highest one held is filled, and the
  last chunk is marked `last`. An idle flush (no frames for `idle_timeout_seconds`, driven by the operator)
  does the same; frames arriving after an idle flush continue the call with the next chunk index.
- After an `end`, frames with a seq at or below the end's are duplicates; frames beyond it are refused.
- A frame refused for its format (the call's format is its first frame's) leaves its seq missing, so it is
  filled with silence like a lost frame: the call's timeline keeps its length, the frame is in the DLQ.
- `last` marks the chunk that closed the call (end or idle). A chunk cut with no audio after it yet is held
  back until more audio comes (then it leaves as is) or the call closes (then it leaves marked `last`), so
  a call never ends in an empty chunk. The one zero-length chunk (start == end, no audio) is the last chunk
  of a call that had no audio at all; downstream must pass it on without submitting it.
- VAD repeatability: each chunk's scan starts with a fresh webrtcvad (which adapts to what it has heard);
  after a restore, the frames already classified are fed again first, so a resumed run cuts identically.

Per-call settings (the start message, schemas/call_start.py):
- The call is announced once, by a `CallStarted` emitted before its first chunk: when its start message is seen,
  or its first frame when no start message came first. It carries the call's settings and `warnings` (a refused
  start message: the call uses the flow's defaults). It depends on the input only, so a replay repeats it exactly.
- Every chunk carries the call's settings as they were when it was cut (`Chunk.call`); they are part of the
  snapshot, so a call restored before its first chunk keeps them.
- A start message for a call already started (a second one, or one after the first frame) applies to the chunks
  cut after it; the first of those carries a warning saying so (a refused one changes nothing but says so too).
  A start message for a call that has ended is refused (dead letter); a refused marker adds nothing to the DLQ
  (decode already dead-lettered its message).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, replace

from bytewax.speechmatics.flows.frame_marks import FrameMarks, MarksState
from bytewax.speechmatics.flows.vad import AGGRESSIVENESS, VAD_FRAME_MS, SpeechDetector
from bytewax.speechmatics.schemas.call_start import NO_SETTINGS, CallSettings, CallStart, settings_value
from bytewax.speechmatics.schemas.chunks import CallStarted, Chunk, ChunkSpan
from bytewax.speechmatics.schemas.dead_letters import DeadLetter, bad_message
from bytewax.speechmatics.schemas.frames import BYTES_PER_SAMPLE, AudioFrame, encode_frame
from bytewax.speechmatics.schemas.snapshots import evolvable

POLICIES = ("fixed", "vad")
STAGE = "chunker"

#: Cut reasons (the label of the chunks-cut metric).
CUT_FIXED = "fixed"
CUT_PAUSE = "vad_pause"
CUT_FORCED = "vad_forced"
CUT_END = "end"
CUT_IDLE = "idle"

AudioFormat = tuple[int, str, int]
#: Frames appended before they are sealed into one block (about 1.3 s of 20 ms frames).
SEAL_PARTS = 64
#: What the chunker emits for a call.
Output = list[Chunk | CallStarted | DeadLetter]






@dataclass(frozen=True, slots=True)
class ChunkConfig:
    """How calls are cut (each field's comment names the variable `Settings.from_env` reads for it)."""

    policy: str = "vad"  # BWSM_CHUNK_POLICY: fixed | vad
    chunk_seconds: float = 30.0  # BWSM_CHUNK_SECONDS (fixed window, overlap included)
    overlap_seconds: float = 1.0  # BWSM_CHUNK_OVERLAP_SECONDS (fixed windows and forced VAD cuts)
    vad_min_seconds: float = 25.0  # BWSM_VAD_MIN_SECONDS
    vad_max_seconds: float = 35.0  # BWSM_VAD_MAX_SECONDS
    vad_min_silence_seconds: float = 0.3  # BWSM_VAD_MIN_SILENCE_SECONDS
    vad_aggressiveness: int = 2  # BWSM_VAD_AGGRESSIVENESS: 0..3
    vad_frame_ms: int = 30  # BWSM_VAD_FRAME_MS: 10 | 20 | 30
    idle_timeout_seconds: float = 10.0  # BWSM_IDLE_TIMEOUT_SECONDS
    forget_seconds: float = 3600.0  # BWSM_FORGET_SECONDS: how long a flushed call's tombstone is kept
    reorder_window_frames: int = 50  # BWSM_REORDER_WINDOW_FRAMES
    max_gap_frames: int = 30000  # BWSM_MAX_GAP_FRAMES

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"BWSM_CHUNK_POLICY must be one of {POLICIES}, got {self.policy!r}")
        if not 0 <= self.overlap_seconds < self.chunk_seconds:
            raise ValueError("BWSM_CHUNK_OVERLAP_SECONDS must be >= 0 and below BWSM_CHUNK_SECONDS")
        if not self.overlap_seconds < self.vad_min_seconds <= self.vad_max_seconds:
            raise ValueError("need BWSM_CHUNK_OVERLAP_SECONDS < BWSM_VAD_MIN_SECONDS <= BWSM_VAD_MAX_SECONDS")
        if self.vad_min_silence_seconds <= 0:
            raise ValueError("BWSM_VAD_MIN_SILENCE_SECONDS must be > 0")
        if self.vad_aggressiveness not in AGGRESSIVENESS:
            raise ValueError(f"BWSM_VAD_AGGRESSIVENESS must be one of {AGGRESSIVENESS}")
        if self.vad_frame_ms not in VAD_FRAME_MS:
            raise ValueError(f"BWSM_VAD_FRAME_MS must be one of {VAD_FRAME_MS}")
        if self.idle_timeout_seconds <= 0 or self.forget_seconds <= 0:
            raise ValueError("BWSM_IDLE_TIMEOUT_SECONDS and BWSM_FORGET_SECONDS must be > 0")
        if self.reorder_window_frames < 0 or self.max_gap_frames < self.reorder_window_frames:
            raise ValueError("need 0 <= BWSM_REORDER_WINDOW_FRAMES <= BWSM_MAX_GAP_FRAMES")

    @property
    def max_seconds(self) -> float:
        """The longest chunk this configuration can cut."""
        return self.chunk_seconds if self.policy == "fixed" else self.vad_max_seconds


def silence(encoding: str, nbytes: int) -> bytes:
    """Digital silence in the given encoding (mu-law's zero level is 0xFF, not 0x00)."""
    return (b"\xff" if encoding == "mulaw" else b"\x00") * nbytes


class CallContext:
    """The settings chunks of the call are cut with now, and the warnings the next chunk cut will carry.

    Shared by a CallChunker and its Cutter (which only reads the settings and takes the warnings).
    """

    __slots__ = ("settings", "warnings")

    def __init__(self, settings: CallSettings = NO_SETTINGS, warnings: tuple[str, ...] = ()) -> None:
        self.settings = settings
        self.warnings = warnings


class Tally:
    """Counts since the operator last published them as metrics (kept out of the snapshot on purpose)."""

    __slots__ = ("frames", "duplicates", "gaps", "dead", "cuts")

    def __init__(self) -> None:
        self.frames = self.duplicates = self.gaps = self.dead = 0
        self.cuts: dict[str, int] = {}


#: Returned by ReorderBuffer.push for a frame it refuses.
DUPLICATE = "duplicate"
TOO_FAR = "too_far"


class ReorderBuffer:
    """Releases one call's frames in seq order; an int in the output is a lost frame's silence, in bytes.

    It only sees frames of the call's one audio format (others are refused before), so bytes measure length.
    """

    __slots__ = ("next_seq", "pending", "ref_bytes", "window", "max_gap")

    def __init__(self, window: int, max_gap: int, next_seq: int = 0,
                 pending: dict[int, AudioFrame] | None = None, ref_bytes: int = -1) -> None:
        self.window = window
        self.max_gap = max_gap
        self.next_seq = next_seq
        self.pending: dict[int, AudioFrame] = dict(pending or {})
        self.ref_bytes = ref_bytes  # bytes a lost frame is filled with; -1 until a frame with audio is seen

    def push(self, frame: AudioFrame) -> list[AudioFrame | int] | str:
        """The frames (and fills) this frame releases, or DUPLICATE / TOO_FAR."""
        seq = frame.seq
        nxt = self.next_seq
        if seq == nxt and not self.pending:  # the hot path: in order, nothing held
            self.next_seq = nxt + 1
            if frame.audio:
                self.ref_bytes = len(frame.audio)
            return [frame]
        if seq < nxt or seq in self.pending:
            return DUPLICATE
        if seq - nxt > self.max_gap:
            return TOO_FAR
        self.pending[seq] = frame
        if self.ref_bytes < 0 and frame.audio:
            self.ref_bytes = len(frame.audio)
        return self.release(force=False)

    def release(self, force: bool) -> list[AudioFrame | int]:
        """Release in order; fill a missing seq once the window has passed it (or at once when forced)."""
        out: list[AudioFrame | int] = []
        pending = self.pending
        if not pending:
            return out
        highest = max(pending)
        nxt = self.next_seq
        while pending:
            frame = pending.pop(nxt, None)
            if frame is not None:
                out.append(frame)
                if frame.audio:
                    self.ref_bytes = len(frame.audio)
            elif force or highest - nxt >= self.window:
                out.append(max(self.ref_bytes, 0))
            else:
                break
            nxt += 1
        self.next_seq = nxt
        return out


@evolvable
@dataclass(frozen=True, slots=True)
class CallSnapshot:
    """Everything a call's chunker needs to resume: plain values and bytes (small, picklable)."""

    call_id: str
    audio_format: AudioFormat | None
    next_seq: int
    pending: tuple[AudioFrame, ...]
    ref_bytes: int
    index: int
    start: int
    overlap: int
    audio: bytes | tuple[bytes, ...]  # the held audio's blocks (bytes: one block)
    markers: MarksState | tuple[tuple[int, tuple[str, int, int] | None], ...]  # tuples: an older snapshot
    vad_pos: int
    run_start: int
    open: bool
    end_seq: int  # -1 while the call has not ended
    held: Chunk | None = None
    touched_at: float = 0.0  # wall clock of the call's last frame or flush (set by the operator, for its timers)
    settings: CallSettings = NO_SETTINGS  # the call's settings (its start message), for the chunks still to cut
    started: bool = False  # CallStarted was emitted
    warnings: tuple[str, ...] = ()  # for the next chunk cut


class Cutter:
    """Holds the open chunk's audio and cuts it by the policy; knows nothing of seqs."""

    def __init__(self, config: ChunkConfig, call_id: str, audio_format: AudioFormat, tally: Tally,
                 clock: Callable[[], float], context: CallContext | None = None) -> None:
        self.config = config
        self.context = context or CallContext()
        self.call_id = call_id
        self.rate, self.encoding, self.channels = audio_format
        self.width = BYTES_PER_SAMPLE[self.encoding] * self.channels
        self.tally = tally
        self.clock = clock
        rate = self.rate
        self.overlap_len = round(config.overlap_seconds * rate)
        self.fixed_len = round(config.chunk_seconds * rate)
        self.min_len = round(config.vad_min_seconds * rate)
        self.max_len = round(config.vad_max_seconds * rate)
        self.silence_len = round(config.vad_min_silence_seconds * rate)
        self.vad = config.policy == "vad"
        # Bytes at which a cut may be due: below this, appending a frame costs one comparison.
        self.trigger = (self.min_len if self.vad else self.fixed_len) * self.width
        self.index = 0
        self.start = 0  # call sample where the held audio starts
        self.overlap = 0  # samples at the head of the held audio that repeat the previous chunk
        # The open chunk's audio as blocks of bytes: the frames' own bytes objects as they come, sealed into one
        # block every SEAL_PARTS frames. Appending a frame is a list append (growing one large bytearray costs
        # reallocations and page faults), a snapshot takes the blocks as they are (no join of everything held),
        # and each held byte costs one object header per block, not per 20 ms frame.
        self.parts: list[bytes] = []
        self.sealed = 0  # parts[:sealed] are sealed blocks; the rest are frames since the last seal
        self.nbytes = 0
        self.marks = FrameMarks()
        self.vad_pos = -1  # chunk-relative sample of the next frame to classify; -1: not scanning yet
        self.run_start = -1  # chunk-relative start of the current non-speech run; -1: none
        self._detector: SpeechDetector | None = None
        # A chunk cut with nothing after it yet: it leaves with the next audio, or as the last chunk.
        self.held: Chunk | None = None

    @property
    def new_samples(self) -> int:
        """Samples held beyond the overlap: what a flush would add to the call."""
        return self.nbytes // self.width - self.overlap

    def append(self, audio: bytes, topic: str | None, partition: int, offset: int, out: Output) -> None:
        """Hold one frame's audio (`topic` None: a filled gap), and cut what is due."""
        if self.held is not None and audio:
            out.append(self.held)
            self.held = None
        self.marks.add(self.start + self.nbytes // self.width, topic, partition, offset)
        parts = self.parts
        parts.append(audio)
        if len(parts) - self.sealed >= SEAL_PARTS:
            self.seal()
        self.nbytes += len(audio)
        if self.nbytes >= self.trigger:
            self._cut_due(out)

    def seal(self) -> None:
        """Join the frames appended since the last seal into one block."""
        parts, sealed = self.parts, self.sealed
        if len(parts) - sealed > 1:
            parts[sealed:] = [b"".join(parts[sealed:])]
        self.sealed = len(parts)

    def blocks(self) -> tuple[bytes, ...]:
        """The held audio as sealed blocks (for a snapshot: immutable, shared, nothing joined but the last frames)."""
        self.seal()
        return tuple(self.parts)

    def audio_bytes(self) -> bytes:
        """The held audio as one bytes object (kept as the single part, so joining twice is free)."""
        if len(self.parts) == 1:
            return self.parts[0]
        joined = b"".join(self.parts)
        self._set_parts(joined)
        return joined

    def _set_parts(self, audio: bytes) -> None:
        self.parts = [audio] if audio else []
        self.sealed = len(self.parts)
        self.nbytes = len(audio)

    def _keep_from(self, offset: int) -> None:
        """Drop the held audio before byte `offset`."""
        self._set_parts(self.audio_bytes()[offset:])

    def _bytes(self, lo: int, hi: int) -> bytes:
        """Held bytes [lo, hi): joins only the trailing parts it needs (the VAD reads near the end)."""
        parts = self.parts
        i, pos = len(parts), self.nbytes
        while i > 0 and pos > lo:
            i -= 1
            pos -= len(parts[i])
        return b"".join(parts[i:])[lo - pos : hi - pos]

    def _cut_due(self, out: Output) -> None:
        while True:
            held = self.nbytes // self.width
            if not self.vad:
                if held < self.fixed_len:
                    return
                self._emit(self.fixed_len, self.overlap_len, False, CUT_FIXED, out)
                continue
            if held < self.min_len:
                return
            cut = self._find_pause(min(held, self.max_len))
            if cut is not None:
                self._emit(cut, 0, False, CUT_PAUSE, out)
            elif held >= self.max_len:
                self._emit(self.max_len, self.overlap_len, False, CUT_FORCED, out)
            else:
                return

    def _new_detector(self) -> SpeechDetector:
        cfg = self.config
        return SpeechDetector(self.rate, self.encoding, self.channels, cfg.vad_aggressiveness, cfg.vad_frame_ms)

    def _find_pause(self, limit: int) -> int | None:
        """Classify the VAD frames not yet seen up to `limit`; the cut point if a long enough pause ends them."""
        w = self.width
        if self.vad_pos < 0:
            self.vad_pos, self.run_start, self._detector = self.min_len, -1, None
        if self._detector is None:  # fresh, or restored: replay what was classified so the VAD's state matches
            self._detector = self._new_detector()
            if self.vad_pos > self.min_len:
                self._detector.classify(self._bytes(self.min_len * w, self.vad_pos * w))
        step = self._detector.frame_samples
        count = (limit - self.vad_pos) // step
        if count <= 0:
            return None
        first = self.vad_pos
        flags = self._detector.classify(self._bytes(first * w, (first + count * step) * w))
        self.vad_pos = first + count * step
        for i, speech in enumerate(flags):
            pos = first + i * step
            if speech:
                self.run_start = -1
                continue
            if self.run_start < 0:
                self.run_start = pos
            if pos + step - self.run_start >= self.silence_len:
                return (self.run_start + pos + step) // 2
        return None

    def _emit(self, cut: int, next_overlap: int, last: bool, reason: str, out: Output) -> None:
        """Cut the open chunk at `cut` (chunk-relative) and open the next one `next_overlap` before it."""
        w = self.width
        start, end = self.start, self.start + cut
        held_end = start + self.nbytes // w
        marks = self.marks
        gaps = marks.gaps(start + self.overlap, end, include_hi=last)
        span = ChunkSpan(
            call_id=self.call_id, index=self.index, start_sample=start, end_sample=end,
            overlap_samples=self.overlap, sample_rate=self.rate, encoding=self.encoding,
            channels=self.channels, gaps_filled=gaps, last=last, closed_at=self.clock(),
        )
        audio = self.audio_bytes()
        context = self.context
        chunk = Chunk(span=span, audio=audio if cut * w == len(audio) else audio[: cut * w],
                      source=marks.source_ranges(start, end, held_end), call=context.settings,
                      warnings=context.warnings)
        context.warnings = ()
        self.tally.cuts[reason] = self.tally.cuts.get(reason, 0) + 1
        next_start = end - next_overlap
        marks.drop_before(marks.first_kept(next_start, held_end))
        self._keep_from((next_start - start) * w)
        if last or self.nbytes > next_overlap * w:
            out.append(chunk)
        else:
            self.held = chunk
        self.start, self.overlap, self.index = next_start, next_overlap, self.index + 1
        self.vad_pos, self.run_start, self._detector = -1, -1, None

    def finish(self, reason: str, out: Output) -> None:
        """Flush everything as the call's last chunk: the new audio, else the chunk held back.

        With neither, a call that never had a chunk gets a zero-length one (so downstream still learns that it
        ended); a call already closed by an idle flush gets nothing more.
        """
        if self.new_samples > 0:
            self._emit(self.nbytes // self.width, 0, True, reason, out)
            return
        self._drop_overlap()
        if self.held is not None:
            out.append(replace(self.held, span=replace(self.held.span, last=True)))
            self.held = None
        elif self.index == 0:
            self._emit(0, 0, True, reason, out)

    def _drop_overlap(self) -> None:
        """Forget the overlap head: after a flush the next chunk (if the call revives) starts fresh."""
        self._keep_from(self.overlap * self.width)
        self.start += self.overlap
        self.overlap = 0
        self.marks.drop_before(bisect_left(self.marks.begins, self.start))


class CallChunker:
    """One call: format check, reorder, gap fill, cutting, end/idle flush, tombstone, snapshot/restore."""

    def __init__(self, config: ChunkConfig, snapshot: CallSnapshot | None = None, *,
                 tally: Tally | None = None, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.tally = tally or Tally()
        self.clock = clock
        self.call_id = ""
        self.audio_format: AudioFormat | None = None
        self.reorder = ReorderBuffer(config.reorder_window_frames, config.max_gap_frames)
        self.cutter: Cutter | None = None
        self.open = False  # frames accepted since the last flush: an idle timeout must flush them
        self.end_seq = -1
        self.context = CallContext()
        self.started = False  # CallStarted emitted
        if snapshot is not None:
            self._restore(snapshot)

    @property
    def ended(self) -> bool:
        return self.end_seq >= 0

    def progress(self) -> tuple[float, int]:
        """Seconds of audio received so far (gaps filled included) and chunks cut, for the status board."""
        c = self.cutter
        if c is None:
            return 0.0, 0
        return (c.start + c.nbytes // c.width) / c.rate, c.index

    def push(self, frame: AudioFrame | CallStart, out: Output) -> None:
        """Take one frame (or start message); append the chunks, CallStarted and dead letters it causes to `out`."""
        if frame.__class__ is CallStart:
            self.start(frame, out)  # type: ignore[arg-type]
            return
        cutter = self.cutter
        if cutter is None:
            if not self.started:
                self._announce(frame.call_id, (), out)
            self.call_id, self.audio_format = frame.call_id, frame.audio_format
            cutter = self.cutter = Cutter(self.config, frame.call_id, frame.audio_format, self.tally, self.clock,
                                          self.context)
        elif frame.audio_format != self.audio_format:
            self._refuse(frame, f"audio format changed mid-call: call is {self._fmt(self.audio_format)}, "
                                f"frame seq {frame.seq} is {self._fmt(frame.audio_format)}", out)
            return
        if self.end_seq >= 0 and frame.seq > self.end_seq:
            self._refuse(frame, f"frame seq {frame.seq} arrived after the call ended at seq {self.end_seq}", out)
            return
        released = self.reorder.push(frame)
        if released.__class__ is str:
            if released is DUPLICATE:
                self.tally.duplicates += 1
            else:
                self._refuse(frame, f"frame seq {frame.seq} is more than {self.config.max_gap_frames} frames "
                                    f"ahead of the next expected seq {self.reorder.next_seq}", out)
            return
        self.tally.frames += 1
        self.open = True
        self._append(released, out)
        if frame.end:
            self._flush(CUT_END, out)
            self.end_seq = self.reorder.next_seq - 1

    def start(self, start: CallStart, out: Output) -> None:
        """Take the call's start message (or the marker of a refused one): see the module doc."""
        self.call_id = self.call_id or start.call_id
        if self.end_seq >= 0:
            if start.refused is None:  # a refused one was dead-lettered by decode already
                self._refuse_start(start, f"start message arrived after the call ended at seq {self.end_seq}", out)
            return
        if not self.started:
            warnings: tuple[str, ...] = ()
            if start.refused is None:
                self.context.settings = start.settings
            else:
                warnings = (f"start message refused ({start.refused}): the call uses the flow's defaults",)
            self._announce(start.call_id, warnings, out)
            return
        index = self.cutter.index if self.cutter is not None else 0
        if start.refused is None:
            self.context.settings = start.settings
            warning = (f"start message for a call already started: its settings apply from chunk {index} on "
                       "(earlier chunks keep the earlier ones)")
        else:
            warning = f"a later start message was refused ({start.refused}): the call keeps its settings"
        self.context.warnings = (*self.context.warnings, warning)

    def _announce(self, call_id: str, warnings: tuple[str, ...], out: Output) -> None:
        out.append(CallStarted(call_id, self.context.settings, warnings))
        self.started = True

    def _refuse_start(self, start: CallStart, reason: str, out: Output) -> None:
        key = start.call_id.encode("utf-8")
        out.append(bad_message(f"{reason} (call {start.call_id!r})", STAGE, key, settings_value(start.settings),
                               [("kind", b"start")], start.topic, start.partition, start.offset))
        self.tally.dead += 1

    def flush_idle(self, out: Output) -> None:
        """The call went quiet: flush what it holds as a last chunk (it may still revive)."""
        if self.open:
            self._flush(CUT_IDLE, out)

    def _flush(self, reason: str, out: Output) -> None:
        self._append(self.reorder.release(force=True), out)
        assert self.cutter is not None
        self.cutter.finish(reason, out)
        self.open = False

    def _append(self, released: list[AudioFrame | int], out: Output) -> None:
        cutter = self.cutter
        assert cutter is not None
        append = cutter.append
        for item in released:
            if item.__class__ is int:
                self.tally.gaps += 1
                append(silence(cutter.encoding, item), None, -1, -1, out)
            else:
                append(item.audio, item.topic, item.partition, item.offset, out)

    def _refuse(self, frame: AudioFrame, reason: str, out: Output) -> None:
        key, value, headers = encode_frame(frame)
        out.append(bad_message(f"{reason} (call {frame.call_id!r})", STAGE, key, value, list(headers),
                               frame.topic, frame.partition, frame.offset))
        self.tally.dead += 1

    @staticmethod
    def _fmt(fmt: AudioFormat | None) -> str:
        if fmt is None:
            return "unknown"
        rate, encoding, channels = fmt
        return f"{rate} Hz {encoding} x{channels}"

    def snapshot(self) -> CallSnapshot:
        c = self.cutter
        return CallSnapshot(
            call_id=self.call_id, audio_format=self.audio_format, next_seq=self.reorder.next_seq,
            pending=tuple(self.reorder.pending[s] for s in sorted(self.reorder.pending)),
            ref_bytes=self.reorder.ref_bytes,
            index=c.index if c else 0, start=c.start if c else 0, overlap=c.overlap if c else 0,
            audio=c.blocks() if c else b"", markers=c.marks.state() if c else (),
            vad_pos=c.vad_pos if c else -1, run_start=c.run_start if c else -1,
            open=self.open, end_seq=self.end_seq, held=c.held if c else None,
            settings=self.context.settings, started=self.started, warnings=self.context.warnings,
        )

    def _restore(self, s: CallSnapshot) -> None:
        self.call_id, self.audio_format, self.open, self.end_seq = s.call_id, s.audio_format, s.open, s.end_seq
        self.reorder = ReorderBuffer(self.config.reorder_window_frames, self.config.max_gap_frames,
                                     s.next_seq, {f.seq: f for f in s.pending}, s.ref_bytes)
        # getattr: a snapshot written before per-call settings existed (its calls had started already)
        self.context = CallContext(getattr(s, "settings", NO_SETTINGS), getattr(s, "warnings", ()))
        self.started = getattr(s, "started", True)
        if s.audio_format is None:
            return
        c = self.cutter = Cutter(self.config, s.call_id, s.audio_format, self.tally, self.clock, self.context)
        c.index, c.start, c.overlap = s.index, s.start, s.overlap
        blocks = [s.audio] if isinstance(s.audio, bytes) else list(s.audio)
        c.parts = [b for b in blocks if b]
        c.sealed, c.nbytes = len(c.parts), sum(len(b) for b in c.parts)
        c.marks = _restore_marks(s.markers)
        c.vad_pos, c.run_start, c.held = s.vad_pos, s.run_start, s.held


def _restore_marks(markers: MarksState | tuple[tuple[int, tuple[str, int, int] | None], ...]) -> FrameMarks:
    """FrameMarks from a snapshot (an older snapshot has a tuple of (sample, source) pairs)."""
    if isinstance(markers, MarksState):
        return FrameMarks(markers)
    marks = FrameMarks()
    for begin, src in markers:
        if src is None:
            marks.add(begin, None)
        else:
            marks.add(begin, *src)
    return marks
