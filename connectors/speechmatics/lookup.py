"""Finding a job at the API by its tracking reference, so a POST whose answer was lost is not paid twice.

Every job we create carries the chunk's reference (`call/index`) and an `audio-sha256:<digest>` tag (the chunk's
audio and the job settings that shape its transcript). After a crash mid-POST or an ambiguous failure, the API's
job list is walked back, newest first, to just before the first POST attempt (minus a clock-skew allowance).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

from speechmatics.batch import JobDetails, JobStatus

#: list_jobs pages to walk back (100 jobs each) when looking for a job by reference.
MAX_LIST_PAGES = 20
#: How far before our first POST attempt a job may have been created (clock skew with the API).
LOOKUP_SKEW_SECONDS = 60.0
HASH_TAG_PREFIX = "audio-sha256:"

#: One page of the job list, newest first, created strictly before the given ISO time (None: the newest).
ListPage = Callable[[str | None], Awaitable[list[JobDetails]]]


def parse_created(value: str) -> float | None:
    """A job's `created_at` as unix time (None when unreadable)."""
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None


async def find_by_reference(page: ListPage, ref: str, digest: str, since: float) -> str | None:
    """The newest job carrying this reference and audio hash, walking the job list back to `since`."""
    tag = HASH_TAG_PREFIX + digest
    created_before: str | None = None
    seen: set[str] = set()
    for _ in range(MAX_LIST_PAGES):
        jobs = await page(created_before)
        for job in jobs:
            if job.id in seen:
                continue
            seen.add(job.id)
            tracking = job.config.tracking if job.config else None
            if tracking is None or tracking.reference != ref or job.status == JobStatus.DELETED:
                continue
            if not tracking.tags or tag in tracking.tags:
                return job.id
        if len(jobs) < 100:
            return None
        oldest_t = parse_created(jobs[-1].created_at)
        if oldest_t is None or oldest_t < since - LOOKUP_SKEW_SECONDS:
            return None
        # created_before is exclusive and timestamps are in milliseconds: ask from just after the page's oldest
        # job, so jobs created in that same millisecond are not skipped (the ones already seen are ignored)
        created_before = datetime.fromtimestamp(oldest_t + 0.001, tz=timezone.utc).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")
    return None
