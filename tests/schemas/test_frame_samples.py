"""A producer's framing (`frame_samples`, used by `publish`) never makes a frame the flow refuses: either every frame
passes the flow's own frame check at that limit, or the framing is refused before a frame exists."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bytewax.speechmatics.connectors.cli.publish import CallAudio, frames_of
from bytewax.speechmatics.schemas.errors import ContractError
from bytewax.speechmatics.schemas.frames import SAMPLE_RATES, decode_frame, encode_frame, frame_samples


@settings(max_examples=400, deadline=None)
@given(any_ms=st.integers(-5, 4000), near=st.one_of(st.none(), st.integers(-2, 2)),
       rate=st.sampled_from(SAMPLE_RATES), channels=st.sampled_from((1, 2)),
       limit=st.sampled_from((0.02, 0.5, 1.0, 1.999, 2.0)), frames=st.floats(0, 3.5))
def test_every_frame_published_passes_the_flows_check(any_ms: int, near: int | None, rate: int, channels: int,
                                                       limit: float, frames: float) -> None:
    frame_ms = any_ms if near is None else round(limit * 1000) + near  # often right at the limit
    samples = int(frames * rate * max(1, frame_ms) / 1000)  # about `frames` frames of audio
    call = CallAudio("c", b"\x01\x00" * channels * samples, rate, channels)
    try:
        step = frame_samples(frame_ms, rate, limit)
    except ContractError:
        assert frame_ms < 1 or rate * frame_ms // 1000 > int(limit * rate)
        with pytest.raises(ContractError):
            list(frames_of(call, frame_ms, limit))
        return
    made = list(frames_of(call, frame_ms, limit))
    assert all(f.samples <= step for f in made) and made[-1].end
    for frame in made:
        decode_frame(*encode_frame(frame), max_frame_seconds=limit)  # raises if the flow would refuse it
    assert b"".join(f.audio for f in made) == call.pcm


def test_the_refusal_names_the_limit_and_its_variable() -> None:
    with pytest.raises(ContractError) as info:
        frame_samples(5000, 16000)
    assert str(info.value) == ("frames of 5000 ms are longer than the flow accepts: at most 2000 ms "
                               "(BWSM_MAX_FRAME_SECONDS=2); platforms send 20 to 1000 ms")
    assert frame_samples(2000, 16000) == 32000 and frame_samples(20, 8000) == 160
