"""Structured log lines carry ids as fields, and only the fields the module allows."""

from __future__ import annotations

import logging

import orjson
import pytest

from bytewax.speechmatics.connectors.logs import StructuredFormatter, fields


def record(**extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("bytewax.speechmatics.test", logging.INFO, __file__, 1, "chunk %s done", ("c/3",), None)
    rec.__dict__.update(extra)
    return rec


def test_json_lines_carry_the_fields() -> None:
    line = orjson.loads(StructuredFormatter(as_json=True).format(record(**fields(call_id="c", chunk=3, job_id="j1"))))
    assert line["msg"] == "chunk c/3 done"
    assert (line["call_id"], line["chunk"], line["job_id"], line["level"]) == ("c", 3, "j1", "info")


def test_text_lines_append_key_values() -> None:
    text = StructuredFormatter(as_json=False).format(record(**fields(call_id="c", chunk=0)))
    assert text.endswith("chunk c/3 done call_id=c chunk=0")


def test_other_fields_are_refused_and_never_rendered() -> None:
    with pytest.raises(ValueError, match="transcript"):
        fields(transcript="secret words")
    line = orjson.loads(StructuredFormatter(as_json=True).format(record(transcript="secret words", api_key="k")))
    assert "transcript" not in line and "api_key" not in line
