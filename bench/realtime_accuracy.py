"""Real-time WER against batch WER (whisper engine): what streaming costs in accuracy.

`python -m bench.realtime_accuracy [--max-delay 2] [--speed 1]`: the pyannote two-speaker sample (30 s, its human
STM transcript as the reference) is transcribed by a local worker's whisper engine twice through the official SDKs:
once as a batch job (speechmatics-batch), once as a real-time session (speechmatics-rt) fed 200 ms frames at `speed`
times real time, finals only. WER is jiwer's, lower-cased, punctuation stripped. Not a test: the figures depend on
the model and the machine's speed (a slower machine decodes fewer passes per second of audio).
"""

from __future__ import annotations

import argparse
import asyncio
import time

import soundfile

from bytewax.speechmatics.connectors.cli.sample_audio import normalise_for_wer, pyannote_sample, stm_text
from bytewax.speechmatics.connectors.worker.control import start_worker


def _wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return jiwer.wer(normalise_for_wer(reference), normalise_for_wer(hypothesis) or "<empty>")


async def _batch(url: str, wav: str) -> str:
    from speechmatics.batch import AsyncClient, FormatType, TranscriptionConfig

    async with AsyncClient(api_key="bench", url=url) as client:
        transcript = await client.transcribe(wav, transcription_config=TranscriptionConfig(language="en"),
                                             format_type=FormatType.JSON)
    return " ".join(r.alternatives[0].content for r in transcript.results if r.type == "word")


async def _realtime(url: str, pcm: bytes, max_delay: float, speed: float) -> tuple[str, float]:
    from speechmatics.rt import AsyncClient, AudioEncoding, AudioFormat, ServerMessageType, TranscriptionConfig

    words: list[str] = []
    client = AsyncClient(api_key="bench", url=url)
    client.on(ServerMessageType.ADD_TRANSCRIPT,
              lambda m: words.extend(r["alternatives"][0]["content"] for r in m["results"] if r["type"] == "word"))
    await client.start_session(transcription_config=TranscriptionConfig(language="en", max_delay=max_delay),
                               audio_format=AudioFormat(encoding=AudioEncoding.PCM_S16LE, sample_rate=16000))
    started = time.monotonic()
    step = 6400  # 200 ms
    for i in range(0, len(pcm), step):
        await client.send_audio(pcm[i:i + step])
        await asyncio.sleep(max(0.0, started + (i + step) / 32000 / speed - time.monotonic()))
    await client.stop_session()
    return " ".join(words), time.monotonic() - started


def measure(max_delay: float = 2.0, speed: float = 1.0) -> dict:
    """Batch and real-time WER of the pyannote sample through one whisper worker."""
    sample = pyannote_sample()
    reference = stm_text(sample.stm)
    samples, rate = soundfile.read(str(sample.wav), dtype="int16")
    assert rate == 16000 and samples.ndim == 1
    with start_worker(engine="whisper", parallel=1, ready_timeout=600) as worker:
        batch = asyncio.run(_batch(worker.url, str(sample.wav)))
        rt_url = worker.base.replace("http://", "ws://", 1) + "/v2"
        realtime, seconds = asyncio.run(_realtime(rt_url, samples.tobytes(), max_delay, speed))
    return {"audio_s": len(samples) / rate, "batch_wer": _wer(reference, batch), "rt_wer": _wer(reference, realtime),
            "max_delay": max_delay, "speed": speed, "session_s": seconds}


def run(table, bootstrap: str, quick: bool = False) -> None:  # noqa: ANN001 - bench.common.Table
    """The row of `make bench` (the broker is not used: the SDKs talk to the worker)."""
    r = measure()
    table.add("realtime_accuracy", f"pyannote ({r['audio_s']:.0f} s), whisper base", "WER batch / real time",
              f"{r['batch_wer']:.3f} / {r['rt_wer']:.3f}",
              f"real time: max_delay {r['max_delay']:g} s, fed at {r['speed']:g}x, finals only, session "
              f"{r['session_s']:.1f} s; depends on the CPU (fewer decoding passes on a slower one)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-delay", type=float, default=2.0)
    parser.add_argument("--speed", type=float, default=1.0)
    args = parser.parse_args()
    r = measure(args.max_delay, args.speed)
    print(f"pyannote sample ({r['audio_s']:.0f} s), whisper base: batch WER {r['batch_wer']:.3f}, "
          f"real-time WER {r['rt_wer']:.3f} (max_delay {r['max_delay']:g} s, fed at {r['speed']:g}x, "
          f"session {r['session_s']:.1f} s)")


if __name__ == "__main__":
    main()
