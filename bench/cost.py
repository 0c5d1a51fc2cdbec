"""What a call costs: audio sent to the API (billed seconds) against the call's speech, with and without silence
compaction (BWSM_SKIP_SILENCE), and what compaction does to the words.

Calls are built from the accuracy benchmark's real utterances (`connectors/cli/recordings.py`, human references)
with the non-speech of a contact-centre call:
- between turns a pause drawn from a log-normal distribution, median 0.8 s, sigma 0.9, cut to [0.2 s, 12 s]
  (fixed seed): mostly short gaps, now and then a long one (looking something up);
- one 60 s hold after the middle turn: digital silence, or music (a slow chord progression of sine tones with a
  little noise, at about -20 dBFS);
- a noise floor of faint noise (std 20 of 32768) wherever nobody speaks;
- mono (one party after another), or 2-channel agent/caller (turns alternate between the channels, each channel
  its own noise floor; the hold is on the agent's channel).

Each call goes through the real flow (`bytewax.run ...microbatch:flow`, one process) to the local worker's whisper
engine, for each chunk policy (`fixed`, `vad`; 30 s chunks) with compaction off and on. Per call and in total:
audio seconds, speech seconds (by webrtcvad, mode 2, 30 ms frames, speech on either channel; and by the
references' timing: the utterances' lengths), billed seconds (call_completed `counts.billed_seconds`), WER against
the human reference. Targets (issue 26): billed <= 1.15 x the speech seconds with compaction on, WER within 0.5
point of sending everything.

Alone: .venv/bin/python -m bench.cost [--quick] [--json FILE]   (`--quick`: two calls of 8 utterances each)
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bench.accuracy import normal_words, run_flow, stitched_words, wer
from bench.common import Table, kafka_bootstrap

RATE = 16000
CHUNK_SECONDS = 30.0
HOLD_SECONDS = 60.0
PAUSE_MEDIAN, PAUSE_SIGMA, PAUSE_MIN, PAUSE_MAX = 0.8, 0.9, 0.2, 12.0
NOISE_STD = 20.0
MAX_BILLED_RATIO = 1.15
MAX_WER_POINTS = 0.5
#: (name, channels, hold, seed, utterances: None = all)
CALLS = (("mono-silent-hold", 1, "silence", 11, None), ("mono-music-hold", 1, "music", 12, None),
         ("stereo-silent-hold", 2, "silence", 13, None), ("stereo-music-hold", 2, "music", 14, None))
QUICK_CALLS = (("mono-music-hold", 1, "music", 12, 8), ("stereo-silent-hold", 2, "silence", 13, 8))
RUNS = (("fixed", False), ("fixed", True), ("vad", False), ("vad", True))


@dataclass(frozen=True, slots=True)
class BuiltCall:
    """A call's audio (pcm_s16le, interleaved channels), its reference text and its utterances' total length."""

    name: str
    pcm: bytes
    channels: int
    reference: str
    speech_seconds: float

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / self.channels / RATE


def pauses(n: int, seed: int) -> list[float]:
    """Pauses between turns: log-normal, median PAUSE_MEDIAN s, cut to [PAUSE_MIN, PAUSE_MAX]."""
    rng = np.random.default_rng(seed)
    drawn = rng.lognormal(np.log(PAUSE_MEDIAN), PAUSE_SIGMA, n)
    return [float(x) for x in np.clip(drawn, PAUSE_MIN, PAUSE_MAX)]


def hold_audio(kind: str, seconds: float, seed: int) -> np.ndarray:
    """60 s of hold: digital silence, or music (chords of sine tones, a little noise)."""
    n = int(seconds * RATE)
    if kind == "silence":
        return np.zeros(n, dtype=np.float64)
    t = np.arange(n) / RATE
    chords = ((220.0, 277.2, 329.6), (196.0, 246.9, 293.7), (174.6, 220.0, 261.6), (196.0, 246.9, 311.1))
    out = np.zeros(n)
    step = 2 * RATE
    for i in range(0, n, step):
        notes = chords[(i // step) % len(chords)]
        seg = t[i : i + step]
        out[i : i + step] = sum(np.sin(2 * np.pi * f * seg) for f in notes) / len(notes)
    return out * 3000 + np.random.default_rng(seed).standard_normal(n) * 30


def build_call(name: str, channels: int, hold: str, seed: int, count: int | None) -> BuiltCall:
    """Utterances in a seeded order, turns alternating between the parties, pauses between them, one hold."""
    from bytewax.speechmatics.connectors.cli.recordings import pieces

    parts = list(pieces())
    random.Random(seed).shuffle(parts)
    parts = parts[:count] if count else parts
    gaps = pauses(len(parts), seed)
    tracks: list[list[np.ndarray]] = [[] for _ in range(channels)]
    noise = np.random.default_rng(seed + 1000)

    def add(channel: int | None, audio: np.ndarray) -> None:
        """`audio` on one channel (None: mono), faint noise on the others."""
        for c in range(channels):
            if channel is None or c == channel:
                tracks[c].append(audio.astype(np.float64) + noise.standard_normal(len(audio)) * NOISE_STD)
            else:
                tracks[c].append(noise.standard_normal(len(audio)) * NOISE_STD)

    for n, (piece, gap) in enumerate(zip(parts, gaps, strict=True)):
        add(None, np.zeros(int(gap * RATE)))
        add(n % 2 if channels == 2 else None, piece.audio)
        if n == len(parts) // 2:
            add(0 if channels == 2 else None, hold_audio(hold, HOLD_SECONDS, seed))
    add(None, np.zeros(int(PAUSE_MEDIAN * RATE)))
    audio = np.stack([np.concatenate(track) for track in tracks], axis=1)
    pcm = np.clip(np.round(audio), -32768, 32767).astype("<i2").tobytes()
    return BuiltCall(name, pcm, channels, " ".join(p.text for p in parts), sum(len(p.audio) for p in parts) / RATE)


def vad_speech_seconds(call: BuiltCall) -> float:
    """Seconds webrtcvad calls speech (mode 2, 30 ms frames, either channel), as compaction judges it."""
    from bytewax.speechmatics.flows.submitter import COMPACTION_VAD_FRAME_MS, COMPACTION_VAD_MODE
    from bytewax.speechmatics.flows.vad import speech_frames

    flags = speech_frames(call.pcm, RATE, "pcm_s16le", call.channels, COMPACTION_VAD_MODE, COMPACTION_VAD_FRAME_MS)
    return sum(flags) * COMPACTION_VAD_FRAME_MS / 1000


@dataclass
class RunResult:
    policy: str
    compaction: bool
    billed_seconds: float
    wer: float
    chunks: int


@dataclass
class CallCost:
    name: str
    channels: int
    audio_seconds: float
    speech_vad: float
    speech_reference: float
    runs: list[RunResult] = field(default_factory=list)


def measure(bootstrap: str, calls: Sequence[tuple], progress: Callable[[str], None] = print) -> list[CallCost]:
    """Every call through the flow for each (policy, compaction) run."""
    from bytewax.speechmatics.connectors.worker.control import start_worker

    built = [build_call(*spec) for spec in calls]
    results = [CallCost(c.name, c.channels, round(c.seconds, 2), round(vad_speech_seconds(c), 2),
                        round(c.speech_seconds, 2)) for c in built]
    log_dir = Path(tempfile.mkdtemp(prefix="bench-cost-"))
    worker = start_worker(engine="whisper", parallel=1)
    try:
        for policy, compaction in RUNS:
            started = time.monotonic()
            settings = {"BWSM_CHUNK_POLICY": policy, "BWSM_CHUNK_SECONDS": str(CHUNK_SECONDS),
                        "BWSM_SKIP_SILENCE": "1" if compaction else "0"}
            by_call = run_flow(bootstrap, worker.url, built, settings, log_dir, deadline_s=5400)
            progress(f"  flow {policy} compaction {'on' if compaction else 'off'}: {time.monotonic() - started:.0f} s")
            for call, result in zip(built, results, strict=True):
                events = by_call[call.name]
                done = next(e for e in events if e["type"] == "call_completed")
                words = normal_words(stitched_words(events))
                result.runs.append(RunResult(policy, compaction, done["counts"]["billed_seconds"],
                                             round(wer(call.reference, words), 4), done["counts"]["chunks"]))
        return results
    finally:
        worker.stop()


def _total(results: Sequence[CallCost], policy: str, compaction: bool) -> tuple[float, float]:
    """(billed seconds, mean WER) over the calls of one run."""
    runs = [next(r for r in c.runs if (r.policy, r.compaction) == (policy, compaction)) for c in results]
    return sum(r.billed_seconds for r in runs), sum(r.wer for r in runs) / len(runs)


def record(table: Table, results: Sequence[CallCost]) -> None:
    for c in results:
        table.add("cost", c.name, "audio / speech (VAD, reference)",
                  f"{c.audio_seconds:.1f} s / {c.speech_vad:.1f} s, {c.speech_reference:.1f} s",
                  f"{c.channels} ch")
        for r in c.runs:
            table.add("cost", f"{c.name} {r.policy} compaction {'on' if r.compaction else 'off'}",
                      "billed, x VAD speech, WER",
                      f"{r.billed_seconds:.1f} s, {r.billed_seconds / c.speech_vad:.2f}x, {100 * r.wer:.1f}%",
                      f"{r.chunks} chunks; x reference speech {r.billed_seconds / c.speech_reference:.2f}")
    audio = sum(c.audio_seconds for c in results)
    vad = sum(c.speech_vad for c in results)
    ref = sum(c.speech_reference for c in results)
    table.add("cost", "total", "audio / speech (VAD, reference)", f"{audio:.1f} s / {vad:.1f} s, {ref:.1f} s")
    for policy in ("fixed", "vad"):
        off_billed, off_wer = _total(results, policy, False)
        on_billed, on_wer = _total(results, policy, True)
        table.add("cost", f"total {policy}", "billed off -> on",
                  f"{off_billed:.1f} s -> {on_billed:.1f} s ({on_billed / vad:.2f}x VAD speech, "
                  f"{on_billed / ref:.2f}x reference speech)", f"saves {100 * (1 - on_billed / off_billed):.0f}%")
        table.add("cost", f"total {policy}", "mean WER off -> on",
                  f"{100 * off_wer:.1f}% -> {100 * on_wer:.1f}% ({100 * (on_wer - off_wer):+.1f} pt)")
        if on_billed > MAX_BILLED_RATIO * vad:
            table.add("cost", "target missed", "!", f"{policy}: billed {on_billed / vad:.2f}x VAD speech")
        if (on_wer - off_wer) * 100 > MAX_WER_POINTS:
            table.add("cost", "target missed", "!", f"{policy}: WER {100 * (on_wer - off_wer):+.1f} pt")


def run(table: Table, bootstrap: str, quick: bool = False) -> list[CallCost]:
    """The cost rows (shape of bench.accuracy.run): `quick` = two shorter calls."""
    results = measure(bootstrap, QUICK_CALLS if quick else CALLS)
    record(table, results)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two calls of 8 utterances each")
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args(argv)
    table = Table()
    results = run(table, kafka_bootstrap(), args.quick)
    print(table.render())
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))


if __name__ == "__main__":
    main()
