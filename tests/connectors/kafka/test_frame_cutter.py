"""The frame cutter: any split of the same audio gives the same frames, each within the contract."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bytewax.speechmatics.connectors.kafka.frame_cutter import AudioFormat, FrameCutter, audio_bytes
from bytewax.speechmatics.schemas.frames import SAMPLE_RATES, decode_frame, encode_frame, frame_samples

FORMATS = st.sampled_from([AudioFormat(8000, "mulaw", 1), AudioFormat(8000, "mulaw", 2),
                           AudioFormat(16000, "pcm_s16le", 1), AudioFormat(8000, "pcm_s16le", 2)])


def cut(fmt: AudioFormat, pieces: list[bytes], frame_seconds: float, max_seconds: float) -> list:
    cutter = FrameCutter("c", fmt, frame_seconds, max_seconds)
    frames = [f for piece in pieces for f in cutter.push(piece)]
    return [*frames, cutter.finish()]


@settings(max_examples=60, deadline=None)
@given(fmt=FORMATS, data=st.data(), total=st.integers(0, 40000),
       frame_seconds=st.sampled_from([0.02, 0.1, 0.5, 2.0]), max_seconds=st.sampled_from([0.5, 2.0]))
def test_any_split_gives_the_same_contract_frames(fmt: AudioFormat, data: st.DataObject, total: int,
                                                  frame_seconds: float, max_seconds: float) -> None:
    frame_seconds = min(frame_seconds, max_seconds)
    audio = bytes(np.random.default_rng(total).integers(0, 256, total, dtype=np.uint8))
    cuts = sorted(data.draw(st.lists(st.integers(0, total), max_size=12)))
    pieces = [audio[a:b] for a, b in zip([0, *cuts], [*cuts, total], strict=True)]
    frames = cut(fmt, pieces, frame_seconds, max_seconds)
    assert [f.audio for f in frames] == [f.audio for f in cut(fmt, [audio], frame_seconds, max_seconds)]
    assert [f.seq for f in frames] == list(range(len(frames)))
    assert [f.end for f in frames] == [False] * (len(frames) - 1) + [True]
    whole = total // fmt.width * fmt.width
    assert b"".join(f.audio for f in frames) == audio[:whole]  # nothing lost but a trailing partial sample
    for frame in frames:  # the flow's own decoder accepts every frame
        assert decode_frame(*encode_frame(frame), max_frame_seconds=max_seconds) == frame
        assert frame.end or frame.audio


def test_drain_sends_whole_samples_and_keeps_a_partial_one() -> None:
    cutter = FrameCutter("c", AudioFormat(8000, "pcm_s16le", 2), 0.1)
    assert cutter.push(b"\x01" * 7) == []
    (frame,) = cutter.drain()
    assert frame.audio == b"\x01" * 4 and cutter.pending_bytes == 3 and frame.seq == 0 and not frame.end
    assert cutter.finish().audio == b"" and cutter.ended
    with pytest.raises(ValueError, match="ended"):
        cutter.push(b"\x00\x00")


def test_numpy_arrays_become_contract_bytes() -> None:
    stereo = AudioFormat(16000, "pcm_s16le", 2)
    ints = np.array([[1, -2], [300, -32768]], dtype=np.int16)
    assert audio_bytes(ints, stereo) == ints.astype("<i2").tobytes()
    assert audio_bytes(ints.astype(">i2"), stereo) == ints.astype("<i2").tobytes()
    floats = np.array([[1.5, -1.0], [0.5, 0.0]], dtype=np.float32)
    assert np.frombuffer(audio_bytes(floats, stereo), "<i2").tolist() == [32767, -32767, 16384, 0]
    assert audio_bytes(np.array([0xFF, 0x7F], dtype=np.uint8), AudioFormat(8000, "mulaw", 1)) == b"\xff\x7f"
    with pytest.raises(ValueError, match="channels"):
        audio_bytes(np.zeros((4, 1), np.int16), stereo)
    with pytest.raises(ValueError, match="int16 or float"):
        audio_bytes(np.zeros(4, np.int32), stereo)
    with pytest.raises(ValueError, match="uint8"):
        audio_bytes(np.zeros(4, np.int16), AudioFormat(8000, "mulaw", 1))


def test_bad_formats_and_frame_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        AudioFormat(44100)
    with pytest.raises(ValueError, match="frame_seconds"):
        FrameCutter("c", AudioFormat(), 3.0, 2.0)
    with pytest.raises(ValueError, match="call_id"):
        FrameCutter("", AudioFormat())



@settings(max_examples=300, deadline=None)
@example(frame_ms=1001, rate=8000, channels=1, seconds=2.1)  # 1.001 s is 1000.9999999999999 ms: still 8008 samples
@given(frame_ms=st.integers(1, 2000), rate=st.sampled_from(SAMPLE_RATES), channels=st.sampled_from((1, 2)),
       seconds=st.floats(0, 3))
def test_one_framing_rule_and_the_end_frame_carries_the_last_piece(frame_ms: int, rate: int, channels: int,
                                                                   seconds: float) -> None:
    """The cutter's frame length is `frame_samples` (publish's --frame-ms rule) for a length given in seconds, and
    `finish_with` puts the last piece in the end frame: no empty end frame after audio that ends on a boundary."""
    fmt = AudioFormat(rate, "pcm_s16le", channels)
    step = frame_samples(frame_ms, rate)
    audio = b"\x01\x00" * channels * int(seconds * rate)
    frames = FrameCutter("c", fmt, frame_ms / 1000).finish_with(audio)
    assert [f.samples for f in frames[:-1]] == [step] * (len(frames) - 1)
    assert 0 < frames[-1].samples <= step if audio else frames[-1].samples == 0
    assert [f.end for f in frames] == [False] * (len(frames) - 1) + [True]
    assert b"".join(f.audio for f in frames) == audio
