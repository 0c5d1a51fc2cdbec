"""`make bench`: every benchmark in one run, then ONE table with all the figures that run measured.

Each bench is also runnable alone (`python -m bench.ingest`, `bench.baseline`, `bench.latency`, `bench.scaling`,
`bench.cluster_rate`, `bench.fleet`, `bench.accuracy`, `bench.cost`, `bench.profile_ingest`, `bench.ingress`,
`bench.realtime`, `bench.realtime_accuracy`).
The broker is KAFKA_BOOTSTRAP_SERVERS, else the project's local broker (started if needed). Publishers always run
in their own processes. Options narrow the run: `python -m bench --only ingest,latency --latency-calls 100`;
`--quick` is a short check of every figure (about two minutes plus the accuracy bench's first download) with
smaller sizes, not the figures to quote.

Targets (issue 17): ingest >= 1.0x the hand-written baseline at 20 ms frames (stretch 1.5x); >= 1,500 sustained
real-time calls per process; end -> call_completed p99 <= 150 ms at 100 calls and <= 1 s at 1,000 calls (reference
engine answering at once); RSS per held call <= 1.5x its buffered audio; cluster POST use >= 95 % of the limit
under skew, never above it. Issue 25: 1,000 concurrent 8 kHz two-track streams per ingress process.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import platform
import time

from bench import cluster_rate, fleet, ingest, ingress, latency, realtime, scaling
from bench.common import Table, kafka_bootstrap

BENCHES = ("ingest", "latency", "scaling", "cluster_rate", "fleet", "ingress", "realtime", "accuracy", "cost",
           "realtime_accuracy")
#: (full, quick) sizes of each bench
SIZES = {
    "ingest_calls": (60, 60), "ingest_seconds": (60.0, 30.0), "ingest_repeat": (2, 1),
    "latency_calls": ("100,500,1000", "100,1000"), "latency_seconds": (30.0, 12.0),
    "scaling_steps": ("500,1000,1500,2000,3000", "1000,1500,2000"), "scaling_step_seconds": (10.0, 6.0),
    "memory_calls": (100, 40),
    "fleet_calls": (30, 12),
    "ingress_streams": ("300,1000", "300"), "ingress_seconds": (30.0, 10.0),
    "realtime_calls": ("1,10,100", "1,10"), "realtime_seconds": (8.0, 4.0),
}


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f} (1/5 min) on {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated subset of {BENCHES}")
    parser.add_argument("--quick", action="store_true", help="a short check of every figure (smaller sizes)")
    for name, (full, _) in SIZES.items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(full), default=None)
    args = parser.parse_args()
    size = {name: getattr(args, name) if getattr(args, name) is not None else pair[1 if args.quick else 0]
            for name, pair in SIZES.items()}
    only = set(args.only.split(","))
    unknown = only - set(BENCHES)
    if unknown:
        parser.error(f"unknown bench(es) {sorted(unknown)}; choose from {BENCHES}")
    bootstrap = kafka_bootstrap()
    table = Table()
    started = time.monotonic()
    load_before = load()
    print(f"bench: {platform.python_implementation()} {platform.python_version()}, broker {bootstrap}, {load_before}"
          f"{', quick' if args.quick else ''}", flush=True)
    if "ingest" in only:
        ingest.run(table, bootstrap, size["ingest_calls"], size["ingest_seconds"],
                   frame_sizes=(20,) if args.quick else (20, 100), repeat=size["ingest_repeat"])
    if "latency" in only:
        latency.run(table, bootstrap, [int(x) for x in size["latency_calls"].split(",")], size["latency_seconds"],
                    wait_levels=() if args.quick else (100, 1000))
    if "scaling" in only:
        scaling.run(table, bootstrap, [int(x) for x in size["scaling_steps"].split(",")],
                    size["scaling_step_seconds"], size["memory_calls"])
    if "cluster_rate" in only:
        cluster_rate.run(table, bootstrap, quick=args.quick)
    if "fleet" in only:
        fleet.run(table, calls=size["fleet_calls"], per_call=6 if not args.quick else 3)
    if "ingress" in only:
        for streams in size["ingress_streams"].split(","):
            ingress.run(bootstrap, int(streams), size["ingress_seconds"], table)
    if "realtime" in only:
        realtime.run(table, bootstrap, [int(x) for x in size["realtime_calls"].split(",")], size["realtime_seconds"])
    for name in ("accuracy", "cost", "realtime_accuracy"):  # the whisper benches: only with the [worker] extra
        if name not in only:
            continue
        if importlib.util.find_spec("faster_whisper") is None:
            table.add(name, "-", "skipped", "-", "needs the [worker] extra (faster-whisper)")
        else:
            importlib.import_module(f"bench.{name}").run(table, bootstrap, quick=args.quick)
    minutes = (time.monotonic() - started) / 60
    print()
    print(f"bytewax-speechmatics benchmarks: one run, {minutes:.1f} min{', quick sizes' if args.quick else ''}; "
          f"{load_before} at start, {load()} at end")
    print(f"ingest: {size['ingest_calls']} calls x {size['ingest_seconds']:.0f} s, 16 kHz pcm_s16le mono, "
          "4 partitions, 30 s fixed chunks; throughput timed from the first to the last frame in each process")
    print(table.render())


if __name__ == "__main__":
    main()
