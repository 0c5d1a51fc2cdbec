"""The local worker's job store and engine accounting (seed 003's capacity rules), free of HTTP.

Statuses are the SDK's lower-case values (`running`, `done`, `rejected`, `deleted`): seed 003 prints them
upper-case, but the speechmatics-batch SDK parses `JobStatus(value)` and only accepts lower case, and the
SDK is the client we must satisfy.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

#: The SaaS API returns at most this many jobs per list request; so do we.
MAX_LIST_LIMIT = 100

RUNNING, DONE, REJECTED, DELETED = "running", "done", "rejected", "deleted"
TERMINAL = frozenset({DONE, REJECTED, DELETED})


def iso_now(now: float | None = None) -> str:
    """UTC timestamp like the API's: 2026-03-18T19:27:42.436Z."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_iso(value: str) -> datetime:
    """Parse an ISO-8601 timestamp (a trailing Z means UTC; naive times are taken as UTC)."""
    moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass
class Job:
    """One submitted job: what the client sent, where it is, and what came of it."""

    id: str
    config: dict[str, Any]
    data_name: str
    duration: float
    parallel_engines: int
    user_id: str | None
    created: float = field(default_factory=time.time)
    status: str = RUNNING
    transcript: dict[str, Any] | None = None
    errors: list[dict[str, str]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def created_at(self) -> str:
        return iso_now(self.created)

    @property
    def reference(self) -> str | None:
        return (self.config.get("tracking") or {}).get("reference")

    def note(self, message: str) -> None:
        """A line of the job's log (ids, counts, timings only)."""
        self.log.append(f"{iso_now()} {message}")

    def finish(self, status: str, *, transcript: dict[str, Any] | None = None, error: str | None = None) -> None:
        if self.status in TERMINAL:
            return
        self.status = status
        self.transcript = transcript
        if error:
            self.errors.append({"message": error, "timestamp": iso_now()})
        self.note(f"job {status}")
        self.finished.set()

    def details(self) -> dict[str, Any]:
        """The job as GET /v2/jobs/{id} describes it (config echoed exactly as submitted)."""
        out: dict[str, Any] = {
            "id": self.id,
            "created_at": self.created_at,
            "data_name": self.data_name,
            "text_name": None,
            "duration": round(self.duration),
            "status": self.status,
            "config": self.config,
            "request_id": self.id,
        }
        if "tracking" in self.config:
            out["tracking"] = self.config["tracking"]  # as the transcript's job.tracking
        if self.errors:
            out["errors"] = list(self.errors)
        return out


class JobStore:
    """Jobs by id, in submission order."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}

    def add(self, job: Job) -> None:
        self._jobs[job.id] = job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        return list(self._jobs.values())

    def clear(self) -> None:
        self._jobs.clear()

    def listing(
        self,
        limit: int | None = None,
        created_before: str | None = None,
        created_after: str | None = None,
        include_deleted: bool = False,
    ) -> list[Job]:
        """Newest first, at most MAX_LIST_LIMIT, optionally within a creation-time window."""
        limit = MAX_LIST_LIMIT if limit is None else max(0, min(limit, MAX_LIST_LIMIT))
        before = parse_iso(created_before).timestamp() if created_before else None
        after = parse_iso(created_after).timestamp() if created_after else None
        out: list[Job] = []
        for job in reversed(self._jobs.values()):
            if len(out) >= limit:
                break
            if job.status == DELETED and not include_deleted:
                continue
            if before is not None and job.created >= before:
                continue
            if after is not None and job.created <= after:
                continue
            out.append(job)
        return out


def new_job_id() -> str:
    """20 hex characters, the shape of the worker's ids in seed 003."""
    return uuid.uuid4().hex[:20]


class EngineCapacity:
    """`--parallel` engines shared by running jobs; a job that asks for more than are free is refused."""

    def __init__(self, max_engines: int) -> None:
        if max_engines < 1:
            raise ValueError(f"parallel must be at least 1, got {max_engines}")
        self.max_engines = max_engines
        self._active: dict[str, int] = {}

    @property
    def in_use(self) -> int:
        return sum(self._active.values())

    @property
    def unused(self) -> int:
        return self.max_engines - self.in_use

    def try_acquire(self, job_id: str, engines: int) -> str | None:
        """Reserve engines for a job; None on success, else the busy message of seed 003."""
        if engines > self.unused:
            return (
                f"Server busy: {engines} engines not available "
                f"({self.in_use} engines in use, {self.max_engines} parallel allowed)"
            )
        self._active[job_id] = engines
        return None

    def release(self, job_id: str) -> None:
        self._active.pop(job_id, None)

    def snapshot(self) -> dict[str, Any]:
        """The body of GET /jobs."""
        return {
            "active_jobs": [{"job_id": j, "parallel_engines": n} for j, n in self._active.items()],
            "max_engines": self.max_engines,
            "unused_engines": self.unused,
        }
