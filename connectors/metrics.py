"""Prometheus metrics of job submission (prefix `bwsm_`): counts and rates only, never keys or audio."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CHUNKS_SUBMITTED = Counter("bwsm_chunks_submitted", "Chunks handed to the Speechmatics client")
JOBS_POSTED = Counter("bwsm_jobs_posted", "Jobs the API accepted (POST answered with a job id)")
JOBS_RECOVERED = Counter("bwsm_jobs_recovered", "Jobs found again instead of posting", ["via"])
CHUNKS_DONE = Counter("bwsm_chunks_done", "Chunks transcribed")
CHUNKS_FAILED = Counter("bwsm_chunks_failed", "Chunks dead-lettered", ["reason"])
HTTP_429 = Counter("bwsm_http_429", "Requests answered 429 (rate limited)", ["route"])
RETRIES = Counter("bwsm_retries", "Requests retried", ["route", "kind"])
JOBS_IN_FLIGHT = Gauge("bwsm_jobs_in_flight", "Chunks between their first POST and their result")
RATE_LIMIT = Gauge("bwsm_rate_limit_per_second", "Current (AIMD) request rate of this process", ["route"])
CHUNK_LATENCY = Histogram("bwsm_chunk_latency_seconds", "From first POST attempt to transcript",
                          buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600))
