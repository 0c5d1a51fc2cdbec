"""`tail` marks each segment line: realtime partial, realtime final, or batch (with the span it replaces)."""

from __future__ import annotations

from bytewax.speechmatics.connectors.cli.tail import mark, render


def _segment(source: str, final: bool, supersedes=None) -> dict:
    return {"call_id": "c", "type": "segment", "source": source, "is_final": final, "start_time": 1.0,
            "end_time": 2.0, "words": [{"text": "hi", "type": "word", "speaker": "S1"}], "supersedes": supersedes}


def test_marks():
    assert mark(_segment("realtime", False)) == "realtime partial"
    assert mark(_segment("realtime", True)) == "realtime final"
    assert mark(_segment("batch", True)) == "batch"
    batch = _segment("batch", True, {"start_time": 0.0, "end_time": 30.5})
    assert mark(batch) == "batch (replaces realtime 00:00.0-00:30.5)"
    assert render(_segment("realtime", False)).splitlines()[0].endswith("realtime partial")
