"""The README's examples and tables are what the code does: the compose example runs from the README text itself,
and the configuration table lists every variable the project reads, once."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

from bytewax.speechmatics.flows.settings import VARIABLES

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
SOURCES = [p for top in ("flows", "connectors", "schemas") for p in (ROOT / top).rglob("*.py")]
#: Names that are markers or process plumbing, not settings a user sets.
NOT_SETTINGS = {"BWSM_WORKER_LISTENING", "BWSM_SUPERVISOR"}


def section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def test_the_compose_example_runs_as_written(reference_worker, tmp_path: Path) -> None:  # noqa: ANN001
    code = re.search(r"```python\n(.*?)```", section("Compose the stages in your own flow"), re.S).group(1)
    ast.parse(code)
    env = {**os.environ, "SPEECHMATICS_API_KEY": reference_worker.api_key or "readme-key",
           "SPEECHMATICS_BATCH_URL": reference_worker.url, "BWSM_JOURNAL_DIR": str(tmp_path / "journal")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    promised = re.search(r"print\(.*\)  # (\[.*\])", code).group(1)
    assert done.stdout.strip().splitlines()[-1] == promised


def table_variables() -> list[str]:
    rows = [line for line in section("Configuration").splitlines() if line.startswith("| `")]
    return [name for row in rows for name in re.findall(r"`((?:BWSM|KAFKA|SPEECHMATICS)_[A-Z0-9_<>]+)`",
                                                         row.split("|")[1])]


def test_every_setting_is_in_the_table_once() -> None:
    listed = table_variables()
    duplicates = {name for name in listed if listed.count(name) > 1}
    assert not duplicates
    assert {v.name for v in VARIABLES} <= set(listed)


def test_every_variable_the_code_names_is_documented() -> None:
    named = {m for path in SOURCES for m in re.findall(r"\bBWSM_[A-Z0-9_]*[A-Z0-9]\b", path.read_text())}
    missing = named - NOT_SETTINGS - set(table_variables())
    assert not missing, f"variables the code names that the README table does not list: {sorted(missing)}"


def test_the_producer_example_streams_a_call_as_written(kafka_bootstrap: str, make_topic) -> None:  # noqa: ANN001
    from ingress_harness import ended, read_calls

    topic = make_topic("readme")
    code = re.search(r"```python\n(.*?)```", section("Streaming from your own code"), re.S).group(1)
    assert len(code.strip().splitlines()) <= 10
    code = code.replace('"localhost:9092"', repr(kafka_bootstrap)).replace('"calls.audio"', repr(topic))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    start, *frames = read_calls(kafka_bootstrap, topic, ended(["call-42"]))["call-42"]
    assert start.settings.metadata == {"tenant": "acme"} and start.settings.config.language == "en"
    assert sum(len(f.audio) for f in frames) == 50 * 640 and frames[-1].end
