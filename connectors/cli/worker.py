"""`bytewax-speechmatics worker`: run the local Speechmatics-compatible batch worker.

Environment defaults (flags win): BWSM_WORKER_HOST (127.0.0.1), BWSM_WORKER_PORT (18000; 0 = any free
port), BWSM_WORKER_PARALLEL (1), BWSM_WORKER_ENGINE (whisper), BWSM_WHISPER_MODEL_DIR, BWSM_WORKER_API_KEY
(none: any caller is accepted), BWSM_WORKER_FAULTS (a fault document, see worker_faults).
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
from typing import Any

from aiohttp import web

from bytewax.speechmatics.connectors.worker.faults import FaultConfigError, FaultPlan

LISTENING_PREFIX = "BWSM_WORKER_LISTENING"
log = logging.getLogger(__name__)


def _range(text: str) -> dict[str, Any]:
    low, sep, high = text.partition(":")
    return {"dist": "uniform", "min": float(low), "max": float(high)} if sep else {"dist": "fixed", "value": float(low)}


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
        doc["latency"] = {"post": _range(args.fault_latency), "get": _range(args.fault_latency)}
    if args.fault_job_duration:
        doc["job_duration"] = _range(args.fault_job_duration)
    if args.fault_webhook_delay:
        doc["webhook_delay"] = _range(args.fault_webhook_delay)
    if args.fault_seed is not None:
        doc["seed"] = args.fault_seed
    if not rates:
        doc.pop("rates")
    FaultPlan.parse(doc)  # fail at start-up, not at the first request
    return doc


def make_engine(name: str, parallel: int, model_dir: str | None):
    if name == "reference":
        from bytewax.speechmatics.connectors.worker.app import ReferenceBackend

        return ReferenceBackend()
    if name == "whisper":
        from bytewax.speechmatics.connectors.worker.engines.whisper import WhisperBackend

        return WhisperBackend(parallel=parallel, model_dir=model_dir)
    raise SystemExit(f"unknown engine {name!r} (whisper, reference)")


async def serve(args: argparse.Namespace, faults: dict[str, Any]) -> None:
    from bytewax.speechmatics.connectors.worker.app import WorkerState, create_app

    engine = make_engine(args.engine, args.parallel, args.model_dir)
    state = WorkerState(engine, args.parallel, api_key=args.api_key, faults=faults)
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


def _configure(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--host", default=env("BWSM_WORKER_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("BWSM_WORKER_PORT", "18000")), help="0 = any free port")
    parser.add_argument("--parallel", type=int, default=int(env("BWSM_WORKER_PARALLEL", "1")), help="engines")
    parser.add_argument("--engine", choices=["whisper", "reference"], default=env("BWSM_WORKER_ENGINE", "whisper"))
    parser.add_argument("--model-dir", default=env("BWSM_WHISPER_MODEL_DIR"), help="CTranslate2 Whisper model dir")
    parser.add_argument("--api-key", default=env("BWSM_WORKER_API_KEY"), help="require Authorization: Bearer KEY")
    parser.add_argument("--faults", default=env("BWSM_WORKER_FAULTS"), help="fault document (JSON)")
    parser.add_argument("--fault-post-429", type=float, default=0.0, help="fraction of POST /v2/jobs answered 429")
    parser.add_argument("--fault-get-429", type=float, default=0.0, help="fraction of GETs answered 429")
    parser.add_argument("--fault-503", type=float, default=0.0, help="fraction of POSTs and GETs answered 503")
    parser.add_argument("--fault-500", type=float, default=0.0, help="fraction of POSTs and GETs answered 500")
    parser.add_argument("--fault-drop", type=float, default=0.0, help="fraction of POSTs dropped after accepting")
    parser.add_argument("--fault-reject", type=float, default=0.0, help="fraction of jobs that end rejected")
    parser.add_argument("--fault-latency", help="added latency in seconds: S or MIN:MAX (uniform)")
    parser.add_argument("--fault-job-duration", help="extra seconds each job holds its engines: S or MIN:MAX")
    parser.add_argument("--fault-webhook-delay", help="seconds before each webhook attempt: S or MIN:MAX")
    parser.add_argument("--fault-seed", type=int, default=None, help="seed of the fault dice")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.parallel < 1:
        raise SystemExit("--parallel must be at least 1")
    try:
        faults = fault_document(args)
    except (ValueError, FaultConfigError) as exc:
        raise SystemExit(f"bad fault configuration: {exc}") from None
    asyncio.run(serve(args, faults))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("worker", help="run the local Speechmatics-compatible batch worker")
    _configure(parser)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bytewax-speechmatics worker")
    _configure(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
