"""`bytewax-speechmatics realtime`: run the real-time bridge (calls.audio -> Speechmatics RT sessions -> calls.rt).

Configured like the flow (Settings.from_env: KAFKA_BOOTSTRAP_SERVERS, BWSM_AUDIO_TOPIC, BWSM_RT_TOPIC, the
transcription defaults, SPEECHMATICS_API_KEY, SPEECHMATICS_RT_URL and BWSM_RT_*). Stops on SIGINT/SIGTERM: open
sessions are closed without EndOfStream and a restart resumes them from the audio not acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from bytewax.speechmatics.connectors.cli.arguments import PORT
from bytewax.speechmatics.connectors.kafka.topics import KafkaUnavailable, probe_brokers
from bytewax.speechmatics.flows.settings import Settings


async def _run(settings: Settings, metrics_port: int | None) -> None:
    from bytewax.speechmatics.connectors.speechmatics.realtime import Bridge

    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bridge = Bridge(settings.bridge, settings.submission, settings.kafka, settings.topics.audio,
                    settings.topics.realtime, idle_seconds=settings.chunking.idle_timeout_seconds,
                    max_frame_seconds=settings.decoding.max_frame_seconds)
    await bridge.run(stop)


def _command(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if not settings.bridge.api_key and not settings.bridge.rt_url:
        print("realtime: set SPEECHMATICS_API_KEY (the Speechmatics real-time API needs it) or SPEECHMATICS_RT_URL "
              "(an on-prem or local endpoint, e.g. ws://127.0.0.1:18000/v2)", file=sys.stderr)
        return 2
    try:
        probe_brokers(settings.kafka.client_config())
    except KafkaUnavailable as exc:
        print(f"realtime: {exc}", file=sys.stderr)
        return 2
    print(f"realtime: bridging {settings.topics.audio} -> {settings.topics.realtime} "
          f"(group {settings.bridge.group}, at most {settings.bridge.max_sessions} sessions)", flush=True)
    asyncio.run(_run(settings, args.metrics_port))
    print("realtime: stopped", flush=True)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("realtime", help="stream each call to a Speechmatics real-time session "
                                                    "(calls.audio -> calls.rt)")
    parser.add_argument("--metrics-port", type=PORT, default=None,
                        help="serve Prometheus metrics (bwsm_rt_*) on this port")
    parser.set_defaults(func=_command)
