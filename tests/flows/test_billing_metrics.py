"""The billing metrics: counted once per chunk as its segment is emitted (overlaps counted once in audio)."""

from __future__ import annotations

from prometheus_client import REGISTRY

from bytewax.speechmatics.flows.stitcher import StitchLogic
from bytewax.speechmatics.flows.stitching import StitchSettings
from bytewax.speechmatics.schemas.chunks import ChunkResult, ChunkSpan


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_billed_and_audio_seconds_are_counted_per_chunk() -> None:
    before = sample("bwsm_billed_seconds_total"), sample("bwsm_audio_seconds_total")
    logic = StitchLogic(StitchSettings(), 3600.0, False, None)
    first = ChunkSpan("call-m", 0, 0, 16000 * 10, 0, 16000, "pcm_s16le", 1)
    second = ChunkSpan("call-m", 1, 16000 * 9, 16000 * 15, 16000, 16000, "pcm_s16le", 1, last=True)
    out, _ = logic.on_item(ChunkResult(first, {"results": []}, billed_seconds=4.5))
    out2, _ = logic.on_item(ChunkResult(second, {"results": []}, billed_seconds=0.0))
    assert [p.event["type"] for p in out + out2] == ["segment", "segment", "call_completed"]
    assert out2[-1].event["counts"]["billed_seconds"] == 4.5 and out2[-1].event["counts"]["audio_seconds"] == 15.0
    assert sample("bwsm_billed_seconds_total") - before[0] == 4.5
    assert sample("bwsm_audio_seconds_total") - before[1] == 15.0  # 10 s + 6 s minus the 1 s overlap
