"""The local Speechmatics-compatible batch worker: seed 003's on-prem persistent worker API over aiohttp.

Job API (behind `Authorization: Bearer <key>` when started with an API key; 401 otherwise):
  POST   /v2/jobs                      multipart `config` (JSON) + `data_file`; header X-SM-Processing-Data
                                       {"parallel_engines": N, "user_id": "..."}; `?wait=S` holds the request
                                       until the job ends (then the body embeds the transcript under
                                       `json-v2`/`txt`/`srt` as the SDK expects). 201 {"id": ...};
                                       503 {"detail": "Server busy: ..."} when fewer engines are free than asked.
  GET    /v2/jobs                      {"jobs": [...]}, newest first; limit (<= 100), created_before,
                                       created_after, include_deleted.
  GET    /v2/jobs/{id}                 {"job": {...}} (`?wait=S` holds until terminal); 404 unknown.
  GET    /v2/jobs/{id}/transcript      ?format=json-v2|txt|srt; 404 while not done or unknown.
  GET    /v2/jobs/{id}/log             text/plain.
  DELETE /v2/jobs/{id}                 {"job": {...}}; 423 for a running job unless ?force=true.
Health (no auth): GET /jobs (engine accounting), GET /live, GET /ready (503 while loading or all busy).
Feature discovery (no auth, as on the real API): GET /v1/discovery/features, the real document's shape plus
`local_engine`: what the engine honours (connectors/speechmatics/capabilities.py). A job asking for a language the
engine lacks is refused as the real API refuses it (400 "Job rejected"); one asking for another option the engine
lacks runs without it, and its transcript lists what was not done under `metadata.warnings` (and so does its log).
Admin (no auth, for tests and demos):
  POST   /admin/calls                  register a reference call: multipart `meta` JSON {call_id, sample_rate,
                                       encoding pcm_s16le|mulaw|wav, channels, words: [...], edge_rule} + `audio`.
  GET    /admin/calls                  registered calls; DELETE /admin/calls/{call_id}.
  GET    /admin/faults, PUT|POST /admin/faults   the fault document in force (see worker_faults); a new
                                       document without a job_duration (or a fixed 0) also releases held jobs.
  GET    /admin/stats                  requests by route and status, jobs by reference, POST arrival times, loop stalls,
                                       jobs by status, webhook attempts, where reference chunks were located,
                                       whisper runs (engine pid, start and end wall time per job).
  POST   /admin/release                end the injected `job_duration` of every job holding engines now
                                       (capacity tests fill the worker with long jobs, then release them).
  POST   /admin/reset                  clear counters, faults, finished jobs, registered calls.
Job statuses are the SDK's lower-case values (see worker_jobs). Logs carry ids, counts and timings only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from bytewax.speechmatics.connectors.speechmatics.capabilities import DISCOVERY_PATH, EngineCapabilities, unsupported
from bytewax.speechmatics.connectors.worker import faults as faults_mod
from bytewax.speechmatics.connectors.worker.audio import AudioFormatError, RawAudio, parse_wav, read_audio
from bytewax.speechmatics.connectors.worker.engines.reference import CAPABILITIES, ReferenceEngine, TruthError
from bytewax.speechmatics.connectors.worker.faults import FaultConfigError, FaultPlan
from bytewax.speechmatics.connectors.worker.formats import json_v2, to_srt, to_txt
from bytewax.speechmatics.connectors.worker.jobs import (
    DELETED,
    DONE,
    REJECTED,
    RUNNING,
    EngineCapacity,
    Job,
    JobStore,
    new_job_id,
)
from bytewax.speechmatics.connectors.worker.realtime import add_realtime
from bytewax.speechmatics.connectors.worker.stats import WorkerStats, watch_loop
from bytewax.speechmatics.connectors.worker.webhooks import DEFAULT_WEBHOOK_DEADLINE, deliver

log = logging.getLogger(__name__)

PROCESSING_HEADER = "X-SM-Processing-Data"
#: Longest server-side `wait` honoured, like the SaaS API's cap.
MAX_WAIT_SECONDS = 600
FORMATS = ("json-v2", "txt", "srt")


class Engine(Protocol):
    """What the worker needs from a recogniser."""

    name: str
    ready: bool
    capabilities: EngineCapabilities  # what it honours, served at /v1/discovery/features

    async def start(self) -> None: ...

    async def transcribe(self, job: Job, audio: bytes) -> dict[str, Any]:
        """{"results": [...json-v2 results], "speakers": [...] | None, ...}; AudioFormatError for bad audio."""
        ...

    async def close(self) -> None: ...


class ReferenceBackend:
    """The reference engine behind the Engine protocol (locating runs in a thread: calls can be long)."""

    name = "reference"
    ready = True
    capabilities = CAPABILITIES

    def __init__(self) -> None:
        self.engine = ReferenceEngine()

    async def start(self) -> None:
        return None

    async def transcribe(self, job: Job, audio: bytes) -> dict[str, Any]:
        raw = read_audio(audio)
        tc = job.config.get("transcription_config") or {}
        return await asyncio.to_thread(self.engine.transcribe, job.id, raw, tc)

    async def close(self) -> None:
        return None


class WorkerState:
    """Everything one worker process holds: jobs, engines, faults, counters."""

    def __init__(
        self,
        engine: Engine,
        parallel: int,
        api_key: str | None = None,
        faults: dict | None = None,
        webhook_deadline: float = DEFAULT_WEBHOOK_DEADLINE,
        processing_factor: float = 0.0,
    ) -> None:
        self.engine = engine
        #: Seconds a job holds its engines per second of audio at least (`--processing-factor`; divided by the
        #: job's parallel_engines, as a parallel job is that much faster): the reference
        #: engine answers at once, a real one takes a fraction of real time; fleet tests need engines kept busy.
        self.processing_factor = processing_factor
        self.webhook_deadline = webhook_deadline
        self.capacity = EngineCapacity(parallel)
        self.api_key = api_key or None
        self.jobs = JobStore()
        self.faults = FaultPlan.parse(faults)
        self.stats = WorkerStats()
        self.tasks: set[asyncio.Task] = set()
        self.session: aiohttp.ClientSession | None = None
        self.release = asyncio.Event()
        #: Set when the engine cannot start (a fatal misconfiguration); the server then stops loudly.
        self.failure: str | None = None
        self.failed = asyncio.Event()

    def release_held(self) -> None:
        """End the injected hold of every job now; jobs started later are held again."""
        self.release.set()
        self.release = asyncio.Event()

    async def hold(self, seconds: float) -> None:
        """Keep a job's engines for the injected duration, or until /admin/release."""
        if seconds > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.release.wait(), timeout=seconds)

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def jobs_by_status(self) -> dict[str, int]:
        return dict(Counter(job.status for job in self.jobs.all()))


STATE = web.AppKey("state", WorkerState)


def _error_body(status: int, message: str) -> dict[str, Any]:
    """The error body of the API (`detail` as the on-prem worker's 503, `code`/`error` as the SaaS API's)."""
    return {"code": status, "error": message, "detail": message}


def _error(status: int, message: str) -> web.Response:
    return web.json_response(_error_body(status, message), status=status)


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return f"{request.method} {resource.canonical if resource else request.path}"


def _route_class(request: web.Request) -> str | None:
    if not request.path.startswith("/v2/"):
        return None
    if request.method == "POST" and request.path.rstrip("/") == "/v2/jobs":
        return "post"
    return {"GET": "get", "DELETE": "delete"}.get(request.method)


@web.middleware
async def api_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """Auth, fault injection and counting for every request (faults and auth only under /v2)."""
    state = request.app[STATE]
    route = _route_name(request)
    route_class = _route_class(request)
    if route_class == "post":
        state.stats.post_arrivals.append(time.time())
    try:
        if route_class is not None:
            if state.api_key and request.headers.get("Authorization", "") != f"Bearer {state.api_key}":
                response: web.StreamResponse = _error(401, "Permission Denied")
                state.stats.request(route, 401)
                return response
            outcome = state.faults.outcome(route_class)
            pause = state.faults.latency_for(route_class)
            if pause > 0:
                await asyncio.sleep(pause)
            if outcome.isdigit():
                state.stats.request(route, outcome)
                return _error(int(outcome), f"injected fault {outcome}")
            request["fault"] = outcome
        response = await handler(request)
    except web.HTTPException as exc:
        state.stats.request(route, exc.status)
        raise
    state.stats.request(route, "drop" if request.get("dropped") else response.status)
    return response


# ---------------------------------------------------------------- job API


def _int_param(request: web.Request, name: str, default: int | None, low: int = 0) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(f"{name} must be an integer") from None
    if value < low:
        raise _bad(f"{name} must be >= {low}")
    return value


def _processing_data(request: web.Request) -> tuple[int, str | None]:
    raw = request.headers.get(PROCESSING_HEADER)
    if not raw:
        return 1, None
    try:
        data = json.loads(raw)
        engines = int(data.get("parallel_engines", 1))
    except (ValueError, TypeError, AttributeError):
        raise _bad(f"{PROCESSING_HEADER} must be JSON like {{\"parallel_engines\": 2}}") from None
    if engines < 1:
        raise _bad("parallel_engines must be >= 1")
    user = data.get("user_id")
    return engines, None if user is None else str(user)


async def _read_submission(request: web.Request) -> tuple[dict[str, Any], bytes, str]:
    """(config, audio bytes, data_name) from the multipart body; 400 saying what is missing."""
    if not request.content_type.startswith("multipart/"):
        raise _bad("the body must be multipart/form-data with fields 'config' and 'data_file'")
    config_text: str | None = None
    audio: bytes | None = None
    name = "data_file"
    reader = await request.multipart()
    async for part in reader:
        if part.name == "config":
            config_text = (await part.read()).decode("utf-8")
        elif part.name == "data_file":
            name = part.filename or name
            audio = bytes(await part.read())
        else:
            await part.read()
    if config_text is None:
        raise _bad("multipart field 'config' is missing")
    try:
        config = json.loads(config_text)
    except ValueError:
        raise _bad("multipart field 'config' is not valid JSON") from None
    if not isinstance(config, dict):
        raise _bad("'config' must be a JSON object")
    if config.get("type", "transcription") != "transcription":
        raise _bad(f"job type {config.get('type')!r} is not supported (transcription only)")
    if audio is None:
        if "fetch_data" in config:
            raise _bad("fetch_data is not supported by the local worker: upload the audio as 'data_file'")
        raise _bad("multipart field 'data_file' is missing")
    return config, audio, name


def _http_error(cls: type[web.HTTPException], message: str) -> web.HTTPException:
    """An aiohttp HTTP exception with the API's JSON error body."""
    return cls(text=json.dumps(_error_body(cls.status_code, message)), content_type="application/json")


def _bad(message: str) -> web.HTTPException:
    return _http_error(web.HTTPBadRequest, message)


def _duration(audio: bytes) -> float:
    """Seconds of audio for the job details; 0 for a file we cannot read (the job will be rejected)."""
    try:
        return read_audio(audio).duration
    except AudioFormatError:
        return 0.0


async def _wait_for(job: Job, seconds: int | None) -> None:
    if seconds:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(job.finished.wait(), timeout=min(seconds, MAX_WAIT_SECONDS))


def _embedded(job: Job, fmt: str) -> dict[str, Any]:
    body: dict[str, Any] = {"id": job.id, "status": job.status, "created_at": job.created_at}
    if job.status == DONE and job.transcript is not None:
        body[fmt] = _render(job.transcript, fmt)
    return body


def _render(doc: dict[str, Any], fmt: str) -> Any:
    if fmt == "txt":
        return to_txt(doc)
    if fmt == "srt":
        return to_srt(doc)
    return doc


async def post_job(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    engines, user_id = _processing_data(request)
    wait = _int_param(request, "wait", None)
    fmt = request.query.get("format", "json-v2")
    if fmt not in FORMATS:
        raise _bad(f"format must be one of {list(FORMATS)}")
    config, audio, name = await _read_submission(request)
    refused = [u for u in unsupported(state.engine.capabilities, config.get("transcription_config") or {}) if u.rejects]
    if refused:
        return web.json_response({"code": 400, "error": "Job rejected",
                                  "detail": f"Job config JSON is invalid. Error: {refused[0].message}"}, status=400)
    job_id = new_job_id()
    busy = state.capacity.try_acquire(job_id, engines)
    if busy:
        return web.json_response({"detail": busy}, status=503)
    job = Job(job_id, config, name, _duration(audio), engines, user_id)
    job.note(f"job created engines={engines} bytes={len(audio)} duration={job.duration:.2f}s")
    state.jobs.add(job)
    if job.reference is not None:
        state.stats.jobs_by_reference[job.reference] += 1
    outcome = request.get("fault", faults_mod.OK)
    state.spawn(_run_job(state, job, audio, reject=outcome == faults_mod.REJECT))
    log.info("job accepted id=%s engines=%d duration=%.2fs", job.id, engines, job.duration)
    if outcome == faults_mod.DROP:
        request["dropped"] = True
        if request.transport is not None:
            request.transport.abort()
        log.info("connection dropped after accepting job id=%s (fault)", job.id)
        return web.Response(status=201)
    await _wait_for(job, wait)
    return web.json_response(_embedded(job, fmt) if wait else {"id": job.id}, status=201)


async def _run_job(state: WorkerState, job: Job, audio: bytes, reject: bool) -> None:
    started = time.monotonic()
    try:
        if reject:
            await state.hold(state.faults.job_seconds())
            job.finish(REJECTED, error="job rejected (injected fault)")
            return
        job.note(f"engine {state.engine.name} started")
        out = await state.engine.transcribe(job, audio)
        # k engines share the work, as a real parallel job roughly does: F x audio / k, holding all k meanwhile.
        busy = job.duration * state.processing_factor / max(1, job.parallel_engines)
        await asyncio.sleep(max(0.0, busy - (time.monotonic() - started)))
        await state.hold(state.faults.job_seconds())
        if out.get("located") is not None:
            state.stats.located[job.id] = out["located"]
        if out.get("engine_run") is not None:
            state.stats.engine_runs[job.id] = out["engine_run"]
        job.note(f"engine finished results={len(out['results'])} seconds={time.monotonic() - started:.3f}")
        transcript = json_v2(job, out["results"], out.get("speakers"))
        lacking = unsupported(state.engine.capabilities, job.config.get("transcription_config") or {})
        if lacking:  # done without them, said in the transcript as the real API lists a feature it could not run
            transcript["metadata"]["warnings"] = [{"type": "unsupported_feature", "feature": u.feature,
                                                   "message": u.message} for u in lacking]
            for u in lacking:
                job.note(f"not done: {u.feature} (unsupported by the {state.engine.name} engine)")
        job.finish(DONE, transcript=transcript)
    except AudioFormatError as exc:
        job.finish(REJECTED, error=f"unsupported audio: {exc}")
    except Exception as exc:  # noqa: BLE001 - a failed job must end rejected, never hang
        log.exception("job failed id=%s", job.id)
        job.finish(REJECTED, error=f"internal error ({type(exc).__name__})")
    finally:
        state.capacity.release(job.id)
        log.info("job ended id=%s status=%s seconds=%.3f", job.id, job.status, time.monotonic() - started)
        if job.status != DELETED:
            _notify(state, job)


def _notify(state: WorkerState, job: Job) -> None:
    notifications = job.config.get("notification_config") or []
    if not notifications or state.session is None:
        return
    status = "success" if job.status == DONE else "error"

    def render(item: str) -> tuple[bytes, str] | None:
        if item == "jobinfo":
            return json.dumps({"job": job.details()}).encode(), "application/json"
        if not item.startswith("transcript") or job.transcript is None:
            return None
        fmt = item.partition(".")[2] or "json-v2"
        if fmt == "json-v2":
            return json.dumps(job.transcript).encode(), "application/json"
        if fmt in ("txt", "srt"):
            return _render(job.transcript, fmt).encode(), "text/plain"
        return None

    def record(url: str, outcome: str) -> None:
        state.stats.webhooks[url][outcome] += 1

    for notification in notifications:
        state.spawn(deliver(state.session, notification, job.id, status, render, state.faults.webhook_seconds, record,
                            deadline=state.webhook_deadline))


def _job_or_404(request: web.Request) -> Job:
    job = request.app[STATE].jobs.get(request.match_info["job_id"])
    if job is None:
        raise _http_error(web.HTTPNotFound, "Job not found")
    return job


async def list_jobs(request: web.Request) -> web.Response:
    state = request.app[STATE]
    limit = _int_param(request, "limit", None)
    try:
        jobs = state.jobs.listing(
            limit,
            request.query.get("created_before"),
            request.query.get("created_after"),
            request.query.get("include_deleted", "").lower() in ("1", "true"),
        )
    except ValueError:
        raise _bad("created_before/created_after must be ISO-8601 timestamps") from None
    return web.json_response({"jobs": [job.details() for job in jobs]})


async def get_job(request: web.Request) -> web.Response:
    job = _job_or_404(request)
    await _wait_for(job, _int_param(request, "wait", None))
    return web.json_response({"job": job.details()})


async def get_transcript(request: web.Request) -> web.Response:
    job = _job_or_404(request)
    fmt = request.query.get("format", "json-v2")
    if fmt not in FORMATS:
        raise _bad(f"format must be one of {list(FORMATS)}")
    await _wait_for(job, _int_param(request, "wait", None))
    if job.status != DONE or job.transcript is None:
        return _error(404, f"transcript not available: job is {job.status}")
    if fmt == "json-v2":
        return web.json_response(job.transcript)
    return web.Response(text=_render(job.transcript, fmt), content_type="text/plain")


async def get_log(request: web.Request) -> web.Response:
    job = _job_or_404(request)
    return web.Response(text="\n".join(job.log) + "\n", content_type="text/plain")


async def delete_job(request: web.Request) -> web.Response:
    job = _job_or_404(request)
    force = request.query.get("force", "").lower() in ("1", "true")
    if job.status == RUNNING and not force:
        return _error(423, "job is running; delete with force=true")
    if job.status == RUNNING:
        job.finish(DELETED)
    job.status = DELETED
    job.transcript = None
    return web.json_response({"job": job.details()})


# ---------------------------------------------------------------- health


async def engines(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].capacity.snapshot())


async def discovery(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].engine.capabilities.to_discovery())


async def live(request: web.Request) -> web.Response:
    return web.json_response({"live": True})


async def ready(request: web.Request) -> web.Response:
    state = request.app[STATE]
    ok = state.engine.ready and state.capacity.unused > 0
    return web.json_response({"ready": ok, "engines_used": state.capacity.in_use}, status=200 if ok else 503)


# ---------------------------------------------------------------- admin


def _reference(state: WorkerState) -> ReferenceEngine:
    if not isinstance(state.engine, ReferenceBackend):
        raise _http_error(web.HTTPConflict, "calls can be registered with --engine reference only")
    return state.engine.engine


async def register_call(request: web.Request) -> web.Response:
    state = request.app[STATE]
    ref = _reference(state)
    meta: dict[str, Any] | None = None
    audio: bytes | None = None
    reader = await request.multipart()
    async for part in reader:
        if part.name == "meta":
            try:
                meta = json.loads((await part.read()).decode("utf-8"))
            except ValueError:
                raise _bad("'meta' is not valid JSON") from None
        elif part.name == "audio":
            audio = bytes(await part.read())
    if not isinstance(meta, dict) or audio is None or not meta.get("call_id"):
        raise _bad("multipart fields 'meta' (JSON with call_id, words, ...) and 'audio' are required")
    try:
        encoding = meta.get("encoding", "pcm_s16le")
        if encoding == "wav":
            raw = parse_wav(audio)
        elif encoding in ("pcm_s16le", "mulaw"):
            raw = RawAudio(audio, int(meta.get("sample_rate", 16000)), int(meta.get("channels", 1)), encoding)
            if len(audio) % raw.frame_bytes:
                raise TruthError(f"audio has {len(audio)} bytes, not whole {raw.frame_bytes}-byte frames")
        else:
            raise TruthError(f"encoding must be pcm_s16le, mulaw or wav, got {encoding!r}")
        ref.register(str(meta["call_id"]), raw, meta.get("words") or [], meta.get("edge_rule", "midpoint"))
    except (TruthError, AudioFormatError, ValueError) as exc:
        raise _bad(str(exc)) from None
    log.info("call registered call_id=%s frames=%d", meta["call_id"], raw.frames)
    return web.json_response({"call_id": meta["call_id"], "frames": raw.frames, "duration": raw.duration})


async def list_calls(request: web.Request) -> web.Response:
    return web.json_response({"calls": _reference(request.app[STATE]).calls()})


async def delete_call(request: web.Request) -> web.Response:
    removed = _reference(request.app[STATE]).remove(request.match_info["call_id"])
    return web.json_response({"removed": removed}, status=200 if removed else 404)


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].faults.describe())


async def set_faults(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        doc = await request.json() if request.can_read_body else {}
        state.faults = FaultPlan.parse(doc)
    except (ValueError, FaultConfigError) as exc:
        raise _bad(f"bad fault document: {exc}") from None
    hold = state.faults.job_duration
    if hold is None or (hold.dist == "fixed" and hold.value == 0):
        state.release_held()
    return web.json_response(state.faults.describe())


async def get_stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = state.stats.snapshot(state.jobs_by_status())
    body["engines"] = state.capacity.snapshot()
    return web.json_response(body)


async def release(request: web.Request) -> web.Response:
    state = request.app[STATE]
    held = len(state.capacity.snapshot()["active_jobs"])
    state.release_held()
    return web.json_response({"released": held})


async def reset(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.stats.reset()
    state.faults = FaultPlan.parse(None)
    state.release_held()
    running = [job for job in state.jobs.all() if job.status == RUNNING]
    state.jobs.clear()
    for job in running:
        state.jobs.add(job)
    if isinstance(state.engine, ReferenceBackend):
        state.engine.engine.clear()
    return web.json_response({"reset": True, "running_jobs_kept": len(running)})


# ---------------------------------------------------------------- app


def create_app(state: WorkerState) -> web.Application:
    app = web.Application(middlewares=[api_middleware], client_max_size=1024**3)
    app[STATE] = state
    app.add_routes(
        [
            web.post("/v2/jobs", post_job),
            web.post("/v2/jobs/", post_job),
            web.get("/v2/jobs", list_jobs),
            web.get("/v2/jobs/{job_id}", get_job),
            web.get("/v2/jobs/{job_id}/transcript", get_transcript),
            web.get("/v2/jobs/{job_id}/log", get_log),
            web.delete("/v2/jobs/{job_id}", delete_job),
            web.get("/jobs", engines),
            web.get("/live", live),
            web.get(DISCOVERY_PATH, discovery),
            web.get("/ready", ready),
            web.post("/admin/calls", register_call),
            web.get("/admin/calls", list_calls),
            web.delete("/admin/calls/{call_id}", delete_call),
            web.get("/admin/faults", get_faults),
            web.put("/admin/faults", set_faults),
            web.post("/admin/faults", set_faults),
            web.get("/admin/stats", get_stats),
            web.post("/admin/release", release),
            web.post("/admin/reset", reset),
        ]
    )
    add_realtime(app, state.api_key)  # the real-time API (websocket /v2) on the same port
    app.on_startup.append(_on_startup)
    app.on_cleanup.append(_on_cleanup)
    return app


async def _on_startup(app: web.Application) -> None:
    state = app[STATE]
    state.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    state.spawn(_start_engine(state))
    state.spawn(watch_loop(state.stats))  # the arrival stamps' uncertainty (stats.py)


async def _start_engine(state: WorkerState) -> None:
    """Load the engine in the background (so /live answers at once); a failure stops the worker."""
    try:
        await state.engine.start()
    except Exception as exc:  # noqa: BLE001 - any start failure is fatal and must be reported
        log.exception("engine %s failed to start", state.engine.name)
        state.failure = f"{type(exc).__name__}: {exc}"
        state.failed.set()


async def _on_cleanup(app: web.Application) -> None:
    state = app[STATE]
    for task in list(state.tasks):
        task.cancel()
    await asyncio.gather(*state.tasks, return_exceptions=True)
    if state.session is not None:
        await state.session.close()
    await state.engine.close()
