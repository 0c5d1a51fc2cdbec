"""Error classes of API failures (real SDK exception chains) and backoff arithmetic."""

from __future__ import annotations

import asyncio
import random

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from speechmatics.batch import AuthenticationError, BatchError, ConnectionError, JobError, TransportError

from bytewax.speechmatics.connectors.speechmatics.retry import Backoff, ErrorClass, RetryBudget, classify


def wrapped(outer: type[Exception], inner: BaseException) -> Exception:
    """Raise `inner` and wrap it like the SDK does (raise Outer(...) from inner)."""
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer(f"failed: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - we want the wrapped exception object
        return exc


@pytest.mark.parametrize(
    ("inner", "posting", "kind"),
    [
        (TransportError("HTTP 429", status_code=429), True, ErrorClass.RETRYABLE),
        (TransportError("HTTP 503", status_code=503), True, ErrorClass.RETRYABLE),
        (TransportError("HTTP 500", status_code=500), True, ErrorClass.AMBIGUOUS),
        (TransportError("HTTP 500", status_code=500), False, ErrorClass.RETRYABLE),
        (TransportError("HTTP 502", status_code=502), False, ErrorClass.RETRYABLE),
        (TransportError("HTTP 400", status_code=400), True, ErrorClass.PERMANENT),
        (TransportError("HTTP 404", status_code=404), False, ErrorClass.GONE),
        (TransportError("HTTP 410", status_code=410), False, ErrorClass.GONE),
        (TransportError("Request timeout"), True, ErrorClass.AMBIGUOUS),
        (TransportError("Request timeout"), False, ErrorClass.RETRYABLE),
        (ConnectionError("Server disconnected"), True, ErrorClass.AMBIGUOUS),
        (AuthenticationError("Invalid API key"), True, ErrorClass.FATAL),
        (AuthenticationError("Access forbidden"), False, ErrorClass.FATAL),
    ],
)
def test_sdk_failures_are_classified_through_the_cause_chain(inner, posting, kind) -> None:
    outer = BatchError if posting else JobError
    assert classify(wrapped(outer, inner), posting=posting).kind is kind


def test_connection_refused_before_sending_is_not_ambiguous() -> None:
    refused = aiohttp.ClientConnectorError(None, OSError(111, "refused"))  # type: ignore[arg-type]
    exc = wrapped(BatchError, wrapped(ConnectionError, refused))
    assert classify(exc, posting=True).kind is ErrorClass.RETRYABLE


def test_fatal_description_names_the_cause_and_throttled_flag() -> None:
    fatal = classify(AuthenticationError("Invalid API key"), posting=True)
    assert "SPEECHMATICS_API_KEY" in fatal.description and "401" in fatal.description
    assert classify(TransportError("x", status_code=429), posting=False).throttled
    assert not classify(TransportError("x", status_code=503), posting=False).throttled
    assert classify(asyncio.TimeoutError(), posting=False).kind is ErrorClass.RETRYABLE


@given(attempt=st.integers(0, 50), base=st.floats(0.01, 2.0), cap=st.floats(0.1, 60.0), seed=st.integers())
def test_full_jitter_stays_within_the_exponential_ceiling(attempt: int, base: float, cap: float, seed: int) -> None:
    backoff = Backoff(base, cap, random.Random(seed))
    delay = backoff.delay(attempt)
    assert 0.0 <= delay <= min(cap, base * 2**attempt) + 1e-12


def test_full_jitter_spreads_delays() -> None:
    backoff = Backoff(1.0, 100.0, random.Random(1))
    delays = [backoff.delay(3) for _ in range(1000)]
    assert min(delays) < 1.0 and max(delays) > 7.0  # uniform over [0, 8], not clustered at the ceiling


def test_retry_budget_caps_attempts_and_time() -> None:
    budget = RetryBudget(max_attempts=3, deadline=10.0)
    assert not budget.exhausted(0.0)
    for _ in range(3):
        budget.spend()
    assert budget.exhausted(0.0)
    assert RetryBudget(5, deadline=10.0).exhausted(10.0)
    assert budget.clip(5.0, 8.0) == 2.0 and budget.clip(5.0, 11.0) == 0.0
