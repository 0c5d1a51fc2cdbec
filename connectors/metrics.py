"""Every Prometheus metric of the flow, in one place (prefix `bwsm_`): counts, rates and timings only, never call
ids, keys, audio or text. Bytewax serves them on its dataflow API (`BYTEWAX_DATAFLOW_API_ENABLED=1`, `/metrics`).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# -- input --
SOURCE_ERRORS = Counter("bwsm_kafka_source_errors_total", "Errors reported by the Kafka consumers", ["step"])
SOURCE_OFFSETS_SKIPPED = Counter("bwsm_source_offsets_skipped_total",
                                 "Offsets a source partition never read: gone from the topic (retention, "
                                 "delete_records) or skipped by BWSM_SOURCE_OFFSET_RESET=latest",
                                 ["topic", "partition"])
SOURCE_PARTITIONS_UNREAD = Gauge("bwsm_source_partitions_unread",
                                 "Partitions added to a source topic since the flow started: read after a restart",
                                 ["topic"])
#: Every stage that refuses input counts it here, labelled by stage (never by call id: unbounded).
DEAD_LETTERS = Counter("bwsm_dead_letters_total", "Messages or chunks sent to the dead-letter topic", ["stage"])

# -- chunking --
FRAMES = Counter("bwsm_chunker_frames_total", "Frames accepted by the chunker (duplicates excluded)")
DUPLICATES = Counter("bwsm_chunker_duplicate_frames_total",
                     "Frames dropped because their seq was already released or filled (replays, retries, late)")
GAPS = Counter("bwsm_chunker_gap_frames_total", "Missing frames filled with silence")
CHUNKS = Counter("bwsm_chunks_total", "Chunks cut, by reason (fixed, vad_pause, vad_forced, end, idle)", ["reason"])

# -- submission --
CHUNKS_SUBMITTED = Counter("bwsm_chunks_submitted", "Chunks handed to the Speechmatics client")
JOBS_POSTED = Counter("bwsm_jobs_posted", "Jobs the API accepted (POST answered with a job id)")
JOBS_RECOVERED = Counter("bwsm_jobs_recovered", "Jobs found again instead of posting", ["via"])
CHUNKS_DONE = Counter("bwsm_chunks_done", "Chunks transcribed")
CHUNKS_SILENT = Counter("bwsm_chunks_silent", "Chunks without speech: not sent (BWSM_SKIP_SILENCE)")
CHUNKS_FAILED = Counter("bwsm_chunks_failed", "Chunks dead-lettered", ["reason"])
HTTP_429 = Counter("bwsm_http_429", "Requests answered 429 (rate limited)", ["route"])
RETRIES = Counter("bwsm_retries", "Requests retried", ["route", "kind"])
JOBS_IN_FLIGHT = Gauge("bwsm_jobs_in_flight", "Chunks between their first POST and their result")
RATE_LIMIT = Gauge("bwsm_rate_limit_per_second", "Current (AIMD) request rate of this process", ["route"])
#: Counted once per chunk when its segment is emitted: what the API bills against what the calls lasted.
BILLED_SECONDS = Counter("bwsm_billed_seconds_total", "Seconds of audio sent to the API (silence compaction applied)")
AUDIO_SECONDS = Counter("bwsm_audio_seconds_total", "Seconds of call audio transcribed (overlaps counted once)")
CHUNK_LATENCY = Histogram("bwsm_chunk_latency_seconds", "From first POST attempt to transcript",
                          buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600))

# -- stitching --
EVENTS = Counter("bwsm_stitcher_events_total", "Batch events emitted by the stitcher, by type", ["type"])
FAILED_SEGMENTS = Counter("bwsm_stitcher_failed_segments_total", "Segments emitted for chunks that failed")

# -- real time --
REALTIME_MESSAGES = Counter("bwsm_realtime_messages_total",
                            "Real-time messages read, by type (every ServerMessageType; ignored ones included)",
                            ["type", "outcome"])

# -- output --
PRODUCED = Counter("bwsm_messages_produced_total", "Messages acknowledged by Kafka, by kind", ["kind"])
LOST_LETTERS = Counter("bwsm_dead_letters_lost_total", "Dead letters Kafka refused (logged, not retried)", ["kind"])
CHUNK_TO_EVENT = Histogram(
    "bwsm_chunk_to_event_seconds", "Wall time from a chunk being cut to its event being acknowledged by Kafka",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
