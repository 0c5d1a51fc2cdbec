"""The Speechmatics side of submission: one asyncio loop on a background thread holding ONE AsyncClient.

Why one loop per process (not per Bytewax worker): the POST/GET limits, the in-flight cap and the journal are
per process by definition (the cluster share rule in throttle.py), and the SDK asks for one client per
process. On one loop they are plain asyncio objects served FIFO, with one connection pool; per-worker loops
would need cross-thread locks for the same result. Workers of a process share it through `get_service`.

Bytewax operators hand chunks in with `submit` (non-blocking, thread-safe) and collect what happened with
`take(call_id)`: `JobKnown` as soon as a job id is known (so it enters operator state), then exactly one
`ChunkDone` or `ChunkFailed` per chunk. A 401/403 sets `fatal` and stops all requests at once.

Per chunk: journal lookup (a job posted before a crash; or only the intent to post, then look the job up by
reference first) -> POST through the POST limiter with retries ->
on an ambiguous failure, look the job up by tracking.reference before posting again -> fsync the id into the
journal -> wait (poll via the GET limiter, server-side `wait=`, or webhook + slow poll) -> fetch json-v2.
The API key never appears in our messages: the SDK reads it, and reasons are passed through `redact`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from speechmatics.batch import (
    AsyncClient,
    JobConfig,
    JobDetails,
    JobStatus,
    JobType,
    NotificationConfig,
)

from bytewax.speechmatics.connectors import metrics
from bytewax.speechmatics.connectors.logs import fields
from bytewax.speechmatics.connectors.speechmatics.fleet import Fleet, qualify, unqualify, worker_name
from bytewax.speechmatics.connectors.speechmatics.fleet_watch import FleetWatch
from bytewax.speechmatics.connectors.speechmatics.journal import JobJournal, JournalClosed, shared_journal
from bytewax.speechmatics.connectors.speechmatics.lookup import HASH_TAG_PREFIX, find_by_reference
from bytewax.speechmatics.connectors.speechmatics.retry import (
    NOT_A_BATCH_API,
    Backoff,
    Classified,
    ErrorClass,
    RetryBudget,
    classify,
    http_status,
)
from bytewax.speechmatics.connectors.speechmatics.sdk import TrackingConfig, instrument, raw_get
from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings
from bytewax.speechmatics.connectors.speechmatics.submit_events import (
    ChunkDone,
    ChunkFailed,
    FatalSubmitError,
    JobKnown,
    SubmitEvent,
    SubmitRequest,
)
from bytewax.speechmatics.connectors.speechmatics.throttle import (
    AimdRate,
    ClusterPlace,
    PlannedRate,
    Rate,
    RateLimiter,
    cluster_share,
    send_trace_config,
)
from bytewax.speechmatics.connectors.speechmatics.wav import audio_hash, chunk_wav
from bytewax.speechmatics.connectors.speechmatics.webhooks import WebhookReceiver, auth_header_line
from bytewax.speechmatics.schemas.call_start import NO_CONFIG
from bytewax.speechmatics.schemas.chunks import Chunk

__all__ = ["ChunkDone", "ChunkFailed", "ChunkFailure", "FatalSubmitError", "JobKnown", "SubmitEvent", "SubmitRequest",
           "SubmitService", "get_service", "redact"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds between the two lookups that precede a re-POST (see SubmitService._find_settled).
LOOKUP_SETTLE_SECONDS = 2.0
#: POSTs answered 404 in a row (at one endpoint) that stop the flow: the URL does not name a batch API.
POST_404_FATAL = 3


# ---- errors inside the service ---------------------------------------------------------------------------------


class ChunkFailure(Exception):
    """This chunk cannot be transcribed; the reason is safe to log and dead-letter, `kind` labels the metric."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


class _RequestFailed(Exception):
    def __init__(self, classified: Classified) -> None:
        super().__init__(classified.description)
        self.classified = classified


class _Gone(Exception):
    """The job is unknown, expired or deleted at the server: post the chunk again."""


class _WorkerDown(Exception):
    """The fleet worker holding the job left rotation (fleet_watch.py)."""


def redact(text: str, key: str | None) -> str:
    """Remove the API key from a message, should a server ever echo it."""
    return text.replace(key, "***") if key and len(key) >= 4 else text


@dataclass(slots=True)
class _Progress:
    """Per chunk: POST attempts so far, and the first POST attempt's wall time (for lookups)."""

    posts: int = 0
    first_post_at: float | None = None
    job_id: str | None = None
    started: float = field(default_factory=time.monotonic)
    unposted: bool = False  # counted in SubmitService._unposted
    worker: str | None = None  # the fleet worker (URL) of the last POST attempt


# ---- the service -----------------------------------------------------------------------------------------------


class SubmitService:
    """Background loop + one AsyncClient + limiters + journal, shared by all workers of a process."""

    def __init__(self, settings: SubmitSettings, *, place: ClusterPlace | None = None,
                 journal: JobJournal | None = None, client_factory: Callable[[], AsyncClient] | None = None) -> None:
        self.settings = settings
        self.place = place or ClusterPlace(settings.cluster_processes, settings.process_index)
        self.post_limit = cluster_share(settings.post_rate, self.place)
        self.get_limit = cluster_share(settings.get_rate, self.place)
        # Lending the POST share (lending.py): only between integer shares, and only with a broker for the reports.
        # A fleet of on-prem workers has no POST/s limit: its limit is engines (fleet.py), so no POST limiter and
        # nothing to lend.
        self.lends = (settings.rate_lending and settings.kafka is not None and self.place.processes > 1
                      and int(settings.post_rate) >= self.place.processes and not settings.worker_urls)
        self._clients: dict[str, AsyncClient] = {}  # a fleet's: one client per worker URL
        self._watch: FleetWatch | None = None
        self._engines = settings.parallel_engines or 1
        self._job_engines: dict[str, int] = {}  # a fleet's jobs posted with other than `_engines` (last chunks)
        self._orphans: dict[str, list[str]] = {}  # worker URL -> its job ids to cancel when it rejoins
        self._post_404: dict[str, int] = {}  # endpoint -> POSTs answered 404 in a row
        self._limiter_link: Any = None  # connectors.kafka.limiter.LimiterLink when lending
        self._unposted = 0  # chunks handed in whose job is not known yet (they will need a POST)
        self._handed_in = 0
        self._journal = journal or shared_journal(settings.journal_dir, self.place.index, settings.journal_retention)
        self._client_factory = client_factory or (
            lambda: AsyncClient(api_key=settings.api_key, url=settings.batch_url))
        # What shapes a job besides its audio: a job is found again (journal, server lookup) only when both match,
        # so two submit steps with other configs never take each other's jobs for the same chunk (and the same chunk
        # under another call's settings is another job: see _job_tag).
        self._config_tag = settings.job_fingerprint()
        self._client: AsyncClient | None = None
        self._cond = threading.Condition()
        self._events: dict[str, list[SubmitEvent]] = {}
        self._fatal: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task] = set()
        self._running: dict[str, asyncio.Task] = {}  # reference -> its task: one task per chunk at a time
        self._wakers: dict[str, asyncio.Event] = {}
        self._receiver: WebhookReceiver | None = None
        self._start_error: str | None = None
        self._backoff = Backoff(settings.backoff_base, settings.backoff_cap)
        self._rng = random.Random()  # noqa: S311 - poll jitter
        # Processes of one host must not share a port: process i listens on BWSM_WEBHOOK_PORT + i, and the
        # URL may name its own port or index ("http://host:{port}/", "http://flow-{index}.svc:8765/").
        self.webhook_port = settings.webhook_port + self.place.index if settings.webhook_port else 0
        self.webhook_url = (settings.webhook_url or "").replace("{port}", str(self.webhook_port)).replace(
            "{index}", str(self.place.index))

    # -- lifecycle (called from any thread) --

    def start(self) -> SubmitService:
        """Create the client (fails at once on a missing key) and start the loop thread."""
        try:
            self._client = self._client_factory()
            self._clients = {url: AsyncClient(api_key=self.settings.api_key, url=url)
                             for url in self.settings.worker_urls}
        except ValueError as exc:
            raise FatalSubmitError(f"Speechmatics client not configured: {redact(str(exc), self.settings.api_key)}") \
                from None
        if self.lends:
            from bytewax.speechmatics.connectors.kafka.limiter import LimiterLink

            self._limiter_link = LimiterLink.from_settings(self.settings, self.place, self._demand).start()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run_loop, args=(ready,), name="bwsm-submit", daemon=True)
        self._thread.start()
        ready.wait()
        if self._start_error is not None:
            raise FatalSubmitError(f"submit service could not start: {self._start_error}")
        log.info("submit service: process %d of %d, POST %.2f/s%s, GET %.2f/s, in-flight cap %d, wait mode %s, "
                 "journal %s", self.place.index, self.place.processes, self.post_limit,
                 f" reserved, lending through topic {self.settings.limiter_topic}" if self.lends else "",
                 self.get_limit, self.settings.max_in_flight, self.settings.wait_mode, self._journal.path)
        return self

    def _run_loop(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        s = self.settings
        post_rate: Rate = AimdRate(self.post_limit, decrease=s.aimd_decrease, floor=s.aimd_floor,
                                   recovery=s.aimd_recovery)
        if self._limiter_link is not None:
            post_rate = PlannedRate(self._limiter_link, AimdRate(1.0, decrease=s.aimd_decrease,
                                                                      floor=s.aimd_floor, recovery=s.aimd_recovery))
        self._post_limiter = RateLimiter("post", post_rate, s.rate_margin)
        self._get_limiter = RateLimiter("get", AimdRate(self.get_limit, decrease=s.aimd_decrease,
                                                        floor=s.aimd_floor, recovery=s.aimd_recovery), s.rate_margin)
        self._in_flight = asyncio.Semaphore(s.max_in_flight)
        try:
            loop.run_until_complete(self._instrument_client())
            if s.worker_urls:
                self._watch = FleetWatch(Fleet(s.worker_urls), s.fleet_refresh, self._rejoined)
                loop.run_until_complete(self._watch.start())
                log.info("fleet of %d on-prem workers, %d up, %d engines free", len(s.worker_urls),
                         sum(self._watch.fleet.is_up(u) for u in s.worker_urls), self._watch.fleet.free_total())
            if s.wait_mode == "webhook":
                self._receiver = WebhookReceiver(s.webhook_secret, self._wake_job, s.webhook_host, self.webhook_port)
                loop.run_until_complete(self._receiver.start())
        except Exception as exc:  # e.g. the webhook port is taken: start() reports it, the loop never runs
            self._start_error = f"{type(exc).__name__}: {exc}"
            ready.set()
            return
        ready.set()
        loop.run_forever()

    async def _instrument_client(self) -> None:
        """Let the limiters space requests from their real send (sdk.instrument), with a connection pool sized to
        the jobs in flight; inside the loop, as aiohttp wants its session created there."""
        assert self._client is not None

        trace = send_trace_config()  # the send gate of the limiter whose grant the request holds (see _request)
        if instrument(self._client, trace, self.settings.max_in_flight):
            self._post_limiter.tracks_sends = self._get_limiter.tracks_sends = True
        for client in self._clients.values():
            instrument(client, trace, self.settings.max_in_flight)

    def _demand(self) -> tuple[int, int]:
        """(chunks waiting for their POST, chunks handed in so far): what a lending report is decided from."""
        return self._unposted, self._handed_in

    def close(self) -> None:
        """Cancel outstanding work, close the client and stop the loop and limiter threads."""
        if self._limiter_link is not None:
            self._limiter_link.stop()
        loop = self._loop
        if loop is None or not loop.is_running():
            return

        async def shutdown() -> None:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._receiver is not None:
                await self._receiver.stop()
            if self._watch is not None:
                await self._watch.stop()
            for client in {id(c): c for c in [self._client, *self._clients.values()] if c is not None}.values():
                await client.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- the operator's side (any thread) --

    @property
    def fatal(self) -> str | None:
        return self._fatal

    def submit(self, request: SubmitRequest) -> None:
        """Start transcribing a chunk; never blocks."""
        assert self._loop is not None, "start() the service first"
        metrics.CHUNKS_SUBMITTED.inc()
        self._loop.call_soon_threadsafe(self._spawn, request)

    def take(self, call_id: str) -> list[SubmitEvent]:
        """What happened to a call's chunks since the last take (non-blocking)."""
        with self._cond:
            return self._events.pop(call_id, [])

    def wait(self, call_id: str, timeout: float) -> list[SubmitEvent]:
        """Like take, but block up to `timeout` seconds for at least one event (or a fatal error)."""
        with self._cond:
            self._cond.wait_for(lambda: call_id in self._events or self._fatal is not None, timeout)
            return self._events.pop(call_id, [])

    def mark_done(self, reference: str) -> None:
        """The operator emitted this chunk's result: its journal entry may expire."""
        self._journal.mark_done(reference)

    # -- the loop's side --

    def _emit(self, call_id: str, event: SubmitEvent) -> None:
        with self._cond:
            self._events.setdefault(call_id, []).append(event)
            self._cond.notify_all()

    def _set_fatal(self, reason: str) -> None:
        if self._fatal is None:
            self._fatal = reason
            log.error("Speechmatics submission stopped: %s", reason)
            for task in list(self._tasks):
                if task is not asyncio.current_task():
                    task.cancel()
        with self._cond:
            self._cond.notify_all()

    def _spawn(self, request: SubmitRequest) -> None:
        if self._fatal is not None:
            return
        ref = request.chunk.span.reference
        if ref in self._running:  # the same chunk handed over twice (a rebuilt operator): still one job
            return
        self._handed_in += 1
        task = asyncio.get_running_loop().create_task(self._run_chunk(request))
        self._tasks.add(task)
        self._running[ref] = task
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _task, r=ref: self._running.pop(r, None))

    def _wake_job(self, job_id: str, status: str) -> None:
        waker = self._wakers.get(job_id)
        if waker is not None:
            waker.set()

    async def _run_chunk(self, request: SubmitRequest) -> None:
        span = request.chunk.span
        progress = _Progress(posts=request.attempts, job_id=request.job_id)
        if progress.job_id is None:
            self._unposted += 1
            progress.unposted = True
        try:
            async with self._in_flight:
                metrics.JOBS_IN_FLIGHT.inc()
                try:
                    job_id, transcript = await self._transcribe(request, progress)
                finally:
                    metrics.JOBS_IN_FLIGHT.dec()
            metrics.CHUNKS_DONE.inc()
            metrics.CHUNK_LATENCY.observe(time.monotonic() - progress.started)
            self._emit(span.call_id, ChunkDone(span.index, job_id, transcript, max(1, progress.posts)))
        except FatalSubmitError as exc:
            self._set_fatal(str(exc))
        except ChunkFailure as exc:
            reason = redact(str(exc), self.settings.api_key)
            metrics.CHUNKS_FAILED.labels(reason=exc.kind).inc()
            log.warning("chunk %s failed after %d POST attempts: %s", span.reference, progress.posts, reason)
            self._emit(span.call_id, ChunkFailed(span.index, reason, progress.job_id, progress.posts))
        except asyncio.CancelledError:
            raise
        except JournalClosed:  # the process is ending: the chunk resumes from recovery (its job found by reference)
            log.info("chunk %s left to recovery: the process is ending", span.reference)
        except Exception as exc:  # a bug must not strand the chunk: dead-letter it and say what broke
            log.exception("chunk %s: unexpected error", span.reference)
            self._emit(span.call_id, ChunkFailed(span.index, f"internal error: {type(exc).__name__}",
                                                 progress.job_id, progress.posts))
        finally:
            self._job_known(progress)

    def _job_known(self, progress: _Progress) -> None:
        """The chunk needs no POST any more (its job is known, or it ended): one less in the lending demand."""
        if progress.unposted:
            progress.unposted = False
            self._unposted -= 1

    async def _transcribe(self, request: SubmitRequest, progress: _Progress) -> tuple[str, dict[str, Any]]:
        chunk = request.chunk
        ref = chunk.span.reference
        digest = audio_hash(chunk.audio + self._job_tag(chunk).encode())
        budget = RetryBudget(self.settings.max_attempts, time.monotonic() + self.settings.max_chunk_seconds)
        job_id = request.job_id
        if job_id is None:
            entry = await self._journal.lookup_async(ref)
            if entry is not None and entry.audio_hash == digest and entry.job_id is not None:
                job_id = progress.job_id = entry.job_id
                progress.posts = entry.attempts
                metrics.JOBS_RECOVERED.labels(via="journal").inc()
                log.info("job found in the journal", extra=fields(reference=ref, job_id=job_id, stage="journal"))
                self._emit(chunk.span.call_id, JobKnown(chunk.span.index, job_id, progress.posts))
                self._job_known(progress)
            elif entry is not None and entry.audio_hash == digest:
                progress.first_post_at = entry.written_at  # a POST was leaving when we crashed: look it up first
                log.info("a POST was leaving at the crash: looking for its job", extra=fields(reference=ref))
            elif entry is not None:
                log.warning("journal entry for another audio hash: posting anew", extra=fields(reference=ref))
        for _ in range(self.settings.max_attempts):
            if job_id is None:
                job_id = progress.job_id = await self._post(request, digest, budget, progress)
                self._job_known(progress)
                self._emit(chunk.span.call_id, JobKnown(chunk.span.index, job_id, progress.posts))
            try:
                transcript = await self._await_job(job_id, budget)
            except _Gone:
                self._release(job_id)
                log.warning("job gone at the server: posting again", extra=fields(reference=ref, job_id=job_id))
                entry = await self._journal.lookup_async(ref)
                if entry is not None and entry.job_id in (job_id, None):  # never a newer id than the one gone
                    self._journal.forget(ref)
                job_id = progress.job_id = None
                progress.first_post_at = None  # the next POST writes its own intent first
                continue
            except BaseException:
                self._release(job_id)
                raise
            self._release(job_id)
            return job_id, transcript
        raise ChunkFailure("gone", f"jobs kept disappearing: {self.settings.max_attempts} jobs gone")

    async def _request(self, route: str, call: Callable[[], Awaitable[T]], budget: RetryBudget,
                       worker: str | None = None) -> T:
        """One API request with throttling and retries of transient failures (capped attempts and time); at a
        fleet `worker`, _WorkerDown as soon as that worker leaves rotation. A fleet's POSTs pass no POST limiter:
        the fleet's limit is engines, and `call` waits for one (fleet_watch.FleetWatch.take)."""
        limiter = self._post_limiter if route == "post" else self._get_limiter
        fleet_post = route == "post" and self._watch is not None
        failures = busy = 0
        while True:
            if self._fatal is not None:
                raise FatalSubmitError(self._fatal)
            if worker is not None and self._watch is not None and not self._watch.fleet.is_up(worker):
                raise _WorkerDown()
            if fleet_post:
                try:
                    return await call()
                except (ChunkFailure, FatalSubmitError):
                    raise
                except Exception as exc:
                    classified = classify(exc, posting=True)
            else:
                grant = await limiter.acquire()
                metrics.RATE_LIMIT.labels(route=route).set(limiter.rate.current())
                # Inside `granted` the trace hook reports this request's send, and the next request of the route is
                # granted only after it (spaced from the real send time, however late it leaves).
                with limiter.granted(grant):
                    try:
                        return await call()
                    except Exception as exc:
                        classified = classify(exc, posting=route == "post")
            if classified.throttled:
                metrics.HTTP_429.labels(route=route).inc()
                limiter.throttled()
            if classified.kind is ErrorClass.FATAL:
                raise FatalSubmitError(classified.description)
            if route == "post" and classified.status in (404, 405):
                self._check_post_404()  # a URL that names no batch API stops the flow; a lone 404 is retried
            elif classified.kind is not ErrorClass.RETRYABLE:
                raise _RequestFailed(classified)
            # A 503 on POST is a busy server refusing before it creates a job (an on-prem worker whose engines
            # are all in use answers exactly that): back-pressure, not a failure. It waits like any retry but
            # does not use up the chunk's attempts; the chunk's time cap still bounds it.
            if route == "post" and classified.status == 503:
                busy += 1
                if fleet_post:  # that worker counts as full now: the next try waits for a free engine
                    continue
            else:
                failures += 1
            now = time.monotonic()
            if failures >= budget.max_attempts or now >= budget.deadline:
                raise ChunkFailure("retries_exhausted",
                                   f"{route} gave up after {failures + busy} attempts: {classified.description}")
            metrics.RETRIES.labels(route=route, kind=classified.kind.value).inc()
            await asyncio.sleep(budget.clip(self._backoff.delay(failures + busy - 1), now))

    def _check_post_404(self) -> None:
        """POSTs answered 404 again and again: the URL names no batch API (a typo, a missing /v2, a list joined
        into one URL), so every chunk would fail while the flow ran on; stop the flow like a bad key."""
        for url, count in self._post_404.items():
            if count >= POST_404_FATAL:
                raise FatalSubmitError(
                    f"POST /jobs at {worker_name(url) or url} answered 404 {count} times in a row: {NOT_A_BATCH_API}")

    def _client_at(self, worker: str | None) -> AsyncClient:
        client = self._clients[worker] if worker is not None else self._client
        assert client is not None
        return client

    def _locate(self, job_id: str) -> tuple[str, str | None]:
        """(the worker's own job id, the fleet worker's URL or None with one endpoint); _Gone for a job of a
        worker no longer in the fleet."""
        if self._watch is None:
            return job_id, None
        raw, name = unqualify(job_id)
        url = self._watch.fleet.by_name(name) if name else None
        if url is None:
            raise _Gone()
        return raw, url

    def _release(self, job_id: str) -> None:
        """Our job there ended: its engines are free in the fleet's view."""
        if self._watch is not None:
            with contextlib.suppress(_Gone):
                raw, url = self._locate(job_id)
                if url is not None:
                    self._watch.release(url, self._job_engines.pop(job_id, self._engines), raw)

    async def _rejoined(self, url: str) -> None:
        """A fleet worker is back: cancel the jobs posted elsewhere meanwhile, so no live worker does them twice."""
        for raw in self._orphans.pop(url, []):
            with contextlib.suppress(Exception):
                await self._clients[url].delete_job(raw, force=True)
                log.info("job of a failed-over chunk cancelled at its returning worker",
                         extra=fields(job_id=qualify(raw, url)))

    def _job_tag(self, chunk: Chunk) -> str:
        """The job fingerprint of this chunk's call: the flow's, or one with the call's own settings merged in."""
        config = chunk.call.config
        return self._config_tag if config == NO_CONFIG else self.settings.job_fingerprint(config)

    def _job_config(self, request: SubmitRequest, digest: str) -> JobConfig:
        """The job's config: the flow's transcription defaults with the chunk's call settings merged over them."""
        s = self.settings
        notifications = None
        if s.wait_mode == "webhook" and self.webhook_url:
            notifications = [NotificationConfig(url=self.webhook_url, contents=["jobinfo"],
                                                auth_headers=[auth_header_line(s.webhook_secret)])]
        return JobConfig(
            type=JobType.TRANSCRIPTION,
            transcription_config=s.transcription_config(request.speaker_config, call=request.chunk.call.config),
            tracking=TrackingConfig(reference=request.chunk.span.reference, tags=[HASH_TAG_PREFIX + digest]),
            notification_config=notifications,
        )

    async def _post(self, request: SubmitRequest, digest: str, budget: RetryBudget, progress: _Progress) -> str:
        """POST the chunk once, however many tries it takes; after an ambiguous failure, find it first."""
        ref = request.chunk.span.reference
        wav = chunk_wav(request.chunk)
        config = self._job_config(request, digest)
        s = self.settings
        ambiguous = 1 if progress.first_post_at is not None else 0

        if progress.first_post_at is None:
            # Durable before the POST can leave, and before its rate grant is taken: the next POST's grant waits
            # for this one to leave, so an fsync inside the grant would space every POST by the disk's latency.
            await self._journal.intend_async(ref, digest)

        async def post() -> JobDetails:
            worker, engines = await self._take_engine(budget, request.chunk.span.last)
            progress.worker = worker
            if progress.first_post_at is None:
                progress.first_post_at = time.time()
            progress.posts += 1
            endpoint = worker or s.batch_url or ""
            asked = s.parallel_engines if engines == self._engines else engines  # no header when left unset
            try:
                job = await self._client_at(worker).submit_job(io.BytesIO(wav), config=config,
                                                               parallel_engines=asked, user_id=s.user_id)
            except Exception as exc:
                status = http_status(exc)
                self._post_404[endpoint] = self._post_404.get(endpoint, 0) + 1 if status in (404, 405) else 0
                if worker is not None and self._watch is not None:
                    self._watch.posted(worker, engines, None)
                    if status == 503:
                        self._watch.refused(worker)
                raise
            self._post_404[endpoint] = 0
            if worker is not None and self._watch is not None:
                self._watch.posted(worker, engines, job.id)
                if engines != self._engines:
                    self._job_engines[qualify(job.id, worker)] = engines
            return job

        while True:
            if ambiguous:
                found = await self._find_settled(ref, digest, progress.first_post_at or time.time(), budget,
                                                 progress.worker)
                if found is not None:
                    metrics.JOBS_RECOVERED.labels(via="lookup").inc()
                    log.info("job found by reference", extra=fields(reference=ref, job_id=found, stage="lookup"))
                    await self._journal.record_async(ref, found, digest, progress.posts)
                    return found
            try:
                job = await self._request("post", post, budget)
            except _RequestFailed as exc:
                if exc.classified.kind is not ErrorClass.AMBIGUOUS:
                    raise ChunkFailure("refused", f"POST refused: {exc.classified.description}") from None
                ambiguous += 1
                now = time.monotonic()
                if ambiguous >= budget.max_attempts or now >= budget.deadline:
                    raise ChunkFailure("retries_exhausted", f"post gave up after {ambiguous} ambiguous failures: "
                                       f"{exc.classified.description}") from None
                metrics.RETRIES.labels(route="post", kind="ambiguous").inc()
                await asyncio.sleep(budget.clip(self._backoff.delay(ambiguous - 1), now))
                continue
            job_id = job.id if progress.worker is None else qualify(job.id, progress.worker)
            await self._journal.record_async(ref, job_id, digest, progress.posts)
            metrics.JOBS_POSTED.inc()
            log.info("job posted", extra=fields(reference=ref, job_id=job_id, attempts=progress.posts))
            return job_id

    async def _take_engine(self, budget: RetryBudget, last: bool) -> tuple[str | None, int]:
        """A fleet worker with a free engine and the engines reserved there (more for a call's last chunk with
        BWSM_FLEET_LAST_CHUNK_ENGINES, fleet.engines_for), waiting in the flow while all are full or down; None
        with one endpoint."""
        if self._watch is None:
            return None, self._engines
        wanted = self.settings.fleet_last_chunk_engines if last else None
        taken = await self._watch.take(self._engines, budget.deadline, wanted)
        if taken is None:
            raise ChunkFailure("timeout", f"no worker of the fleet had a free engine within "
                                          f"{self.settings.max_chunk_seconds:.0f} s (BWSM_MAX_CHUNK_SECONDS)")
        return taken

    async def _find_settled(self, ref: str, digest: str, since: float, budget: RetryBudget,
                            worker: str | None = None) -> str | None:
        """Look a job up twice, LOOKUP_SETTLE_SECONDS apart, before concluding that a POST must go out again.

        Why: a POST whose sender died (a crash, a cut connection) can still be creating its job at the server when
        the first lookup runs; a second look after the server has had time to finish avoids paying twice.
        """
        found = await self._find_anywhere(ref, digest, since, budget, worker)
        if found is None:
            await asyncio.sleep(LOOKUP_SETTLE_SECONDS)
            found = await self._find_anywhere(ref, digest, since, budget, worker)
        return found

    async def _find_anywhere(self, ref: str, digest: str, since: float, budget: RetryBudget,
                             worker: str | None) -> str | None:
        """The job at `worker`, or (a fleet's POST whose worker is not known: a crash mid-POST) at any worker in
        rotation; the id qualified with its worker in a fleet."""
        if self._watch is None:
            return await self._find_by_reference(ref, digest, since, budget)
        fleet = self._watch.fleet
        for url in [worker] if worker is not None else [u for u in fleet.urls if fleet.is_up(u)]:
            with contextlib.suppress(_WorkerDown):
                found = await self._find_by_reference(ref, digest, since, budget, url)
                if found is not None:
                    return qualify(found, url)
        return None

    async def _find_by_reference(self, ref: str, digest: str, since: float, budget: RetryBudget,
                                 worker: str | None = None) -> str | None:
        """The newest job carrying this reference and audio hash (lookup.find_by_reference), through the GET limiter."""
        client = self._client_at(worker)

        async def page(before: str | None) -> list[JobDetails]:
            async def call() -> list[JobDetails]:
                return await client.list_jobs(limit=100, created_before=before)

            try:
                return await self._request("get", call, budget, worker)
            except _RequestFailed as exc:
                raise ChunkFailure("lookup_failed",
                                   f"could not look for an existing job: {exc.classified.description}") from None

        return await find_by_reference(page, ref, digest, since)

    async def _pause(self, job_id: str, interval: float) -> None:
        """Between status checks: a jittered poll interval, or until the job's webhook arrives."""
        if self.settings.wait_mode != "webhook":
            await asyncio.sleep(interval * self._rng.uniform(0.8, 1.2))
            return
        waker = self._wakers.get(job_id)
        if waker is None:  # the first pause: listen, then look once at once (a webhook sent before we listened,
            self._wakers[job_id] = asyncio.Event()  # as a fast job's is, is otherwise lost until the fallback poll)
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(waker.wait(), self.settings.webhook_fallback_poll)
        waker.clear()

    async def _await_job(self, job_id: str, budget: RetryBudget) -> dict[str, Any]:
        """Wait until the job is done and return its json-v2 transcript; _Gone / ChunkFailure otherwise."""
        s = self.settings
        interval = s.poll_min
        wait = s.wait_seconds if s.wait_mode == "wait" else None
        raw, worker = self._locate(job_id)
        client = self._client_at(worker)
        try:
            while True:
                if wait is None:
                    await self._pause(raw, interval)  # webhooks name the worker's own job id
                    interval = min(interval * 1.5, s.poll_max)

                async def status() -> JobDetails:
                    return await client.get_job_info(raw, wait=wait)

                try:
                    info = await self._request("get", status, budget, worker)
                except _WorkerDown:
                    assert worker is not None and self._watch is not None
                    await self._failover(job_id, worker)
                    continue
                except _RequestFailed as exc:
                    if exc.classified.kind is ErrorClass.GONE:
                        raise _Gone() from None
                    raise ChunkFailure("status_failed",
                                       f"status of job {job_id}: {exc.classified.description}") from None
                if info.status == JobStatus.DONE:
                    try:
                        return await self._fetch(job_id, budget)
                    except _WorkerDown:
                        await self._failover(job_id, worker or "")
                        continue
                if info.status == JobStatus.REJECTED:
                    detail = "; ".join(e.message for e in info.errors or [])[:300]
                    raise ChunkFailure("rejected", f"job rejected: {detail or 'no reason given'}")
                if info.status == JobStatus.DELETED:
                    raise _Gone()
                if time.monotonic() >= budget.deadline:
                    raise ChunkFailure("timeout",
                                       f"job not done within {s.max_chunk_seconds:.0f} s (BWSM_MAX_CHUNK_SECONDS)")
        finally:
            self._wakers.pop(raw, None)

    async def _failover(self, job_id: str, worker: str) -> None:
        """The job's worker left rotation: wait BWSM_FLEET_FAILOVER_SECONDS for it (then the job is asked for
        again: found, or gone with a restarted worker and posted anew), else _Gone, so the chunk is posted to another
        worker, and the job is cancelled at this one should it return (no live worker does a chunk twice)."""
        assert self._watch is not None
        name = worker_name(worker)
        log.warning("the worker of a job left rotation: waiting for it", extra=fields(job_id=job_id))
        if await self._watch.wait_up(worker, self.settings.fleet_failover):
            return
        metrics.FLEET_FAILOVERS.labels(worker=name).inc()
        log.warning("the worker of a job stayed away: posting the chunk to another", extra=fields(job_id=job_id))
        self._orphans.setdefault(worker, []).append(unqualify(job_id)[0])
        raise _Gone()

    async def _fetch(self, job_id: str, budget: RetryBudget) -> dict[str, Any]:
        """The json-v2 transcript as the API sent it (the SDK's Transcript object cannot give the dict back)."""
        raw, worker = self._locate(job_id)
        client = self._client_at(worker)

        async def get() -> dict[str, Any]:
            return await raw_get(client, f"/jobs/{raw}/transcript", {"format": "json-v2"})

        for attempt in range(budget.max_attempts):
            try:
                body = await self._request("get", get, budget, worker)
            except _RequestFailed as exc:
                if exc.classified.status == 404:  # done but not yet readable: the API's eventual consistency
                    await asyncio.sleep(self._backoff.delay(attempt))
                    continue
                if exc.classified.kind is ErrorClass.GONE:
                    raise _Gone() from None
                raise ChunkFailure("transcript_failed",
                                   f"transcript of job {job_id}: {exc.classified.description}") from None
            if not isinstance(body.get("results"), list):
                raise ChunkFailure("transcript_failed", f"transcript of job {job_id} is not json-v2")
            return body
        raise ChunkFailure("transcript_failed", f"transcript of job {job_id} never became readable")


# ---- one service per process ---------------------------------------------------------------------------------


_services: dict[tuple[int, str], SubmitService] = {}
_services_lock = threading.Lock()


def get_service(settings: SubmitSettings) -> SubmitService:
    """The process's running service for these settings (one per distinct settings, so two submit steps with
    different settings in one flow each keep their own client, limits and in-flight jobs)."""
    key = (os.getpid(), settings.fingerprint())
    with _services_lock:
        service = _services.get(key)
        if service is None:
            service = _services[key] = SubmitService(settings).start()
        return service
