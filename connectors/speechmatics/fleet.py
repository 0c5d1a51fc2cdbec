"""Which on-prem worker of a fleet gets the next job: a view of every worker's free engines (pure, no I/O).

Why: a persistent worker runs `--parallel N` engines and refuses a job when too few are free (503 "Server busy");
a load balancer in front of several workers knows nothing of engines, so jobs pile onto busy workers while others
idle and every refusal costs a round trip. Each submitting process keeps this view instead:
- the truth is each worker's own count (`GET /jobs`: max_engines, unused_engines), taken every
  BWSM_FLEET_REFRESH_SECONDS (`report`);
- between reports it is corrected by this process's own jobs, by id: POSTs on their way (`reserve`), jobs created
  since (`posted`; those created while a report was on its way stay counted unless the report lists them among its
  `active_jobs`), and ended jobs the report had as active (`release`; one it already saw end is not freed twice);
- a job goes to the up worker with the most free engines (`pick`), never to one with too few; none: the job waits
  in the flow until a report or a completion frees an engine;
- processes of a cluster share the fleet through the workers' counts: two processes may both see the last free
  engine between two reports, and one is refused (`refused`: that worker counts as full until its next report).
  Refusals are counted per worker (bwsm_fleet_refusals) and rare: at most one per worker per refresh per process.
- a call's last chunk gates its completion: with BWSM_FLEET_LAST_CHUNK_ENGINES > 1 it may ask for more engines
  (`engines_for`), only those its worker has free, and only while no other job waits for an engine.
- a worker whose report fails `down_after` times in a row leaves rotation (`failed`); its next report brings it
  back (`report` says so).

A job id is only meaningful at its worker, so a fleet's job ids are qualified: `<id>@<host:port>` (`qualify`);
the journal, the operator's state and lookups carry the worker with the job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

#: Failed reports in a row that take a worker out of rotation.
DOWN_AFTER = 2


def engines_for(base: int, last_chunk_engines: int, last: bool, free: int, waiting: int) -> int:
    """Engines to ask for a chunk at a worker with `free` engines while `waiting` other jobs wait for one.

    Why: the call's last chunk gates `call_completed`, and k engines do it about k times as fast; but engines
    taken from jobs that wait would delay other calls, so a waiting job means the usual `base`."""
    if not last or waiting > 0 or last_chunk_engines <= base:
        return base
    return max(base, min(last_chunk_engines, free))


def worker_name(url: str) -> str:
    """A worker's name in job ids, logs and metric labels: its host:port."""
    return urlsplit(url).netloc


def qualify(job_id: str, url: str) -> str:
    """The fleet-wide id of a job: its worker's id plus the worker."""
    return f"{job_id}@{worker_name(url)}"


def unqualify(job_id: str) -> tuple[str, str | None]:
    """(the worker's own job id, the worker's name or None for an unqualified id)."""
    raw, at, name = job_id.rpartition("@")
    return (raw, name) if at and raw else (job_id, None)


@dataclass(slots=True)
class WorkerView:
    """What one process knows of one worker's engines: the last report, and our jobs it cannot have counted."""

    url: str
    max_engines: int = 0
    reported_unused: int = 0
    reported_active: set[str] = field(default_factory=set)  # the job ids holding engines at the report
    posting: int = 0  # engines of our POSTs on their way
    fresh: dict[str, int] = field(default_factory=dict)  # our jobs the report did not count (id -> engines)
    freed: int = 0  # engines of jobs the report counted that have ended since
    probing: bool = False  # a report is on its way
    asking: dict[str, int] = field(default_factory=dict)  # our jobs created while it is on its way
    full: bool = False  # refused a POST as busy since the report
    up: bool = False  # in rotation (a first report brings it in)
    failures: int = 0  # failed reports in a row
    picks: int = 0

    @property
    def free(self) -> int:
        if self.full:
            return 0
        return max(0, min(self.max_engines,
                          self.reported_unused - self.posting - sum(self.fresh.values()) + self.freed))


@dataclass
class Fleet:
    """The engines view of every worker (see the module doc); all methods are O(workers) and never block."""

    urls: tuple[str, ...]
    down_after: int = DOWN_AFTER
    workers: dict[str, WorkerView] = field(init=False)

    def __post_init__(self) -> None:
        self.workers = {url: WorkerView(url) for url in self.urls}

    def by_name(self, name: str) -> str | None:
        """The URL of the worker called `name` (host:port), None when no worker of this fleet is."""
        return next((url for url in self.urls if worker_name(url) == name), None)

    def is_up(self, url: str) -> bool:
        return self.workers[url].up

    def free(self, url: str) -> int:
        return self.workers[url].free

    def refreshing(self, url: str) -> None:
        """A report of this worker was just asked for: jobs created from now on may be missing from it."""
        view = self.workers[url]
        view.probing, view.asking = True, {}

    def report(self, url: str, max_engines: int, unused: int, active: set[str] | None = None) -> bool:
        """The worker's own count (and the ids of the jobs holding its engines); True when this brings the worker
        back into rotation. Our jobs created while it was on its way and not among `active` stay counted."""
        view = self.workers[url]
        rejoined = not view.up
        view.max_engines, view.reported_unused = max(0, max_engines), max(0, unused)
        view.reported_active = set(active or ())
        view.fresh = {job: n for job, n in view.asking.items() if job not in view.reported_active}
        view.asking, view.probing, view.freed, view.full = {}, False, 0, False
        view.up, view.failures = True, 0
        return rejoined

    def failed(self, url: str) -> bool:
        """A report failed (no answer, an error); True when this takes the worker out of rotation."""
        view = self.workers[url]
        view.failures += 1
        view.probing, view.asking = False, {}
        if view.up and view.failures >= self.down_after:
            view.up = False
            return True
        return False

    def pick(self, engines: int = 1) -> str | None:
        """The up worker with the most free engines (ties: the one picked least), None when none has `engines`."""
        best: WorkerView | None = None
        for view in self.workers.values():
            if view.up and view.free >= engines and (
                    best is None or (view.free, -view.picks) > (best.free, -best.picks)):
                best = view
        if best is None:
            return None
        best.picks += 1
        return best.url

    def reserve(self, url: str, engines: int) -> None:
        """A job of ours is being posted there: its engines are taken."""
        self.workers[url].posting += engines

    def posted(self, url: str, engines: int, job_id: str | None) -> None:
        """The POST of a job there was answered: the job (`job_id`) holds its engines, or (None) never took them."""
        view = self.workers[url]
        view.posting = max(0, view.posting - engines)
        if job_id is not None:
            view.fresh[job_id] = engines
            if view.probing:
                view.asking[job_id] = engines

    def release(self, url: str, engines: int, job_id: str) -> None:
        """A job of ours ended there: its engines are free again (unless the last report saw them free)."""
        view = self.workers[url]
        view.asking.pop(job_id, None)
        if view.fresh.pop(job_id, None) is None and job_id in view.reported_active:
            view.reported_active.discard(job_id)
            view.freed += engines

    def refused(self, url: str) -> None:
        """The worker said it is busy: count it full until its next report."""
        self.workers[url].full = True

    def free_total(self) -> int:
        return sum(view.free for view in self.workers.values() if view.up)
