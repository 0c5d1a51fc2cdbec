"""The telephony ingress at N concurrent 8 kHz two-track Twilio streams: CPU and memory per stream, and the latency
it adds from a websocket message to Kafka's acknowledgement.

The ingress runs as users run it (`bytewax-speechmatics ingress`, its own process) against the real broker; a load
generator process opens N Media Streams sessions (both tracks, 20 ms mu-law packets: 100 messages/s per stream, as
Twilio sends them), their starts spread over the first second, paced in real time for `--seconds`, then `stop`.

Figures:
- CPU per stream: the ingress process's CPU seconds over the run (sessions opened and closed included) / (N x the
  seconds streamed), in % of a core.
- memory per stream: (the ingress's peak RSS - its RSS before the first session) / N.
- websocket -> Kafka ack p50/p99: the ingress's own histogram `bwsm_ingress_ack_seconds` (from the oldest audio of a
  frame being read off its websocket to Kafka acknowledging the frame; frames are 0.5 s (the ingress's
  `--frame-seconds`; `--frame-seconds` here passes it on), so up to that much of it is
  the frame filling), scraped from its /metrics; percentiles interpolated in buckets.
- generator lag p99: how late the load generator sent its messages against the schedule; when it is large the
  generator (Python, on the same cores) could not keep up and the figures describe a lighter load than N streams.

Alone: .venv/bin/python -m bench.ingress [--streams 1000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import subprocess
import sys
import time
import urllib.request

import numpy as np

from bench.common import (
    ProcSampler,
    Table,
    create_topic,
    delete_topics,
    emit_result,
    free_port,
    histogram_percentiles,
    kafka_bootstrap,
    percentiles,
    proc_rss_bytes,
    run_child,
    self_usage,
)
from bench.latency import scrape_histogram
from bytewax.speechmatics.connectors.cli.ingress import INGRESS_FRAME_SECONDS

PACKET_S = 0.02


async def _stream(url: str, index: int, seconds: float, t0: float, lags: list[float]) -> None:
    import aiohttp
    import orjson

    rng = np.random.default_rng(index)
    payloads = [base64.b64encode(rng.integers(0, 255, 160, dtype=np.uint8).tobytes()).decode() for _ in range(2)]
    sid, stream = f"CA-bench-{index}", f"MZ-bench-{index}"
    start = {"event": "start", "sequenceNumber": "1", "streamSid": stream, "start": {
        "streamSid": stream, "callSid": sid, "tracks": ["inbound", "outbound"], "customParameters": {"n": str(index)},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}
    await asyncio.sleep(max(0.0, t0 + (index % 1000) / 1000 - time.monotonic()))
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_str(orjson.dumps(start).decode())
        began = time.monotonic()
        for chunk in range(int(seconds / PACKET_S)):
            due = began + chunk * PACKET_S
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                lags.append(-delay)
            for track, payload in zip(("inbound", "outbound"), payloads, strict=True):
                await ws.send_str(f'{{"event":"media","streamSid":"{stream}","media":{{"track":"{track}",'
                                  f'"chunk":"{chunk + 1}","timestamp":"{chunk * 20}","payload":"{payload}"}}}}')
        await ws.send_str(orjson.dumps({"event": "stop", "streamSid": stream,
                                        "stop": {"callSid": sid}}).decode())
        await ws.receive(timeout=60)  # the server closes once the call's last frames are acknowledged


def client(url: str, streams: int, seconds: float) -> None:
    """The load generator (a child process): N streams, then its schedule lag and own usage as the result."""
    lags: list[float] = []

    async def main() -> list[BaseException | None]:
        t0 = time.monotonic() + 0.5
        return await asyncio.gather(*(_stream(url, i, seconds, t0, lags) for i in range(streams)),
                                    return_exceptions=True)

    outcomes = asyncio.run(main())
    failures = [repr(o) for o in outcomes if isinstance(o, BaseException)]
    p50, p99 = percentiles(lags, (50, 99)) if lags else (0.0, 0.0)
    emit_result({"failures": len(failures), "first_failure": failures[0] if failures else None,
                 "late_messages": len(lags), "lag_p50": p50, "lag_p99": p99, **self_usage()})


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:  # noqa: S310 - local
        for line in resp.read().decode().splitlines():
            if line.startswith(name):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def run(bootstrap: str, streams: int, seconds: float, table: Table, frame_seconds: float | None = None) -> None:
    topic = create_topic(bootstrap, "bench-ingress", 4)
    port = free_port()
    log = open(f"/tmp/bench-ingress-{port}.log", "wb")  # noqa: SIM115, S108 - the child's log, kept for a look
    ingress = subprocess.Popen(
        [sys.executable, "-m", "bytewax.speechmatics.connectors.cli", "ingress", "--host", "127.0.0.1", "--port",
         str(port), "--topic", topic, "--start-timeout", "60",
         *(["--frame-seconds", str(frame_seconds)] if frame_seconds else [])],
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()  # noqa: S310
                break
            except OSError:
                if time.monotonic() > deadline or ingress.poll() is not None:
                    raise RuntimeError(f"ingress did not start; see {log.name}") from None
                time.sleep(0.2)
        idle_rss = proc_rss_bytes(ingress.pid)[0]
        sampler = ProcSampler({"ingress": ingress.pid})
        result = run_child(["bench.ingress", "--client", "--url", f"ws://127.0.0.1:{port}/twilio", "--streams",
                            str(streams), "--seconds", str(seconds)], timeout=seconds * 4 + 300)
        usage = sampler.stop()["ingress"]
        p50, p99 = histogram_percentiles(scrape_histogram(port, "bwsm_ingress_ack_seconds"), (50, 99))
        completed = _metric(port, 'bwsm_ingress_sessions_ended_total{protocol="twilio",reason="completed"}')
    finally:
        ingress.terminate()
        ingress.wait(60)
        delete_topics(bootstrap, [topic])
    case = f"{streams} streams x {seconds:g} s" + (f", {frame_seconds:g} s frames" if frame_seconds else "")
    per_stream = 100 * usage.cpu_seconds / (seconds * streams)  # CPU seconds per second of one stream, in %
    table.add("ingress", case, "ingress CPU per stream", f"{per_stream:.3f} % of a core",
              f"{usage.cpu_seconds:.1f} CPU s in all (sessions opened and closed included); "
              f"{streams} streams = {per_stream * streams:.0f} % of a core")
    table.add("ingress", case, "memory per stream", f"{(usage.peak_rss - idle_rss) / streams / 1024:.0f} KiB",
              f"peak RSS {usage.peak_rss / 2**20:.0f} MiB, idle {idle_rss / 2**20:.0f} MiB")
    table.add("ingress", case, "websocket -> Kafka ack p50 / p99", f"{p50 * 1000:.0f} / {p99 * 1000:.0f} ms",
              f"from the oldest audio of a {frame_seconds or INGRESS_FRAME_SECONDS:g} s frame")
    table.add("ingress", case, "sessions completed", f"{completed:.0f} of {streams}",
              f"generator failures {result['failures']}" + (f" ({result['first_failure']})"
                                                            if result["first_failure"] else ""))
    table.add("ingress", case, "generator lag p50 / p99", f"{result['lag_p50'] * 1000:.0f} / "
              f"{result['lag_p99'] * 1000:.0f} ms", f"{result['late_messages']} late sends; generator CPU "
              f"{result['cpu_seconds']:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--frame-seconds", type=float, default=None,
                        help=f"the ingress's --frame-seconds (default its own, {INGRESS_FRAME_SECONDS:g})")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client(args.url, args.streams, args.seconds)
        return
    table = Table()
    run(kafka_bootstrap(), args.streams, args.seconds, table, args.frame_seconds)
    print(table.render())


if __name__ == "__main__":
    main()
