"""`bytewax-speechmatics ingress`: the telephony websocket server; `ingress replay FILE.jsonl --url ...` plays a
recorded session against one.

Settings (the environment is read here, as everywhere in the command line): Kafka and the audio topic as for every
command (KAFKA_BOOTSTRAP_SERVERS, KAFKA_*, BWSM_AUDIO_TOPIC, BWSM_MAX_FRAME_SECONDS); BWSM_INGRESS_PORT (8080);
credentials TWILIO_AUTH_TOKEN, BWSM_AUDIOHOOK_API_KEY, BWSM_AUDIOHOOK_CLIENT_SECRET, BWSM_INGRESS_TOKEN, and
BWSM_INGRESS_PUBLIC_URL (see connectors/ingress/auth.py); BWSM_INGRESS_MAX_IN_FLIGHT_BYTES (the producer's cap).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys

from bytewax.speechmatics.connectors.cli.arguments import COUNT, PORT, SECONDS, from_env, speed
from bytewax.speechmatics.connectors.kafka.producer import DEFAULT_MAX_IN_FLIGHT_BYTES
from bytewax.speechmatics.flows.settings import Settings
from bytewax.speechmatics.schemas.errors import ContractError
from bytewax.speechmatics.schemas.frames import frame_samples

log = logging.getLogger(__name__)

#: The ingress's frames: 0.5 s, not the producer API's 0.1 s. Each frame costs the ingress a produce and an
#: acknowledgement (and the flow a decode); at 1,000 two-track calls 0.1 s frames are 10,000 of each per second.
#: The batch flow cuts chunks of many seconds, so half a second before audio reaches Kafka changes no transcript's
#: latency noticeably.
INGRESS_FRAME_SECONDS = 0.5


def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from bytewax.speechmatics.connectors.ingress import signatures
    from bytewax.speechmatics.connectors.ingress.auth import AuthSettings, twilio_validator_available
    from bytewax.speechmatics.connectors.ingress.server import Ingress
    from bytewax.speechmatics.connectors.ingress.session import SessionSettings
    from bytewax.speechmatics.connectors.kafka.producer import AsyncCallPublisher
    from bytewax.speechmatics.connectors.metrics import INGRESS_ACK, INGRESS_IN_FLIGHT

    env = os.environ
    try:
        secret = signatures.decode_secret(env["BWSM_AUDIOHOOK_CLIENT_SECRET"]) if env.get(
            "BWSM_AUDIOHOOK_CLIENT_SECRET") else None
    except ValueError as exc:
        print(f"ingress: BWSM_AUDIOHOOK_CLIENT_SECRET {exc}", file=sys.stderr)
        return 2
    if secret and not env.get("BWSM_AUDIOHOOK_API_KEY"):
        print("ingress: BWSM_AUDIOHOOK_CLIENT_SECRET needs BWSM_AUDIOHOOK_API_KEY (the signature's keyid)",
              file=sys.stderr)
        return 2
    auth = AuthSettings(token=env.get("BWSM_INGRESS_TOKEN") or None,
                        twilio_auth_token=env.get("TWILIO_AUTH_TOKEN") or None,
                        audiohook_api_key=env.get("BWSM_AUDIOHOOK_API_KEY") or None,
                        audiohook_client_secret=secret,
                        public_url=env.get("BWSM_INGRESS_PUBLIC_URL") or None)
    if auth.twilio_auth_token and not twilio_validator_available():
        print("ingress: TWILIO_AUTH_TOKEN is set but the twilio package is missing: "
              "pip install 'bytewax-speechmatics[ingress]'", file=sys.stderr)
        return 2
    settings: Settings = args.settings
    try:  # the flow would dead-letter every frame: one line now, not a traceback
        frame_samples(args.frame_seconds * 1000, 8000, settings.decoding.max_frame_seconds)
    except ContractError as exc:
        print(f"ingress: --frame-seconds {args.frame_seconds:g}: {exc}", file=sys.stderr)
        return 2

    async def main() -> None:
        publisher = AsyncCallPublisher(settings.kafka.bootstrap_servers, topic=args.topic,
                                       max_in_flight_bytes=args.max_in_flight_bytes,
                                       frame_seconds=args.frame_seconds,
                                       max_frame_seconds=settings.decoding.max_frame_seconds,
                                       ack_latency=INGRESS_ACK.observe, **settings.kafka.properties)
        INGRESS_IN_FLIGHT.set_function(lambda: publisher.in_flight_bytes)
        ingress = Ingress(SessionSettings(publisher, start_timeout=args.start_timeout), auth)
        runner = web.AppRunner(ingress.app(), handle_signals=True)
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port).start()
        for path in auth.open_endpoints():
            log.warning("%s accepts sessions without credentials (set TWILIO_AUTH_TOKEN, BWSM_AUDIOHOOK_API_KEY or "
                        "BWSM_INGRESS_TOKEN)", path)
        print(f"ingress: listening on http://{args.host}:{args.port} (/twilio, /audiohook, /health, /metrics) "
              f"-> {args.topic} at {settings.kafka.bootstrap_servers}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0


def _replay(args: argparse.Namespace) -> int:
    from bytewax.speechmatics.connectors.ingress.replay import play, read_session

    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    token = os.environ.get("BWSM_INGRESS_TOKEN")
    if token and "Authorization" not in headers:
        headers["Authorization"] = f"Bearer {token}"
    played = asyncio.run(play(args.url, read_session(args.file), speed=args.speed, headers=headers))
    print(f"replay: {len(played.received)} message(s) from the server; closed with code {played.close_code}"
          f"{' (' + played.close_reason + ')' if played.close_reason else ''}")
    return 0 if played.close_code in (None, 1000) else 1


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ingress", help="telephony websockets (Twilio Media Streams, Genesys AudioHook) "
                                                   "-> calls on the audio topic")
    settings = Settings.from_env()
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default all)")
    parser.add_argument("--port", type=PORT, default=from_env(os.environ, "BWSM_INGRESS_PORT", PORT, 8080),
                        help="port (BWSM_INGRESS_PORT, default 8080)")
    parser.add_argument("--topic", default=settings.topics.audio, help="the audio topic (BWSM_AUDIO_TOPIC)")
    parser.add_argument("--start-timeout", type=SECONDS, default=10.0,
                        help="seconds a session may take to start (default 10)")
    parser.add_argument("--max-in-flight-bytes", type=COUNT,
                        default=from_env(os.environ, "BWSM_INGRESS_MAX_IN_FLIGHT_BYTES", COUNT,
                                         DEFAULT_MAX_IN_FLIGHT_BYTES),
                        help="audio bytes produced but not acknowledged before sessions stop reading "
                             "(BWSM_INGRESS_MAX_IN_FLIGHT_BYTES, default 32 MiB)")
    parser.add_argument("--frame-seconds", type=SECONDS, default=INGRESS_FRAME_SECONDS,
                        help=f"audio per frame on the audio topic (default {INGRESS_FRAME_SECONDS:g}; at most "
                             "BWSM_MAX_FRAME_SECONDS): longer frames cost the ingress and the flow less per second "
                             "of audio, and add their length to the time before audio reaches Kafka")
    parser.set_defaults(func=_serve, settings=settings)
    sub = parser.add_subparsers(dest="ingress_command")
    replay = sub.add_parser("replay", help="play a recorded session file (JSONL) against an ingress")
    replay.add_argument("file", help="session file: one {t, text|binary} object per line")
    replay.add_argument("--url", required=True, help="e.g. ws://127.0.0.1:8080/twilio")
    replay.add_argument("--speed", type=speed, default=1.0, help="realtime (default), max, or N x real time")
    replay.add_argument("--header", action="append", default=[], metavar="NAME: VALUE",
                        help="a header for the upgrade request (repeatable); BWSM_INGRESS_TOKEN adds a bearer token")
    replay.set_defaults(func=_replay)
