"""`make demo` says what the speaker before each transcript line means, for the endpoint it runs against."""

from __future__ import annotations

from bytewax.speechmatics.connectors.cli.demo import speaker_legend


def test_the_demo_explains_its_speakers() -> None:
    local = speaker_legend(local=True, diarization="speaker")
    assert "`?`" in local and "no speaker diarization" in local and "call_started" in local
    assert "S1, S2" in speaker_legend(local=False, diarization="speaker")
    assert "diarization is off" in speaker_legend(local=False, diarization=None)
    assert "channel labels" in speaker_legend(local=False, diarization="channel")
