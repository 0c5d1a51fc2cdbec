"""`make bench`: every benchmark in one run, then ONE table with all the figures that run measured.

Each bench is also runnable alone (`python -m bench.ingest`, `bench.baseline`, `bench.latency`, `bench.scaling`,
`bench.profile_ingest`). The broker is KAFKA_BOOTSTRAP_SERVERS, else the project's local broker (started if
needed). Options narrow the run: `python -m bench --only ingest,latency --latency-calls 100`.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from bench import ingest, latency, scaling
from bench.common import Table, kafka_bootstrap

BENCHES = ("ingest", "latency", "scaling")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f} (1/5 min) on {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated subset of {BENCHES}")
    parser.add_argument("--ingest-calls", type=int, default=60)
    parser.add_argument("--ingest-seconds", type=float, default=60.0)
    parser.add_argument("--latency-calls", default="100,500,1000")
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument("--scaling-steps", default="250,500,1000,2000,3000,4000")
    parser.add_argument("--scaling-step-seconds", type=float, default=10.0)
    args = parser.parse_args()
    only = set(args.only.split(","))
    unknown = only - set(BENCHES)
    if unknown:
        parser.error(f"unknown bench(es) {sorted(unknown)}; choose from {BENCHES}")
    bootstrap = kafka_bootstrap()
    table = Table()
    started = time.monotonic()
    load_before = load()
    print(f"bench: {platform.python_implementation()} {platform.python_version()}, broker {bootstrap}, {load_before}",
          flush=True)
    if "ingest" in only:
        ingest.run(table, bootstrap, args.ingest_calls, args.ingest_seconds)
    if "latency" in only:
        latency.run(table, bootstrap, [int(x) for x in args.latency_calls.split(",")], args.latency_seconds)
    if "scaling" in only:
        scaling.run(table, bootstrap, [int(x) for x in args.scaling_steps.split(",")], args.scaling_step_seconds)
    minutes = (time.monotonic() - started) / 60
    print()
    print(f"bytewax-speechmatics benchmarks: one run, {minutes:.1f} min; {load_before} at start, {load()} at end")
    print(f"ingest: {args.ingest_calls} calls x {args.ingest_seconds:.0f} s, 16 kHz pcm_s16le mono, 4 partitions, "
          "30 s fixed chunks; throughput timed from the first to the last frame in each process")
    print(table.render())


if __name__ == "__main__":
    main()
