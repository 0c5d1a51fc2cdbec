"""`bytewax-speechmatics worker`: run the local Speechmatics-compatible batch worker.

The command is where the worker's environment is read (the worker's modules never read it): each flag's default
comes from a variable, and flags win. BWSM_WORKER_HOST (127.0.0.1), BWSM_WORKER_PORT (18000; 0 = any free port),
BWSM_WORKER_PARALLEL (1), BWSM_WORKER_ENGINE (whisper), BWSM_WORKER_API_KEY (none: any caller is accepted),
BWSM_WORKER_FAULTS (a fault document, see worker/faults.py), BWSM_WORKER_WEBHOOK_DEADLINE (60 s), and for the
whisper engine (the `[worker]` extra): BWSM_WHISPER_MODEL_DIR, BWSM_WHISPER_MODEL (base), BWSM_WHISPER_THREADS
(cores / parallel) and BWSM_CACHE_DIR (~/.cache/bytewax-speechmatics). A bad value is one line naming the variable.
Once listening it prints one line `BWSM_WORKER_LISTENING http://host:port` on stdout (how a parent that
asked for port 0 learns the port). Also runnable as `python -m bytewax.speechmatics.connectors.cli.worker`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from bytewax.speechmatics.connectors.cli.arguments import (
    COUNT,
    FRACTION,
    NON_NEGATIVE_SECONDS,
    PORT,
    SECONDS,
    Number,
    OneOf,
    OptionValueError,
    WholeNumber,
    from_env,
    refused,
)
from bytewax.speechmatics.connectors.worker.control import LISTENING_PREFIX
from bytewax.speechmatics.connectors.worker.faults import FaultConfigError, FaultPlan
from bytewax.speechmatics.schemas.errors import SettingsError

__all__ = ["LISTENING_PREFIX", "build_parser", "fault_document", "main", "make_engine", "run"]

ENGINES = ("whisper", "reference")
NOT_INSTALLED = ("the whisper engine needs faster-whisper, which is not installed: "
                 "pip install 'bytewax-speechmatics[worker]' (or use --engine reference)")
log = logging.getLogger(__name__)
#: Seconds a job keeps its engines per second of audio, at least.
PROCESSING_FACTOR = Number(0, noun="a number of seconds per second of audio")
#: A fault's duration, as --fault-latency and the like take it.
SECONDS_RANGE = f"{NON_NEGATIVE_SECONDS.allowed}, or MIN:MAX (two such numbers, MIN at most MAX)"


def seconds_range(text: str) -> dict[str, Any]:
    """A fault's duration: `S` (fixed) or `MIN:MAX` (uniform), seconds >= 0, as a fault document's distribution."""
    low, sep, high = text.partition(":")
    try:
        values = [NON_NEGATIVE_SECONDS(part) for part in ((low, high) if sep else (low,))]
    except OptionValueError:
        raise refused(SECONDS_RANGE, text) from None
    if sep and values[0] > values[1]:
        raise refused(SECONDS_RANGE, text)
    return {"dist": "uniform", "min": values[0], "max": values[1]} if sep else {"dist": "fixed", "value": values[0]}


def fault_document(args: argparse.Namespace) -> dict[str, Any]:
    """The --faults document with the shortcut flags merged in (shortcuts win)."""
    doc: dict[str, Any] = json.loads(args.faults) if args.faults else {}
    rates = doc.setdefault("rates", {})
    shortcuts = [
        ("post", "429", args.fault_post_429), ("get", "429", args.fault_get_429),
        ("post", "503", args.fault_503), ("get", "503", args.fault_503),
        ("post", "500", args.fault_500), ("get", "500", args.fault_500),
        ("post", "drop", args.fault_drop), ("post", "reject", args.fault_reject),
    ]
    for route, outcome, prob in shortcuts:
        if prob:
            rates.setdefault(route, {})[outcome] = prob
    if args.fault_latency:
        doc["latency"] = {"post": args.fault_latency, "get": dict(args.fault_latency)}
    if args.fault_job_duration:
        doc["job_duration"] = args.fault_job_duration
    if args.fault_webhook_delay:
        doc["webhook_delay"] = args.fault_webhook_delay
    if args.fault_seed is not None:
        doc["seed"] = args.fault_seed
    if not rates:
        doc.pop("rates")
    FaultPlan.parse(doc)  # fail at start-up, not at the first request
    return doc


def make_engine(args: argparse.Namespace) -> Any:
    """The engine the flags ask for; whisper is imported only here, so a reference worker never needs it."""
    if args.engine == "reference":
        from bytewax.speechmatics.connectors.worker.app import ReferenceBackend

        return ReferenceBackend()
    if args.engine == "whisper":
        from bytewax.speechmatics.connectors.worker.engines.whisper import (
            WhisperBackend,
            WhisperConfig,
            faster_whisper_installed,
        )

        if not faster_whisper_installed():
            raise SettingsError(NOT_INSTALLED)
        config = WhisperConfig(cache_dir=Path(args.cache_dir), model_dir=args.model_dir or None,
                               model_name=args.model, threads=args.threads)
        return WhisperBackend(args.parallel, config)
    raise SettingsError(f"unknown engine {args.engine!r} ({', '.join(ENGINES)})")


async def serve(args: argparse.Namespace, engine: Any, faults: dict[str, Any]) -> None:
    from bytewax.speechmatics.connectors.worker.app import WorkerState, create_app

    state = WorkerState(engine, args.parallel, api_key=args.api_key or None, faults=faults,
                        webhook_deadline=args.webhook_deadline, processing_factor=args.processing_factor)
    runner = web.AppRunner(create_app(state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    host, port = site._server.sockets[0].getsockname()[:2]  # noqa: SLF001 - the only way to learn port 0
    print(f"{LISTENING_PREFIX} http://{host}:{port}", flush=True)
    log.info(
        "worker listening port=%d engine=%s parallel=%d auth=%s", port, args.engine, args.parallel, bool(args.api_key)
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    failed = asyncio.ensure_future(state.failed.wait())
    await asyncio.wait([asyncio.ensure_future(stop.wait()), failed], return_when=asyncio.FIRST_COMPLETED)
    log.info("worker stopping")
    await runner.cleanup()
    if state.failure:
        raise SystemExit(f"worker engine {args.engine} failed to start: {state.failure}")


def default_cache_dir(environ: Mapping[str, str]) -> str:
    """BWSM_CACHE_DIR, else ~/.cache/bytewax-speechmatics (the same place `kafka up` and the samples use)."""
    return environ.get("BWSM_CACHE_DIR") or str(Path.home() / ".cache" / "bytewax-speechmatics")


def _configure(parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None) -> None:
    """The worker's flags; their defaults are read from `environ` (this process's environment by default)."""
    env = os.environ if environ is None else environ
    parser.add_argument("--host", default=env.get("BWSM_WORKER_HOST") or "127.0.0.1",
                        help="address to listen on (BWSM_WORKER_HOST)")
    parser.add_argument("--port", type=PORT, default=from_env(env, "BWSM_WORKER_PORT", PORT, 18000),
                        help="0 = any free port (BWSM_WORKER_PORT, default 18000)")
    parser.add_argument("--parallel", type=COUNT, default=from_env(env, "BWSM_WORKER_PARALLEL", COUNT, 1),
                        help="engines, i.e. jobs run at once (BWSM_WORKER_PARALLEL, default 1)")
    parser.add_argument("--processing-factor", type=PROCESSING_FACTOR,
                        default=from_env(env, "BWSM_WORKER_PROCESSING_FACTOR", PROCESSING_FACTOR, 0.0),
                        help="seconds a job keeps its engine per second of audio, at least (simulated processing "
                             "time, so engines stay busy as real ones do; BWSM_WORKER_PROCESSING_FACTOR, default 0)")
    parser.add_argument("--engine", choices=ENGINES,
                        default=from_env(env, "BWSM_WORKER_ENGINE", OneOf(ENGINES), "whisper"),
                        help="whisper needs the [worker] extra (BWSM_WORKER_ENGINE, default whisper)")
    parser.add_argument("--api-key", default=env.get("BWSM_WORKER_API_KEY"),
                        help="require Authorization: Bearer KEY; empty = none (BWSM_WORKER_API_KEY)")
    parser.add_argument("--faults", default=env.get("BWSM_WORKER_FAULTS"),
                        help="fault document, JSON (BWSM_WORKER_FAULTS)")
    parser.add_argument("--webhook-deadline", type=SECONDS,
                        default=from_env(env, "BWSM_WORKER_WEBHOOK_DEADLINE", SECONDS, 60.0),
                        help="seconds a job notification is retried for (BWSM_WORKER_WEBHOOK_DEADLINE, default 60)")
    whisper = parser.add_argument_group("whisper engine")
    whisper.add_argument("--model-dir", default=env.get("BWSM_WHISPER_MODEL_DIR") or None,
                         help="CTranslate2 Whisper model directory (BWSM_WHISPER_MODEL_DIR)")
    whisper.add_argument("--model", default=env.get("BWSM_WHISPER_MODEL") or "base",
                         help="faster-whisper model name, downloaded when no directory or weight wheel is there "
                              "(BWSM_WHISPER_MODEL, default base)")
    whisper.add_argument("--threads", type=COUNT, default=from_env(env, "BWSM_WHISPER_THREADS", COUNT, None),
                         help="CPU threads per engine (BWSM_WHISPER_THREADS, default cores / parallel)")
    whisper.add_argument("--cache-dir", default=default_cache_dir(env),
                         help="where the wheels' model is assembled "
                              "(BWSM_CACHE_DIR, default ~/.cache/bytewax-speechmatics)")
    faults = parser.add_argument_group("fault injection")
    faults.add_argument("--fault-post-429", type=FRACTION, default=0.0, help="fraction of POST /v2/jobs answered 429")
    faults.add_argument("--fault-get-429", type=FRACTION, default=0.0, help="fraction of GETs answered 429")
    faults.add_argument("--fault-503", type=FRACTION, default=0.0, help="fraction of POSTs and GETs answered 503")
    faults.add_argument("--fault-500", type=FRACTION, default=0.0, help="fraction of POSTs and GETs answered 500")
    faults.add_argument("--fault-drop", type=FRACTION, default=0.0, help="fraction of POSTs dropped after accepting")
    faults.add_argument("--fault-reject", type=FRACTION, default=0.0, help="fraction of jobs that end rejected")
    faults.add_argument("--fault-latency", type=seconds_range,
                        help="added latency in seconds: S or MIN:MAX (uniform)")
    faults.add_argument("--fault-job-duration", type=seconds_range,
                        help="extra seconds each job holds its engines: S or MIN:MAX")
    faults.add_argument("--fault-webhook-delay", type=seconds_range,
                        help="seconds before each webhook attempt: S or MIN:MAX")
    faults.add_argument("--fault-seed", type=WholeNumber(), default=None, help="seed of the fault dice")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; a bad configuration is a SettingsError (one line, exit 2) before listening."""
    try:
        faults = fault_document(args)
    except (ValueError, FaultConfigError) as exc:
        raise SettingsError(f"bad fault configuration: {exc}") from None
    engine = make_engine(args)
    asyncio.run(serve(args, engine, faults))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("worker", help="run the local Speechmatics-compatible batch worker")
    _configure(parser)


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The worker command on its own (`python -m ...cli.worker`); defaults from `environ` (default os.environ)."""
    parser = argparse.ArgumentParser(prog="bytewax-speechmatics worker")
    _configure(parser, environ)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
        return run(args)
    except SettingsError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
