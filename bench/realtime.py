"""Real-time figures: first final word latency from the audio's publish time, and sessions one bridge sustains.

`python -m bench.realtime [--calls 1,10,100] [--seconds 8]`: for each level, N calls with known truth (reference
engine in a local worker, its real-time endpoint) are published at real-time speed, all at once, 20 ms frames
(`--frame-ms`); one
bridge process (`bytewax-speechmatics realtime`, BWSM_RT_MAX_SESSIONS = N) streams them. Per call, the latency is
the Kafka timestamp of its first `AddTranscript` on the real-time topic minus the Kafka timestamp of the audio frame
holding the end of that message's last word (the moment the word's audio was published). Also reported: calls that
completed, the bridge's CPU seconds per audio second, the bridge's and the worker's cores in use, and the peak open
sessions (`bwsm_rt_sessions_open`, sampled).
Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import orjson

from bench.chunker_bench import kafka_bootstrap
from bench.common import Table, consume, create_topic, delete_topics, free_port, percentiles, proc_cpu_seconds
from bytewax.speechmatics.connectors.cli.publish import CallAudio, publish_calls
from bytewax.speechmatics.connectors.worker.control import start_worker


def synthetic(seconds: float, seed: int) -> tuple[bytes, list[dict]]:
    """Noise (unique everywhere) after 1 s of silence; a 0.4 s word every 0.5 s."""
    import numpy as np

    rng = np.random.default_rng(seed)
    audio = rng.integers(-8000, 8000, int(seconds * 16000)).astype("<i2")
    audio[:16000] = 0
    words, t, n = [], 1.0, 0
    while t + 0.4 <= seconds:
        words.append({"text": f"w{n}", "start_time": round(t, 3), "end_time": round(t + 0.4, 3)})
        t, n = t + 0.5, n + 1
    return audio.tobytes(), words


def _read(bootstrap: str, topic: str, until, deadline_s: float) -> list:
    """The messages of `topic` until `until(messages)` holds or the deadline passes."""
    out: list = []
    for msg in consume(bootstrap, topic, deadline_s):
        out.append(msg)
        if until(out):
            break
    return out


def level(bootstrap: str, worker, calls: int, seconds: float, frame_ms: int = 20) -> dict:
    frame_s = frame_ms / 1000
    audio_topic, rt_topic = create_topic(bootstrap, "rt-audio", 4), create_topic(bootstrap, "rt-out", 4)
    prefix = uuid.uuid4().hex[:6]
    published = []
    for i in range(calls):
        audio, words = synthetic(seconds, 1000 + i)
        call_id = f"{prefix}-{i}"
        worker.admin.register_call(call_id, audio, words)
        published.append(CallAudio(call_id, audio, 16000, 1))
    metrics_port = free_port()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "BWSM_AUDIO_TOPIC": audio_topic,
           "BWSM_RT_TOPIC": rt_topic, "SPEECHMATICS_RT_URL": worker.base.replace("http://", "ws://") + "/v2",
           "SPEECHMATICS_API_KEY": "bench", "BWSM_RT_GROUP": f"bench-{prefix}",
           "BWSM_RT_MAX_SESSIONS": str(max(calls, 1)), "BWSM_RT_START_RATE": "200", "PYTHONUNBUFFERED": "1"}
    log = open(f"/tmp/bench-realtime-{prefix}.log", "ab")  # noqa: SIM115 - the child's log
    bridge = subprocess.Popen([sys.executable, "-m", "bytewax.speechmatics.connectors.cli", "realtime",
                               "--metrics-port", str(metrics_port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    peak = 0
    stop = threading.Event()

    def sample_open() -> None:
        nonlocal peak
        while not stop.wait(0.25):
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).read().decode()
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("bwsm_rt_sessions_open "):
                    peak = max(peak, int(float(line.split()[1])))

    sampler = threading.Thread(target=sample_open, daemon=True)
    sampler.start()
    try:
        deadline = time.monotonic() + 60
        while b"bridge assigned partitions" not in Path(log.name).read_bytes():
            if time.monotonic() > deadline or bridge.poll() is not None:
                raise RuntimeError(f"bridge did not start; see {log.name}")
            time.sleep(0.05)
        cpu0, wcpu0, t0 = proc_cpu_seconds(bridge.pid), proc_cpu_seconds(worker.pid), time.monotonic()
        publish_calls(published, audio_topic, frame_ms=frame_ms, speed=1.0,
                      producer_config={"bootstrap.servers": bootstrap})

        def all_done(msgs: list) -> bool:
            ends = {m.key() for m in msgs if b'"EndOfTranscript"' in m.value()}
            return len(ends) >= calls

        rt = _read(bootstrap, rt_topic, all_done, seconds + 120)
        cpu = proc_cpu_seconds(bridge.pid) - cpu0
        wcpu, wall = proc_cpu_seconds(worker.pid) - wcpu0, time.monotonic() - t0
    finally:
        stop.set()
        bridge.terminate()
        bridge.wait(30)
    frames = _read(bootstrap, audio_topic, lambda m: len(m) >= calls * math.ceil(seconds / frame_s), 60)
    published_at = {(m.key(), int(dict(m.headers())["seq"])): m.timestamp()[1] / 1000 for m in frames}
    latencies, completed, seen = [], set(), set()
    for m in rt:
        doc = orjson.loads(m.value())
        if doc["message"] == "EndOfTranscript":
            completed.add(m.key())
        if doc["message"] != "AddTranscript" or m.key() in seen or not doc["results"]:
            continue
        seen.add(m.key())
        offset = float(dict(m.headers()).get("rt_offset", b"0"))
        end = max(r["end_time"] for r in doc["results"]) + offset
        seq = max(0, math.ceil(round(end / frame_s, 6)) - 1)
        latencies.append(m.timestamp()[1] / 1000 - published_at[(m.key(), seq)])
    delete_topics(bootstrap, [audio_topic, rt_topic])
    p50, p95, _ = percentiles(latencies)
    return {"calls": calls, "frame_ms": frame_ms, "completed": len(completed), "first_final_p50_s": round(p50, 3),
            "first_final_p95_s": round(p95, 3), "peak_sessions_open": peak,
            "bridge_cpu_s_per_audio_s": round(cpu / (calls * seconds), 4),
            "bridge_cores": round(cpu / wall, 2), "worker_cores": round(wcpu / wall, 2), "wall_s": round(wall, 1)}


def levels(bootstrap: str, calls: list[int], seconds: float, frame_ms: int = 20) -> list[dict]:
    """`level` at each number of calls, against one reference worker."""
    with start_worker(engine="reference", parallel=1) as worker:
        return [level(bootstrap, worker, n, seconds, frame_ms) for n in calls]


def run(table: Table, bootstrap: str, calls: list[int], seconds: float, frame_ms: int = 20) -> None:
    """The rows of `make bench`."""
    for r in levels(bootstrap, calls, seconds, frame_ms):
        case = f"{r['calls']} calls, {frame_ms} ms frames"
        table.add("realtime", case, "first final p50/p95 s", f"{r['first_final_p50_s']}/{r['first_final_p95_s']}",
                  f"{r['completed']}/{r['calls']} sessions completed, peak {r['peak_sessions_open']} open; reference "
                  f"engine; audio's frame published -> its first final on the rt topic")
        table.add("realtime", case, "bridge cpu per audio s", f"{r['bridge_cpu_s_per_audio_s']}",
                  f"bridge {r['bridge_cores']} cores, worker {r['worker_cores']} cores over {r['wall_s']} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="1,10,100")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--frame-ms", type=int, default=20)
    args = parser.parse_args()
    rows = levels(kafka_bootstrap(), [int(n) for n in args.calls.split(",")], args.seconds, args.frame_ms)
    print(f"{'calls':>6} {'completed':>9} {'p50 s':>7} {'p95 s':>7} {'peak open':>9} {'bridge cpu/audio s':>18} "
          f"{'bridge cores':>12} {'worker cores':>12}")
    for r in rows:
        print(f"{r['calls']:>6} {r['completed']:>9} {r['first_final_p50_s']:>7} {r['first_final_p95_s']:>7} "
              f"{r['peak_sessions_open']:>9} {r['bridge_cpu_s_per_audio_s']:>18} {r['bridge_cores']:>12} "
              f"{r['worker_cores']:>12}")
    print(orjson.dumps(rows).decode())


if __name__ == "__main__":
    main()
