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
CALL_AUDIO_SECONDS = Counter("bwsm_audio_seconds_total",
                             "Seconds of call audio whose segments were emitted (overlaps counted once)")
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

# -- telephony ingress (`bytewax-speechmatics ingress`: its own process, its own /metrics) --
INGRESS_SESSIONS = Gauge("bwsm_ingress_sessions", "Websocket sessions open, by protocol", ["protocol"])
INGRESS_ENDED = Counter("bwsm_ingress_sessions_ended_total",
                        "Sessions ended, by protocol and reason (stop/close = completed; dropped = the socket went "
                        "away; anything else = the ingress closed it for that reason)", ["protocol", "reason"])
INGRESS_REFUSED = Counter("bwsm_ingress_refused_upgrades_total", "Websocket upgrades refused, by protocol and reason",
                          ["protocol", "reason"])
INGRESS_MESSAGES = Counter("bwsm_ingress_messages_total", "Websocket messages read, by protocol and type",
                           ["protocol", "type"])
INGRESS_LATE_SECONDS = Counter("bwsm_ingress_late_audio_seconds_total",
                               "Audio dropped because it arrived after its position had gone out", ["protocol"])
INGRESS_REFUSED_SETTINGS = Counter("bwsm_ingress_refused_call_settings_total",
                                   "Calls whose config/metadata broke the start-message contract (started without)",
                                   ["protocol"])
INGRESS_ACK = Histogram("bwsm_ingress_ack_seconds",
                        "From the oldest audio of a frame being read off a websocket to Kafka acknowledging the frame",
                        buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30))
INGRESS_IN_FLIGHT = Gauge("bwsm_ingress_in_flight_bytes", "Audio bytes produced and not yet acknowledged by Kafka")

# -- operations (health thread, status board) --
AUDIO_SECONDS = Counter("bwsm_chunker_audio_seconds", "Seconds of call audio accepted by the chunker (gaps included)")
SOURCE_LAG_SECONDS = Gauge("bwsm_source_lag_seconds",
                           "Age of the oldest unread message per partition, an upper bound (0: nothing unread)",
                           ["topic", "partition"])
SOURCE_READ_TIMESTAMP = Gauge("bwsm_source_read_timestamp_seconds",
                              "Kafka timestamp of the last message read per partition", ["topic", "partition"])
OPEN_CALLS = Gauge("bwsm_open_calls", "Calls this process holds: audio not yet cut or chunks not yet transcribed")
CHUNKS_PENDING = Gauge("bwsm_chunks_pending", "Chunks cut and not yet transcribed (waiting for a POST or in flight)")
SUBMIT_FATAL = Gauge("bwsm_submit_fatal", "1 once the submission API refused the key (401/403); the flow then stops")
JOURNAL_BYTES = Gauge("bwsm_journal_bytes", "Bytes of the job journal (all processes' files in its directory)")

# A fleet of on-prem workers (connectors/speechmatics/fleet.py), per worker (host:port)
FLEET_FREE_ENGINES = Gauge("bwsm_fleet_free_engines", "Free engines of a fleet worker, as this process sees them",
                           ["worker"])
FLEET_WORKER_UP = Gauge("bwsm_fleet_worker_up", "1 while a fleet worker is in rotation", ["worker"])
FLEET_WORKER_DOWN = Counter("bwsm_fleet_worker_down", "Times a fleet worker left rotation", ["worker"])
FLEET_REFUSALS = Counter("bwsm_fleet_refusals", "POSTs a fleet worker refused as busy (503)", ["worker"])
FLEET_WAITS = Counter("bwsm_fleet_waits", "Jobs that waited in the flow for a free engine")
FLEET_WAITING = Gauge("bwsm_fleet_waiting", "Jobs waiting in the flow for a free engine now")
FLEET_FAILOVERS = Counter("bwsm_fleet_failovers", "Jobs posted again elsewhere because their worker left", ["worker"])

# -- the real-time bridge (`bytewax-speechmatics realtime --metrics-port`) --
RT_SESSIONS_OPEN = Gauge("bwsm_rt_sessions_open", "Real-time sessions open in this bridge process")
RT_AUDIO_SECONDS = Counter("bwsm_rt_audio_seconds", "Seconds of audio streamed to real-time sessions")
RT_MESSAGES = Counter("bwsm_rt_messages", "Server messages received by the bridge, by type", ["type"])
RT_FIRST_WORD = Histogram("bwsm_rt_first_word_seconds",
                          "A session's first final word: from its audio's publish time",
                          buckets=(0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30))
RT_ERRORS = Counter("bwsm_rt_errors", "Sessions ended by an error, by type and whether the call gave up",
                    ["type", "final"])
RT_BATCH_ONLY = Counter("bwsm_rt_batch_only_calls", "Calls left to the batch path only, by reason", ["reason"])
