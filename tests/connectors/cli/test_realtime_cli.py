"""The real-time command line: `tail` marks segment lines (realtime partial, realtime final, batch with the span it
replaces); `realtime` refuses to start without a key or an endpoint."""

from __future__ import annotations

import os
import subprocess
import sys

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


def test_realtime_without_key_or_url_is_one_line_and_exit_2():
    env = {k: v for k, v in os.environ.items() if k not in ("SPEECHMATICS_API_KEY", "SPEECHMATICS_RT_URL")}
    done = subprocess.run([sys.executable, "-m", "bytewax.speechmatics.connectors.cli", "realtime"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "SPEECHMATICS_API_KEY" in done.stderr
