"""Speaker diarization of the whisper engine: word-level accuracy, label stability across chunks, real-time factor.

    .venv/bin/python -m bench.diarization [--threads 2] [--chunk-seconds 30]

Runs the engine's own job function (engines/whisper.py `transcribe_audio`, the code a worker process runs) in this
process, and prints:
- pyannote: the pyannote.audio sample (30 s, two speakers, RTTM reference), one job with `diarization: speaker`;
  word-level speaker accuracy under the best label mapping (a word's reference speaker is the RTTM turn holding its
  midpoint, either speaker where both talk, the nearest turn where none does).
- two-speaker call: a call of real recordings of two people taking turns (`recordings.two_voice_call`: the
  Montreal Forced Aligner corpus's speaker, their three long recordings cut at pauses into turns of about 8 s, and
  the LibriVox reader of pocketsphinx-testdata, whose five utterances are each used three times, in other orders,
  for a longer call), cut into chunks of --chunk-seconds
  with 1 s overlap, transcribed one after another with speaker identification chained by the flow's own
  SpeakerBook (flows/speakers.py), exactly as the flow's submitter chains a call's jobs. Each word is counted once
  (in the chunk where it starts after the overlap). Reported: the share of each person's words under that person's
  most frequent label, and the accuracy under the best one-to-one mapping of labels to people.
- the real-time factor (engine time / audio time) of each, with and without diarization, on --threads threads.
"""

from __future__ import annotations

import argparse
import io
import itertools
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from bytewax.speechmatics.connectors.cli.recordings import cache_dir, two_voice_call
from bytewax.speechmatics.connectors.cli.sample_audio import pyannote_sample
from bytewax.speechmatics.connectors.worker.engines import whisper
from bytewax.speechmatics.connectors.worker.engines.diarize import diarize
from bytewax.speechmatics.connectors.worker.engines.voice_encoder import fetch_encoder
from bytewax.speechmatics.flows.speakers import SpeakerBook, speaker_config
from bytewax.speechmatics.schemas.chunks import ChunkSpan

RATE = 16000


def load_engine(cache_dir: Path, threads: int) -> None:
    """The whisper model and the speaker encoder, loaded into this process as a worker's engine process does."""
    model = whisper.resolve_model(whisper.WhisperConfig(cache_dir=cache_dir))
    whisper._load(model, threads, threading.Barrier(1), str(fetch_encoder(cache_dir)))  # noqa: SLF001


def wav_bytes(audio: np.ndarray) -> bytes:
    out = io.BytesIO()
    soundfile.write(out, audio, RATE, format="WAV", subtype="PCM_16")
    return out.getvalue()


def run_job(audio: np.ndarray, sdc: dict[str, Any] | None, diarize: bool = True) -> tuple[dict[str, Any], float]:
    """(transcript, engine seconds) of one job."""
    tc: dict[str, Any] = {"language": "en"}
    if diarize:
        tc["diarization"] = "speaker"
        tc["speaker_diarization_config"] = sdc or {}
    started = time.perf_counter()
    transcript = whisper.transcribe_audio(wav_bytes(audio), tc)
    return transcript, time.perf_counter() - started


def best_mapping_accuracy(labels: list[str], truths: list[set[str]]) -> float:
    """Share of words whose label maps to one of their reference speakers, under the best one-to-one mapping."""
    found = sorted(set(labels))
    people = sorted(set().union(*truths)) if truths else []
    best = 0.0
    for chosen in itertools.permutations(people, min(len(people), len(found))):
        for order in itertools.permutations(found, len(chosen)):
            mapping = dict(zip(order, chosen, strict=True))
            best = max(best, float(np.mean([mapping.get(lab) in t for lab, t in zip(labels, truths, strict=True)])))
    return best


def rttm_turns(path: Path) -> list[tuple[float, float, str]]:
    turns = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            turns.append((float(fields[3]), float(fields[3]) + float(fields[4]), fields[7]))
    return turns


def reference_speakers(turns: list[tuple[float, float, str]], t: float) -> set[str]:
    inside = {who for start, end, who in turns if start <= t < end}
    if inside:
        return inside
    return {min(turns, key=lambda turn: min(abs(turn[0] - t), abs(turn[1] - t)))[2]}


def words_of(transcript: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in transcript["results"] if r["type"] == "word"]


def diarization_seconds(audio: np.ndarray, words: list[dict[str, Any]], repeats: int = 3) -> float:
    """The fastest of `repeats` runs of the diarizer alone over a transcript's words (the engine's added work)."""
    spans = [(w["start_time"], w["end_time"]) for w in words]
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        diarize(whisper._ENCODER, audio, spans, {})  # noqa: SLF001
        best = min(best, time.perf_counter() - started)
    return best


def pyannote_accuracy() -> tuple[float, int, float, float]:
    """(accuracy, words, engine seconds with diarization, without) on the pyannote sample."""
    sample = pyannote_sample()
    audio, _ = soundfile.read(str(sample.wav), dtype="float32")
    transcript, seconds = run_job(audio, {})
    _, plain = run_job(audio, None, diarize=False)
    turns = rttm_turns(sample.rttm)
    words = words_of(transcript)
    print(f"pyannote: the diarizer alone takes {diarization_seconds(audio, words):.2f} s for the 30 s call "
          "(fastest of 3)")
    labels = [w["alternatives"][0]["speaker"] for w in words]
    truths = [reference_speakers(turns, (w["start_time"] + w["end_time"]) / 2) for w in words]
    return best_mapping_accuracy(labels, truths), len(words), seconds, plain


def chained_call(audio: np.ndarray, chunk_s: float, overlap_s: float = 1.0) -> tuple[list[tuple[float, str]], float]:
    """([(call time of a word's midpoint, call label)], engine seconds) of a call cut into chained jobs."""
    book = SpeakerBook()
    step = int((chunk_s - overlap_s) * RATE)
    out: list[tuple[float, str]] = []
    seconds = 0.0
    start, index = 0, 0
    while start < len(audio):
        end = min(len(audio), start + int(chunk_s * RATE))
        overlap = 0 if index == 0 else int(overlap_s * RATE)
        span = ChunkSpan("bench", index, start, end, overlap, RATE, "pcm_s16le", 1)
        transcript, took = run_job(audio[start:end].astype(np.float32) / 32768, speaker_config(book))
        seconds += took
        relabelled = book.relabel(span, transcript)
        for w in words_of(relabelled):
            if w["start_time"] >= overlap / RATE:  # each word once: where it starts after the overlap
                out.append((start / RATE + (w["start_time"] + w["end_time"]) / 2, w["alternatives"][0]["speaker"]))
        if end == len(audio):
            break
        start, index = start + step, index + 1
    return out, seconds


def call_stability(chunk_s: float) -> dict[str, Any]:
    audio, spans = two_voice_call(reader_passes=3)
    words, seconds = chained_call(audio, chunk_s)
    turns = [(s, e, who) for s, e, who in spans]
    truths = [reference_speakers(turns, t) for t, _ in words]
    labels = [label for _, label in words]
    per_person = {}
    for person in ("A", "B"):
        mine = [lab for lab, t in zip(labels, truths, strict=True) if t == {person}]
        top = Counter(mine).most_common(1)
        per_person[person] = (top[0][0], top[0][1] / len(mine), len(mine)) if mine else (None, 0.0, 0)
    return {"seconds_audio": len(audio) / RATE, "words": len(words), "labels": sorted(set(labels)),
            "per_person": per_person, "best_mapping": best_mapping_accuracy(labels, truths),
            "engine_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=("pyannote", "call"), help="run one of the two measurements")
    parser.add_argument("--chunk-seconds", type=float, default=30.0)
    parser.add_argument("--cache-dir", default=str(cache_dir().parent))
    args = parser.parse_args()
    load_engine(Path(args.cache_dir), args.threads)
    if args.only != "call":
        accuracy, count, with_d, without = pyannote_accuracy()
        print(f"pyannote: {count} words, speaker accuracy (best mapping) {accuracy:.3f}; engine RTF "
              f"{with_d / 30:.3f}x with diarization, {without / 30:.3f}x without ({args.threads} threads)")
    if args.only == "pyannote":
        return
    call = call_stability(args.chunk_seconds)
    print(f"two-speaker call: {call['seconds_audio']:.0f} s, {call['words']} words in "
          f"{args.chunk_seconds:.0f} s chunks, labels {call['labels']}")
    for person, (label, share, n) in call["per_person"].items():
        print(f"  person {person}: {n} words, {share:.3f} under its most frequent label {label}")
    print(f"  best-mapping accuracy {call['best_mapping']:.3f}; engine RTF with diarization "
          f"{call['engine_seconds'] / call['seconds_audio']:.3f}x")


if __name__ == "__main__":
    main()
