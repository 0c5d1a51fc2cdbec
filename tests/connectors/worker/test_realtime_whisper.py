"""The whisper engine's streaming: the agreement rule (pure, fast) and one session with the official SDK (slow)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import soundfile
from realtime_fixtures import assert_partials_before_finals, rt_url, stream
from speechmatics.rt import TranscriptionConfig

from bytewax.speechmatics.connectors.worker.realtime_whisper import Agreement, Word, to_float16k


def w(text: str, start: float) -> Word:
    return Word(text, start, start + 0.4)


def test_words_become_final_when_two_decodes_agree_in_order():
    agreement = Agreement(max_delay=4.0)
    final, partial = agreement.update([w(" Hello", 0.0), w(" word", 0.5)], heard=1.0)
    assert final == [] and [x.text for x in partial] == [" Hello", " word"]
    final, partial = agreement.update([w(" Hello,", 0.0), w(" world", 0.5), w(" again", 1.0)], heard=2.0)
    assert [x.text for x in final] == [" Hello,"] and [x.text for x in partial] == [" world", " again"]
    assert agreement.final_end == 0.4
    final, _ = agreement.update([w(" world", 0.5), w(" again", 1.0)], heard=3.0)
    assert [x.text for x in final] == [" world", " again"]


def test_max_delay_finalises_without_agreement_and_the_end_finalises_everything():
    agreement = Agreement(max_delay=1.0)
    agreement.update([w(" a", 0.0)], heard=0.5)
    final, partial = agreement.update([w(" b", 0.0), w(" c", 2.0)], heard=2.5)
    assert [x.text for x in final] == [" b"] and [x.text for x in partial] == [" c"]
    final, partial = agreement.update([w(" d", 2.0)], heard=2.6, end=True)
    assert [x.text for x in final] == [" d"] and partial == []


def test_silence_advances_the_window():
    agreement = Agreement(max_delay=1.0)
    assert agreement.update([], heard=5.0) == ([], [])
    assert agreement.final_end == 4.0


def test_audio_is_resampled_to_16k_float():
    pcm = (np.sin(np.arange(8000) / 10) * 10000).astype("<i2").tobytes()
    audio = to_float16k(pcm, 8000, "pcm_s16le")
    assert audio.dtype == np.float32 and audio.size == 16000 and abs(audio).max() <= 1.0
    assert to_float16k(bytes([0xFF, 0x7F, 0x00, 0x80]), 16000, "mulaw").tolist()[:2] == [0.0, 0.0]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_whisper_streams_partials_then_finals_through_the_sdk(local_worker):
    from bytewax.speechmatics.connectors.cli.sample_audio import pyannote_sample

    samples, rate = soundfile.read(str(pyannote_sample().wav), dtype="int16", frames=16000 * 12)
    assert rate == 16000
    worker = local_worker(engine="whisper", parallel=1)
    config = TranscriptionConfig(language="en", enable_partials=True, max_delay=2.0)
    rec = asyncio.run(stream(rt_url(worker), samples.tobytes(), frame_bytes=3200, config=config, pace=0.05))
    finals = rec.words()
    assert finals and rec.messages[-1]["message"] == "EndOfTranscript"
    assert [s for _, s, _ in finals] == sorted(s for _, s, _ in finals)
    assert_partials_before_finals(rec.messages)
