"""The README's examples and tables are what the code does: the compose example runs from the README text itself,
after the commands the README gives before it, and the configuration table lists every variable the project reads,
once."""

from __future__ import annotations

import ast
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
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


def compose_example() -> tuple[list[str], str]:
    """The compose section's shell commands (run before the example) and its Python example."""
    text = section("Compose the stages in your own flow")
    commands = re.search(r"```bash\n(.*?)```", text, re.S).group(1).splitlines()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    ast.parse(code)
    return [c.split("  #")[0].strip() for c in commands if c.strip()], code


def user_env(tmp_path: Path) -> dict[str, str]:
    """A user's shell: no Speechmatics variables of ours, the venv's commands on PATH, the journal kept apart."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPEECHMATICS_")}
    return {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "BWSM_JOURNAL_DIR": str(tmp_path / "journal")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_compose_example_runs_as_written_after_the_commands_before_it(tmp_path: Path) -> None:
    """As a user would: the README's commands (the worker in the background, the export), then the example, with no
    API key anywhere. Only the port changes, to a free one (tests share the machine)."""
    commands, code = compose_example()
    port = str(free_port())
    env = user_env(tmp_path)
    background: list[subprocess.Popen] = []
    try:
        for command in commands:
            command = command.replace("18000", port)
            if command.startswith("export "):
                name, _, value = command.removeprefix("export ").partition("=")
                env[name] = value
            else:
                assert command.endswith("&"), command
                background.append(subprocess.Popen(shlex.split(command.rstrip("& ")), env=env,
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        assert "SPEECHMATICS_API_KEY" not in env and background
        deadline = time.monotonic() + 60
        while True:  # the worker the commands started answers /ready
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline and background[0].poll() is None, "the README's worker did not start"
                time.sleep(0.2)
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                              check=False)
    finally:
        for process in background:
            process.terminate()
            process.wait(30)
    assert done.returncode == 0, done.stderr[-3000:]
    promised = re.search(r"print\(.*\)  # (\[.*\])", code).group(1)
    assert done.stdout.strip().splitlines()[-1] == promised


def test_the_example_without_an_api_is_one_line_when_the_flow_is_built(tmp_path: Path) -> None:
    """Skipping the commands (no key, no worker URL): one SettingsError raised where the flow is built, naming both
    ways out, and no Rust panic from inside the running dataflow."""
    _, code = compose_example()
    done = subprocess.run([sys.executable, "-c", code], env=user_env(tmp_path), capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode != 0 and "panicked" not in done.stderr and "stack backtrace" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("bytewax.speechmatics.schemas.errors.SettingsError: no Speechmatics API key: set "
                           "SPEECHMATICS_API_KEY, or set SPEECHMATICS_BATCH_URL to a self-hosted worker"), last
    line = next(n for n, text in enumerate(code.splitlines(), 1) if "transcribe_chunks(" in text)
    assert f'File "<string>", line {line}, in <module>' in done.stderr  # raised at the line that builds the flow


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
