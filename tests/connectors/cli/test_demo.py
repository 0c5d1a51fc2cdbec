"""`make demo` says what the label before each transcript line means, and its calls are real recordings."""

from __future__ import annotations

from bytewax.speechmatics.connectors.cli.demo import CHANNEL_CONFIG, SPEAKER_CONFIG, speaker_legend
from bytewax.speechmatics.schemas.call_start import start_value


def test_the_demo_explains_its_labels() -> None:
    legend = speaker_legend()
    assert "`agent` / `caller`" in legend and "`spk_1`, `spk_2`" in legend and "identification" in legend


def test_the_demo_calls_settings_are_valid_start_messages() -> None:
    for config in (CHANNEL_CONFIG, SPEAKER_CONFIG):
        start_value(config)  # raises on a field or value the contract refuses
