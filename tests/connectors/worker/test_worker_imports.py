"""The worker's modules read no environment, import with no side effects, and run without faster-whisper."""

from __future__ import annotations

import ast
import asyncio
import io
import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from speechmatics.batch import AsyncClient
from worker_fixtures import synthetic_call

import bytewax.speechmatics.connectors.worker as worker_package
from bytewax.speechmatics.connectors.speechmatics.wav import encode_wav
from bytewax.speechmatics.connectors.worker.control import LISTENING_PREFIX, WorkerAdmin

WORKER_DIR = Path(next(iter(worker_package.__path__)))
CLI_WORKER = WORKER_DIR.parent / "cli" / "worker.py"
ENV_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def test_no_module_of_the_worker_touches_the_environment() -> None:
    """The worker command reads the variables and passes them on; the modules below it never look."""
    files = sorted(WORKER_DIR.rglob("*.py"))
    assert len(files) >= 12
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
            imported = [a.name for a in node.names] if isinstance(node, ast.ImportFrom) and node.module == "os" else []
            if name in ENV_NAMES or ENV_NAMES.intersection(imported):
                found.append(f"{path.relative_to(WORKER_DIR)}:{node.lineno}")
    assert found == []


# Run in a fresh interpreter where faster_whisper (and CTranslate2) cannot be imported, as in a base install.
CHILD = r"""
import atexit, collections.abc, contextlib, importlib, io, json, logging, os, pkgutil, sys, threading
sys.modules["faster_whisper"] = None
sys.modules["ctranslate2"] = None
watched = tuple(sys.argv[1:3])
# Third-party libraries may read the environment when they are imported; only our modules' reads count.
import aiohttp, aiohttp.web, numpy, soundfile  # noqa: E401

reads = []


class Spy(collections.abc.MutableMapping):
    def __init__(self, real):
        self.real = real

    def _note(self, key):
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_filename.startswith(watched):
                reads.append(f"{key} at {frame.f_code.co_filename}:{frame.f_lineno}")
                return
            frame = frame.f_back

    def __getitem__(self, key):
        self._note(key)
        return self.real[key]

    def __setitem__(self, key, value):
        self._note(key)
        self.real[key] = value

    def __delitem__(self, key):
        self._note(key)
        del self.real[key]

    def __iter__(self):
        self._note("*")
        return iter(self.real)

    def __len__(self):
        return len(self.real)


def handlers():
    loggers = [logging.root, *(v for v in logging.root.manager.loggerDict.values() if isinstance(v, logging.Logger))]
    return sum(len(logger.handlers) for logger in loggers)


def children():
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return False
    return True


before = {"threads": threading.active_count(), "handlers": handlers(), "atexit": atexit._ncallbacks()}
real_environ, os.environ = os.environ, Spy(os.environ)
import bytewax.speechmatics.connectors.worker as package
names = [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
names.append("bytewax.speechmatics.connectors.cli.worker")
for name in names:
    importlib.import_module(name)
os.environ = real_environ
after = {"threads": threading.active_count(), "handlers": handlers(), "atexit": atexit._ncallbacks()}

from bytewax.speechmatics.connectors.cli import worker as cli
err = io.StringIO()
with contextlib.redirect_stderr(err):
    whisper_code = cli.main(["--engine", "whisper", "--port", "0"])
report = {"modules": names, "env_reads": reads, "before": before, "after": after, "children": children(),
          "faster_whisper": repr(sys.modules.get("faster_whisper")), "whisper_code": whisper_code,
          "whisper_stderr": err.getvalue()}
print("REPORT " + json.dumps(report), flush=True)
sys.exit(cli.main(["--engine", "reference", "--port", "0", "--parallel", "1", "--api-key=k"]))
"""


@pytest.fixture
def child_without_whisper(tmp_path: Path):
    """Start CHILD; yields `next_line(prefix)`: the rest of its next stdout line that starts with `prefix`."""
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr:  # a file, not a pipe: the worker's logs can never block it
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(WORKER_DIR), str(CLI_WORKER)],
                                stdout=subprocess.PIPE, stderr=stderr, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)  # the child closed its output: it has ended

    threading.Thread(target=pump, daemon=True).start()

    def next_line(prefix: str, seconds: float = 60) -> str:
        deadline = time.monotonic() + seconds
        while True:
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                proc.kill()
                pytest.fail(f"no {prefix!r} line (child ended or {seconds} s passed); "
                            f"stderr: {stderr_path.read_text()[-3000:]}")
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    yield next_line
    proc.terminate()
    proc.wait(15)


def test_every_worker_module_imports_cleanly_and_the_reference_worker_runs_without_faster_whisper(
    child_without_whisper,
) -> None:
    report = json.loads(child_without_whisper("REPORT "))
    modules = set(report["modules"])
    expected = {"app", "audio", "control", "embedded", "faults", "formats", "jobs", "stats", "webhooks",
                "engines", "engines.reference", "engines.whisper"}
    assert {f"bytewax.speechmatics.connectors.worker.{m}" for m in expected} <= modules
    assert report["env_reads"] == []
    assert report["after"] == report["before"]  # no thread, log handler or exit hook appeared
    assert report["children"] is False  # and no process was started
    assert report["faster_whisper"] == "None"  # still blocked: nothing imported it for real
    assert report["whisper_code"] == 2
    assert report["whisper_stderr"].count("\n") == 1
    assert "pip install 'bytewax-speechmatics[worker]'" in report["whisper_stderr"]

    base = child_without_whisper(LISTENING_PREFIX)
    audio, truth = synthetic_call(20, seed=3)
    WorkerAdmin(base).register_call("no-whisper", audio, truth)
    wav = encode_wav(audio[2 * 16000 * 2 : 2 * 16000 * 12], 16000, "pcm_s16le", 1)

    async def go():
        async with AsyncClient(api_key="k", url=f"{base}/v2") as client:
            return await client.transcribe(io.BytesIO(wav), polling_interval=0.2, min_polling_interval=0.05,
                                           timeout=60)

    words = [r.alternatives[0].content for r in asyncio.run(go()).results if r.type == "word"]
    assert len(words) >= 15 and all(w.startswith("word") for w in words)
