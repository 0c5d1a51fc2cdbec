"""Whisper engine of the local worker: WER and real-time factor on the pyannote sample, through the SDK.

    .venv/bin/python bench/worker_rtf.py [--parallel 1 2] [--jobs 4]

For each --parallel value it starts a worker, submits `--jobs` copies of the 30 s sample at once (a job
refused with 503 "Server busy" is resubmitted after a short pause, as a client of the on-prem worker
must), and prints: WER of each transcript against sample.stm, per-job latency percentiles, the
aggregate real-time factor (wall time / audio time; below 1 is faster than real time), the engine
time per job, and the resident memory of the worker and its engine processes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path

import jiwer
import soundfile
from speechmatics.batch import AsyncClient, BatchError

from bytewax.speechmatics.connectors.cli.sample_audio import normalise_for_wer, pyannote_sample, stm_text
from bytewax.speechmatics.connectors.worker.control import start_worker


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (Linux /proc), in MiB."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


async def one_job(client: AsyncClient, wav: str) -> tuple[float, object]:
    started = time.perf_counter()
    while True:
        try:
            job = await client.submit_job(wav)
            break
        except BatchError as exc:
            if getattr(exc.__cause__, "status_code", None) != 503:
                raise
            await asyncio.sleep(0.2)
    transcript = await client.wait_for_completion(job.id, polling_interval=0.5, min_polling_interval=0.1)
    return time.perf_counter() - started, transcript


async def run(parallel: int, jobs: int) -> None:
    sample = pyannote_sample()
    duration = soundfile.info(str(sample.wav)).duration
    reference = normalise_for_wer(stm_text(sample.stm))
    t0 = time.perf_counter()
    worker = start_worker(engine="whisper", parallel=parallel, ready_timeout=300)
    startup = time.perf_counter() - t0
    try:
        async with AsyncClient(api_key="unused", url=worker.url) as client:
            await one_job(client, str(sample.wav))  # warm-up: first inference per process is slower
            worker.admin.reset()
            t1 = time.perf_counter()
            results = await asyncio.gather(*(one_job(client, str(sample.wav)) for _ in range(jobs)))
            wall = time.perf_counter() - t1
        memory = rss_mb(worker.pid)
        runs = worker.admin.stats()["engine_runs"].values()
    finally:
        worker.stop()
    latencies = sorted(lat for lat, _ in results)
    wers = []
    for _, transcript in results:
        words = [r.alternatives[0].content for r in transcript.results if r.type == "word"]
        wers.append(jiwer.wer(reference, normalise_for_wer(" ".join(words))))
    engine = [r["finished"] - r["started"] for r in runs]
    print(f"parallel={parallel} jobs={jobs} audio={duration:.1f}s each, startup {startup:.1f}s, "
          f"threads/engine={os.environ.get('BWSM_WHISPER_THREADS', 'cores/parallel')}")
    print(f"  WER: {', '.join(f'{w:.3f}' for w in wers)}")
    print(f"  latency s: p50 {statistics.median(latencies):.2f}  max {latencies[-1]:.2f}")
    print(f"  engine s/job: mean {statistics.mean(engine):.2f} -> per-job RTF {statistics.mean(engine) / duration:.3f}")
    print(f"  aggregate RTF (wall / audio): {wall / (jobs * duration):.3f}  ({jobs * duration / wall:.1f}x real time)")
    print(f"  RSS worker+engines: {memory:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--jobs", type=int, default=4)
    args = parser.parse_args()
    for parallel in args.parallel:
        asyncio.run(run(parallel, args.jobs))


if __name__ == "__main__":
    main()
