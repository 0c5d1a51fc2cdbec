"""The pyannote sample call (30 s, 16 kHz mono, two speakers) with its reference transcript, for WER and demos.

It ships inside the `pyannote.audio` wheel; we fetch the wheel with `pip download --no-deps` (never
installing it) and extract sample.wav, sample.stm and sample.rttm into BWSM_CACHE_DIR once.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

PYANNOTE_VERSION = "4.0.7"
_MEMBERS = ("sample.wav", "sample.stm", "sample.rttm")


@dataclass(frozen=True, slots=True)
class SamplePaths:
    wav: Path
    stm: Path
    rttm: Path


def _cache() -> Path:
    base = Path(os.environ.get("BWSM_CACHE_DIR") or Path.home() / ".cache" / "bytewax-speechmatics")
    return base / f"pyannote-sample-{PYANNOTE_VERSION}"


def pyannote_sample() -> SamplePaths:
    """Paths of the sample's wav/stm/rttm, downloading the wheel on first use (needs a package index)."""
    target = _cache()
    paths = SamplePaths(*(target / name for name in _MEMBERS))
    if all(p.exists() for p in (paths.wav, paths.stm, paths.rttm)):
        return paths
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               f"pyannote.audio=={PYANNOTE_VERSION}", "-d", tmp]
        subprocess.run(cmd, check=True, timeout=600)
        wheel = next(Path(tmp).glob("pyannote_audio-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            for name in _MEMBERS:
                staged = Path(tmp) / name
                staged.write_bytes(zf.read(f"pyannote/audio/sample/{name}"))
                os.replace(staged, target / name)
    return paths


def stm_text(path: Path) -> str:
    """The reference words of an STM file (fields: file channel speaker start end [<label>] text...)."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith(";;"):
            continue
        fields = line.split(maxsplit=5)
        text = fields[5] if len(fields) > 5 else ""
        lines.append(re.sub(r"^<[^>]*>\s*", "", text))
    return " ".join(lines)


def normalise_for_wer(text: str) -> str:
    """Lower-case, punctuation stripped (apostrophes inside words kept), single spaces."""
    text = re.sub(r"[^\w\s']|(?<!\w)'|'(?!\w)", " ", text.lower())
    return " ".join(text.split())


def stereo_by_speaker(wav: Path, rttm: Path) -> tuple[bytes, int]:
    """The two-speaker sample as an agent/caller recording: interleaved 2-channel pcm_s16le, channel n carrying the
    audio of the n-th speaker's RTTM turns (where both speak, both channels do), silence elsewhere; and the rate."""
    import numpy as np
    import soundfile

    mono, rate = soundfile.read(str(wav), dtype="int16")
    turns: dict[str, list[tuple[float, float]]] = {}
    for line in rttm.read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            start, length = float(fields[3]), float(fields[4])
            turns.setdefault(fields[7], []).append((start, start + length))
    if len(turns) != 2:
        raise ValueError(f"{rttm}: expected two speakers, found {sorted(turns)}")
    stereo = np.zeros((len(mono), 2), dtype=np.int16)
    for n, speaker in enumerate(sorted(turns)):
        for start, end in turns[speaker]:
            lo, hi = int(start * rate), min(len(mono), int(end * rate))
            stereo[lo:hi, n] = mono[lo:hi]
    return stereo.tobytes(), rate
