"""The submit step: chunks of a call -> Speechmatics jobs -> ChunkResults (and DeadLetters), keyed by call id.

How it fits Bytewax 0.21.1 without ever blocking the dataflow:
- `on_item` puts the chunk into this call's state and hands it to the process's SubmitService (a background
  asyncio loop); it returns at once.
- While the call has pending chunks, `notify_at` asks to be woken every BWSM_COLLECT_INTERVAL (0.1 s);
  `on_notify` takes what the loop has finished for this call (a thread-safe per-call queue). Bytewax routes
  a key to the same worker every time, so the worker that submitted is the one that collects. Notifications
  are per key and only for keys with state, which is why the pending chunks live in the state.
- A job id enters the state as soon as the loop learns it (`JobKnown`), so a snapshot taken while the job
  runs lets a recovered flow wait for that same job instead of posting again; ids learned after the last
  snapshot are in the durable journal that the loop consults before any POST.
- Bytewax ends a run at EOF without firing pending notifications, so `on_eof` drains: it blocks until the
  call's chunks are done (only ever at the end of a bounded input, or on resume before EOF).
- A wrong key is found while the flow is built (connectors/speechmatics/endpoint.py); a 401/403 later (a key revoked
  while running) is raised from the operator (FatalSubmitError), which aborts the Bytewax run with that message.
- One submission service per process and per distinct settings (connectors/speechmatics/service.get_service).

Silence compaction (`skip_silence`, BWSM_SKIP_SILENCE): when a chunk arrives, a fresh webrtcvad (speech on either
channel is speech) plans the pieces worth sending (flows/compaction.py: speech kept whole, every non-speech stretch
shortened to `silence_keep_seconds`); the plan is kept in the chunk's pending state, the service is handed the chunk
with only those pieces as its audio (so the job's audio fingerprint and WAV are of what is really sent), and the
transcript's times are mapped back onto the chunk before the result leaves. A chunk without speech is not sent: its
result has an empty transcript and `billed_seconds` 0. Every result carries `billed_seconds`: the audio its job
was sent (the whole chunk with compaction off; 0 for a failed chunk that never got a job).

Outputs per call: one ChunkResult per chunk (error set when it failed, so the stitcher never waits) and one
DeadLetter per failed chunk; `transcribe_chunks` returns them as one StageOut.

Speakers (diarization `speaker`, BWSM_DIARIZATION or the call's own): a call's jobs run one after another so each
job can be given the speakers enrolled from the previous ones (flows/speakers.py SpeakerBook), and each transcript
is relabelled before it is emitted. With no or channel diarization, a call's chunks are submitted in parallel.

Per-call settings: each chunk's job is shaped by the chunk's call settings merged over the flow's defaults
(`SubmitSettings.transcription_config(call=...)`); each ChunkResult carries the *effective* settings (what the job
asked for) and the call's metadata, for the stitcher. A `CallStarted` passes straight through, its config resolved
the same way, so the call_started event states what the call's jobs ask for, and warns of each option they ask for
that the engine cannot do (a local worker's engine: `SubmitSettings.capability_warnings`). Those warnings depend on
the call's config, the flow's settings and the engine behind the endpoint (fixed for a deployment), never on a clock,
so a replayed call_started is the same.

The endpoint is settled when `transcribe_chunks` is called, while the flow is built (connectors/speechmatics/
endpoint.py): a missing key is a SettingsError there, one line, instead of a failure inside the running dataflow.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

import bytewax.operators as op
from bytewax.dataflow import operator
from bytewax.operators import KeyedStream, StatefulLogic

from bytewax.speechmatics.connectors.health import HEALTH
from bytewax.speechmatics.connectors.metrics import CHUNKS_SILENT
from bytewax.speechmatics.connectors.speechmatics.endpoint import settle
from bytewax.speechmatics.connectors.speechmatics.service import SubmitService, get_service
from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings
from bytewax.speechmatics.connectors.speechmatics.submit_events import (
    ChunkDone,
    ChunkFailed,
    FatalSubmitError,
    JobKnown,
    SubmitEvent,
    SubmitRequest,
)
from bytewax.speechmatics.connectors.status import BOARD
from bytewax.speechmatics.flows.compaction import TimeMap, cut, keep_plan, map_transcript
from bytewax.speechmatics.flows.speakers import SpeakerBook, speaker_config
from bytewax.speechmatics.flows.stages import StageOut, split_letters
from bytewax.speechmatics.flows.vad import speech_frames
from bytewax.speechmatics.schemas.call_start import CallSettings
from bytewax.speechmatics.schemas.chunks import CallStarted, Chunk, ChunkResult
from bytewax.speechmatics.schemas.dead_letters import DeadLetter, failed_chunk
from bytewax.speechmatics.schemas.frames import BYTES_PER_SAMPLE
from bytewax.speechmatics.schemas.snapshots import evolvable

log = logging.getLogger(__name__)

STAGE = "submit"
SubmitOutput = ChunkResult | CallStarted | DeadLetter
#: webrtcvad mode and frame length of silence compaction (mode 2: the chunker's default, between eager and strict).
COMPACTION_VAD_MODE = 2
COMPACTION_VAD_FRAME_MS = 30


@evolvable
@dataclass(frozen=True, slots=True)
class PendingChunk:
    """A chunk without a result yet, and its job once known."""

    chunk: Chunk
    job_id: str | None = None
    attempts: int = 0  # POST attempts spent on job_id: kept so a replayed result says the same
    sent: TimeMap | None = None  # the pieces of the chunk its job is sent (None: all of it)

    @property
    def billed_seconds(self) -> float:
        """Seconds of audio the job is sent."""
        return self.sent.sent_seconds if self.sent is not None else self.chunk.span.duration

    def request_chunk(self) -> Chunk:
        """The chunk as it is sent: its audio compacted (the service fingerprints and encodes exactly this)."""
        if self.sent is None:
            return self.chunk
        span = self.chunk.span
        width = BYTES_PER_SAMPLE[span.encoding] * span.channels
        return replace(self.chunk, audio=cut(self.chunk.audio, self.sent, width))


def compaction_plan(chunk: Chunk, keep_seconds: float) -> TimeMap | None:
    """The pieces of `chunk` worth sending (None: no speech, nothing to send); a fresh VAD per chunk, so a replay
    plans the same pieces."""
    span = chunk.span
    speech = speech_frames(chunk.audio, span.sample_rate, span.encoding, span.channels, COMPACTION_VAD_MODE,
                           COMPACTION_VAD_FRAME_MS)
    frame = span.sample_rate * COMPACTION_VAD_FRAME_MS // 1000
    return keep_plan(speech, frame, span.end_sample - span.start_sample, round(keep_seconds * span.sample_rate),
                     span.sample_rate)


@evolvable
@dataclass
class SubmitState:
    """One call's submit state (pickled in snapshots)."""

    pending: dict[int, PendingChunk] = field(default_factory=dict)
    held: list[int] = field(default_factory=list)  # speaker chaining: pending chunks not yet handed to the loop
    done: set[int] = field(default_factory=set)  # chunk indexes already answered (replays are ignored)
    last_seen: bool = False
    speakers: SpeakerBook | None = None  # when diarization=speaker
    chaining: bool = False  # a chunk of this call has speaker diarization: its jobs run one after another


class SubmitLogic(StatefulLogic[Chunk | CallStarted, SubmitOutput, SubmitState]):
    """Per call: hand chunks to the loop, collect their jobs' results (see module doc)."""

    def __init__(self, call_id: str | None, service: SubmitService, state: SubmitState | None) -> None:
        self.service = service
        self.settings = service.settings
        self.state = state or SubmitState()
        self.call_id = call_id
        self._handed: set[int] = set()
        self._resolved: tuple[CallSettings, CallSettings] | None = None  # (call settings, effective): the last one
        if self.state.pending:  # resumed from a snapshot: the loop knows nothing of these chunks yet
            self.call_id = next(iter(self.state.pending.values())).chunk.span.call_id
            self._hand_ready()

    # -- Bytewax hooks --

    def on_item(self, value: Chunk | CallStarted) -> tuple[Iterable[SubmitOutput], bool]:
        self._check_fatal()
        if value.__class__ is CallStarted:  # passes through, with the config the call's jobs will ask for
            self.call_id = value.call_id
            warnings = (*value.warnings, *self.settings.capability_warnings(value.call.config))
            return [replace(value, call=self._effective(value.call), warnings=warnings)], self._finished()
        index = value.span.index
        self.call_id = value.span.call_id
        if index in self.state.pending or index in self.state.done:
            return [], StatefulLogic.RETAIN  # a replay after recovery: this chunk is already on its way
        self.state.last_seen = self.state.last_seen or value.span.last
        if value.span.end_sample == value.span.start_sample:  # a call that sent no audio at all: nothing to bill
            self.state.done.add(index)
            empty = ChunkResult(span=value.span, transcript={"results": []}, attempts=0, source=value.source,
                                call=self._effective(value.call), warnings=value.warnings)
            return [empty], self._finished()
        sent = None
        if self.settings.skip_silence:
            sent = compaction_plan(value, self.settings.silence_keep_seconds)
            if sent is None:  # no speech in the chunk: not sent, not billed
                CHUNKS_SILENT.inc()
                self.state.done.add(index)
                quiet = ChunkResult(span=value.span, transcript={"results": []}, attempts=0, source=value.source,
                                    call=self._effective(value.call), warnings=value.warnings)
                return [quiet], self._finished()
        self.state.pending[index] = PendingChunk(value, sent=sent)
        if self._chains(value):
            self.state.chaining = True
        if self.state.chaining:
            self.state.held.append(index)
            self.state.held.sort()
        self._hand_ready()
        self._report()
        return [], StatefulLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[SubmitOutput], bool]:
        self._check_fatal()
        out = self._apply(self.service.take(self.call_id)) if self.call_id else []
        self._report()
        return out, self._finished()

    def on_eof(self) -> tuple[Iterable[SubmitOutput], bool]:
        """Input ended: wait for this call's chunks (Bytewax would otherwise drop the pending notifications)."""
        out: list[SubmitOutput] = []
        limit = time.monotonic() + self.settings.max_chunk_seconds * max(1, len(self.state.pending)) + 60
        while self.state.pending and time.monotonic() < limit:
            self._check_fatal()
            out.extend(self._apply(self.service.wait(self.call_id, timeout=1.0)))
        self._check_fatal()
        return out, self._finished()

    def notify_at(self) -> datetime | None:
        if not self.state.pending:
            return None
        return datetime.now(timezone.utc) + timedelta(seconds=self.settings.collect_interval)

    def snapshot(self) -> SubmitState:
        s = self.state
        return SubmitState(dict(s.pending), list(s.held), set(s.done), s.last_seen, copy.deepcopy(s.speakers),
                           s.chaining)

    # -- the work --

    def _report(self) -> None:
        """Show the call's chunks in flight on the status board."""
        if self.call_id:
            pending = self.state.pending
            oldest = min((p.chunk.span.closed_at for p in pending.values()), default=None)
            BOARD.submitter(self.call_id, len(pending), oldest)

    def _check_fatal(self) -> None:
        if self.service.fatal is not None:
            HEALTH.submit_failed(self.service.fatal)
            raise FatalSubmitError(f"stopping the flow: {self.service.fatal}")

    def _finished(self) -> bool:
        """Discard the call's state when nothing is pending (with speakers: once the last chunk is done)."""
        if self.state.pending:
            return StatefulLogic.RETAIN
        if self.state.chaining and not self.state.last_seen:
            return StatefulLogic.RETAIN
        return StatefulLogic.DISCARD

    def _chains(self, chunk: Chunk) -> bool:
        """This chunk's job uses speaker diarization (the call's own setting, else the flow's)."""
        return self.settings.chains(chunk.call.config)

    def _effective(self, call: CallSettings) -> CallSettings:
        """The call's settings with the config its jobs really ask for (the flow's defaults merged under it)."""
        if self._resolved is None or self._resolved[0] != call:
            self._resolved = (call, replace(call, config=self.settings.effective_config(call.config)))
        return self._resolved[1]

    def _hand(self, index: int) -> None:
        pending = self.state.pending[index]
        speakers = None
        if self._chains(pending.chunk):
            if self.state.speakers is None:
                self.state.speakers = SpeakerBook()
            speakers = speaker_config(self.state.speakers)
        self.service.submit(SubmitRequest(pending.request_chunk(), pending.job_id, speakers, pending.attempts))
        self._handed.add(index)

    def _hand_ready(self) -> None:
        """Hand over what may run now: everything, or with speaker chaining the next chunk when none runs."""
        if not self.state.chaining:
            for index in sorted(self.state.pending):
                if index not in self._handed:
                    self._hand(index)
            return
        if any(i in self._handed for i in self.state.pending):
            return
        held = [i for i in self.state.held if i in self.state.pending]
        if held:
            self._hand(held[0])

    def _apply(self, events: list[SubmitEvent]) -> list[SubmitOutput]:
        out: list[SubmitOutput] = []
        for event in events:
            pending = self.state.pending.get(event.index)
            if pending is None:
                continue
            if isinstance(event, JobKnown):
                self.state.pending[event.index] = replace(pending, job_id=event.job_id, attempts=event.attempts)
            elif isinstance(event, ChunkDone):
                out.append(self._done(pending, event))
            elif isinstance(event, ChunkFailed):
                out.extend(self._failed(pending, event))
        if out:
            self._hand_ready()
        return out

    def _close(self, index: int) -> None:
        del self.state.pending[index]
        self._handed.discard(index)
        if index in self.state.held:
            self.state.held.remove(index)
        self.state.done.add(index)

    def _done(self, pending: PendingChunk, event: ChunkDone) -> ChunkResult:
        chunk = pending.chunk
        span = chunk.span
        transcript = event.transcript
        if pending.sent is not None:
            transcript = map_transcript(transcript, pending.sent)
        if self._chains(chunk) and self.state.speakers is not None:
            transcript = self.state.speakers.relabel(span, transcript)
        self._close(span.index)
        self.service.mark_done(span.reference)
        return ChunkResult(span=span, transcript=transcript, job_id=event.job_id, attempts=event.attempts,
                           source=chunk.source, call=self._effective(chunk.call), warnings=chunk.warnings,
                           billed_seconds=pending.billed_seconds)

    def _failed(self, pending: PendingChunk, event: ChunkFailed) -> list[SubmitOutput]:
        span = pending.chunk.span
        self._close(span.index)
        self.service.mark_done(span.reference)
        attempts = max(1, event.attempts)
        letter = failed_chunk(event.reason, STAGE, span, pending.chunk.source, event.job_id, attempts)
        result = ChunkResult(span=span, error=event.reason, job_id=event.job_id, attempts=attempts,
                             source=pending.chunk.source, call=self._effective(pending.chunk.call),
                             warnings=pending.chunk.warnings,
                             billed_seconds=pending.billed_seconds if event.job_id is not None else 0.0)
        return [letter, result]


@operator
def transcribe_chunks(step_id: str, up: KeyedStream[Chunk | CallStarted], config: SubmitSettings | None = None
                      ) -> StageOut[ChunkResult | CallStarted]:
    """Transcribe each chunk as one Speechmatics batch job: WAV-encode, throttle to the API's limits, retry, post
    each chunk once even across crashes (job ids in state and in a durable journal), wait for the transcript.

    Args:
        step_id: Unique ID.
        up: `(call_id, Chunk)` and `(call_id, CallStarted)`, as `chunk_calls(...).oks` gives them.
        config: The API (`api_key`, `batch_url`), limits, retries, waiting and the jobs' default transcription
            config (each chunk's call settings are merged over it).
            When omitted, the built-in defaults; the speechmatics-batch SDK then takes SPEECHMATICS_API_KEY itself.
            Steps with different settings in one flow each get their own submission service.

    Returns:
        `StageOut`: `oks` are `(call_id, ChunkResult)`, one per chunk (`error` set when it failed, so the stitcher
        never waits for it; `call` the effective settings and metadata), and each `(call_id, CallStarted)` passed on
        at once with its config resolved; `errs` are DeadLetters for failed chunks (no audio: the source ranges
        replay them).

    Raises:
        SettingsError: at once, while the flow is built, when the Speechmatics SaaS would be called without a key
            (a self-hosted endpoint, such as `bytewax-speechmatics worker`, needs none), or when the endpoint
            refuses the key (401/403 to one `GET /jobs`).
        FatalSubmitError: from the running dataflow when the API refuses the key later (revoked while running):
            the flow stops.

    Example:
        >>> from bytewax.speechmatics.flows import Settings, transcribe_chunks
        >>> results = transcribe_chunks("transcribe", chunks.oks, config=Settings.from_env().submission)
    """
    settings = settle(config or SubmitSettings())

    def build(resume: SubmitState | None) -> SubmitLogic:
        return SubmitLogic(None, get_service(settings), resume)

    return split_letters("out", op.stateful("jobs", up, build))
