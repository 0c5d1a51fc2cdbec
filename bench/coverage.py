"""No dropped speech: does any chunk's transcript cover much less of its voiced audio than the whole file's does?

    .venv/bin/python -m bench.coverage [--threads 2] [--chunk-seconds 30] [--overlap 2] [--calls pyannote mix-a mix-b]

For each benchmark recording (bench.accuracy's calls), the whisper model transcribes the whole file once and then
fixed chunks (--chunk-seconds, --overlap: the setting where the seam benchmark saw a chunk come back with 9 words
for 30 s of speech), each chunk twice: as whisper returns it (`raw`) and as the engine returns it (`engine`: with
the second pass of engines/coverage.py over voiced audio left without words). A chunk's coverage is the voiced audio
of its span (webrtcvad, engines/voiced.py) that its words reach (each word widened by WORD_REACH_S); the whole
file's coverage is measured over the same span. A chunk is flagged when its coverage is below MIN_RATIO of the
whole file's and the difference is more than MIN_LOST_S seconds. Prints one row per flagged chunk and a summary.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from bench.diarization import load_engine
from bytewax.speechmatics.connectors.cli.recordings import CALLS, cache_dir, recording
from bytewax.speechmatics.connectors.worker.engines import whisper
from bytewax.speechmatics.connectors.worker.engines.coverage import WORD_REACH_S, fill_gaps
from bytewax.speechmatics.connectors.worker.engines.voiced import voiced_spans

RATE = 16000
MIN_RATIO = 0.8
MIN_LOST_S = 2.0


def recognise(audio: np.ndarray) -> list[tuple[str, float, float, float]]:
    """Whisper's words, as the engine's first pass gets them."""
    segments, _ = whisper._MODEL.transcribe(audio, language="en", beam_size=1, word_timestamps=True)  # noqa: SLF001
    return [(w.word, w.start, w.end, w.probability) for seg in segments for w in (seg.words or [])]


def covered(voiced: list[tuple[float, float]], words: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Seconds of `voiced` inside [lo, hi) that the words (widened by WORD_REACH_S) reach."""
    grid = np.zeros(int(round((hi - lo) * 100)), dtype=bool)  # 10 ms cells
    speech = np.zeros_like(grid)
    for a, b in voiced:
        speech[max(0, int((a - lo) * 100)): max(0, int((b - lo) * 100))] = True
    for a, b in words:
        grid[max(0, int((a - WORD_REACH_S - lo) * 100)): max(0, int((b + WORD_REACH_S - lo) * 100))] = True
    return float((grid & speech).sum()) / 100


def check_call(name: str, chunk_s: float, overlap_s: float) -> list[dict[str, Any]]:
    audio = np.frombuffer(recording(name).pcm, dtype="<i2").astype(np.float32) / 32768
    voiced = voiced_spans(audio, RATE)
    whole = [(s, e) for _, s, e, _ in recognise(audio)]
    rows = []
    start, index = 0, 0
    step = int((chunk_s - overlap_s) * RATE)
    while True:
        end = min(len(audio), start + int(chunk_s * RATE))
        lo, hi = start / RATE, end / RATE
        clip = audio[start:end]
        raw = recognise(clip)
        engine = fill_gaps(recognise, clip, raw, RATE)
        speech = covered(voiced, [(lo, hi)], lo, hi)
        row = {"call": name, "chunk": index, "start": lo, "speech": speech,
               "whole": covered(voiced, whole, lo, hi)}
        for kind, words in (("raw", raw), ("engine", engine)):
            row[kind] = covered(voiced, [(s + lo, e + lo) for _, s, e, _ in words], lo, hi)
            row[f"{kind}_words"] = len(words)
        rows.append(row)
        if end == len(audio):
            return rows
        start, index = start + step, index + 1


def flagged(row: dict[str, Any], kind: str) -> bool:
    return row[kind] < MIN_RATIO * row["whole"] and row["whole"] - row[kind] > MIN_LOST_S


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk-seconds", type=float, default=30.0)
    parser.add_argument("--overlap", type=float, default=2.0)
    parser.add_argument("--calls", nargs="+", default=list(CALLS), choices=CALLS)
    args = parser.parse_args()
    load_engine(Path(cache_dir().parent), args.threads)
    rows = [row for name in args.calls for row in check_call(name, args.chunk_seconds, args.overlap)]
    for row in rows:
        if flagged(row, "raw") or flagged(row, "engine"):
            print(f"{row['call']} chunk {row['chunk']} at {row['start']:.0f} s: voiced {row['speech']:.1f} s, "
                  f"covered by the whole file {row['whole']:.1f} s, by the chunk as whisper returns it "
                  f"{row['raw']:.1f} s ({row['raw_words']} words), as the engine returns it {row['engine']:.1f} s "
                  f"({row['engine_words']} words)")
    for kind in ("raw", "engine"):
        bad = sum(flagged(row, kind) for row in rows)
        ratios = [row[kind] / row["whole"] for row in rows if row["whole"] > 0]
        print(f"{kind}: {bad} of {len(rows)} chunks cover less than {MIN_RATIO:.0%} of what the whole file covers "
              f"(and {MIN_LOST_S:.0f}+ s less); lowest ratio {min(ratios):.2f}; voiced audio covered "
              f"{sum(r[kind] for r in rows):.0f} s against the whole file's {sum(r['whole'] for r in rows):.0f} s")


if __name__ == "__main__":
    main()
