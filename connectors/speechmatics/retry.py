"""What to do about a failed request to the batch API, and how long to wait before the next try.

Classes (the SDK wraps transport errors: BatchError / JobError with the TransportError or ConnectionError
as __cause__, so the whole cause chain is inspected):
- FATAL: 401/403, the API key is wrong. The flow must stop; retrying would only storm the API.
- RETRYABLE: 429, 408, 503 and other 5xx on GETs, connection refused before anything was sent.
- AMBIGUOUS: a POST that may have been accepted (connection dropped, timeout, 500/502/504 on POST): look
  for the job by reference before posting again, or we pay twice.
- GONE: the job is unknown (404 on its status) or expired (410): its result will never come; post again.
- PERMANENT: anything else (400, 413, 422, ...): this chunk cannot succeed; dead-letter it.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
from speechmatics.batch import AuthenticationError, ConnectionError, JobExpiredError, TransportError


class ErrorClass(enum.Enum):
    FATAL = "fatal"
    RETRYABLE = "retryable"
    AMBIGUOUS = "ambiguous"
    GONE = "gone"
    PERMANENT = "permanent"


#: Status codes worth retrying on any route: throttled, request timeout, server trouble.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: On a POST these mean the server may have created the job before failing.
AMBIGUOUS_POST_STATUSES = frozenset({500, 502, 504})


@dataclass(frozen=True, slots=True)
class Classified:
    """The class of a failure, its HTTP status if any, and a short description safe to log (no secrets)."""

    kind: ErrorClass
    status: int | None
    description: str

    @property
    def throttled(self) -> bool:
        return self.status == 429


#: Why a 404 to POST or GET /jobs stops the flow (said where the flow is built and by the running flow).
NOT_A_BATCH_API = ("SPEECHMATICS_BATCH_URL does not name a Speechmatics batch API (it ends in /v2, for example "
                   "http://127.0.0.1:18000/v2)")


def cause_chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it was raised from, outermost first (cycle-safe)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def http_status(exc: BaseException) -> int | None:
    """The HTTP status a failure carries anywhere in its cause chain, if it has one."""
    for link in cause_chain(exc):
        if isinstance(link, TransportError) and link.status_code is not None:
            return link.status_code
        if isinstance(link, aiohttp.ClientResponseError):
            return link.status
    return None


def _describe(exc: BaseException, status: int | None) -> str:
    name = type(exc).__name__
    if status is not None:
        return f"HTTP {status} ({name})"
    innermost = list(cause_chain(exc))[-1]
    return f"{name}: {type(innermost).__name__}" if innermost is not exc else name


def classify(exc: BaseException, *, posting: bool) -> Classified:
    """Classify a failure of one API request; `posting` is True for POST /jobs (see module doc)."""
    chain = list(cause_chain(exc))
    status = http_status(exc)
    if any(isinstance(e, AuthenticationError) for e in chain) or status in (401, 403):
        return Classified(ErrorClass.FATAL, status or 401, "authentication failed (HTTP 401/403): "
                                                    "SPEECHMATICS_API_KEY is wrong or lacks permission")
    description = _describe(exc, status)
    if any(isinstance(e, JobExpiredError) for e in chain) or status == 410:
        return Classified(ErrorClass.GONE, status, description)
    if status is not None:
        if posting and status in AMBIGUOUS_POST_STATUSES:
            return Classified(ErrorClass.AMBIGUOUS, status, description)
        if status in RETRY_STATUSES:
            return Classified(ErrorClass.RETRYABLE, status, description)
        if status == 404 and not posting:
            return Classified(ErrorClass.GONE, status, description)
        return Classified(ErrorClass.PERMANENT, status, description)
    if any(isinstance(e, aiohttp.ClientConnectorError) for e in chain):
        return Classified(ErrorClass.RETRYABLE, None, description)  # never reached the server
    transport = any(isinstance(e, (ConnectionError, TransportError, aiohttp.ClientError, asyncio.TimeoutError,
                                   TimeoutError, OSError)) for e in chain)
    if transport:
        return Classified(ErrorClass.AMBIGUOUS if posting else ErrorClass.RETRYABLE, None, description)
    return Classified(ErrorClass.PERMANENT, None, description)


class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, base * 2**n))."""

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not crypto

    def ceiling(self, attempt: int) -> float:
        return min(self.cap, self.base * (2 ** min(attempt, 32)))

    def delay(self, attempt: int) -> float:
        return self._rng.uniform(0.0, self.ceiling(attempt))


@dataclass(slots=True)
class RetryBudget:
    """Capped attempts and capped total time for one chunk; `deadline` is on the monotonic clock."""

    max_attempts: int
    deadline: float
    attempts: int = 0

    def spend(self) -> int:
        """Count one more attempt (a request that reached, or tried to reach, the API)."""
        self.attempts += 1
        return self.attempts

    def exhausted(self, now: float) -> bool:
        return self.attempts >= self.max_attempts or now >= self.deadline

    def clip(self, delay: float, now: float) -> float:
        """A wait that does not run past the deadline."""
        return max(0.0, min(delay, self.deadline - now))
