"""Profile one ingest process (pyinstrument, wall clock) on pre-produced frames; print where the time goes.

Alone: .venv/bin/python -m bench.profile_ingest [--calls 60 --seconds 60 --frame-ms 20 --out /tmp/ingest.prof.txt]
"""

from __future__ import annotations

import argparse

from bench.common import delete_topics, kafka_bootstrap
from bench.ingest import prepare, run_processes


def profile(bootstrap: str, calls: int, seconds: float, frame_ms: int, out: str) -> dict:
    """Run the ingest dataflow once under pyinstrument; the text profile goes to `out`, the figures are returned."""
    topic, _, _ = prepare(bootstrap, calls, seconds, frame_ms)
    try:
        return run_processes(bootstrap, topic, 1, profile=out)[0]
    finally:
        delete_topics(bootstrap, [topic])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--frame-ms", type=int, default=20)
    parser.add_argument("--out", default="/tmp/bench-ingest-profile.txt")
    args = parser.parse_args()
    result = profile(kafka_bootstrap(), args.calls, args.seconds, args.frame_ms, args.out)
    print(f"{result['frames'] / result['seconds']:,.0f} frames/s under the profiler; profile in {args.out}")
    with open(args.out) as f:
        print(f.read())


if __name__ == "__main__":
    main()
