"""Importing the library, or looking at the flow module's attributes, changes nothing process-wide: only entry
points (`run`'s flow process, `microbatch:flow(tune=True)`) tune the process."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc, sys, threading
before = (gc.get_threshold(), sys.getswitchinterval(), threading.active_count())
import bytewax.speechmatics.flows as flows
from bytewax.speechmatics.flows import final_transcripts, microbatch
for module in (microbatch, final_transcripts):
    assert hasattr(module, "flow") and callable(module.flow)
    getattr(module, "flow")
    dir(module)
after = (gc.get_threshold(), sys.getswitchinterval(), threading.active_count())
print(before == after, before, after)
"""


def test_reading_the_flow_attribute_builds_and_tunes_nothing() -> None:
    env = {"PATH": "/usr/bin:/bin", "BWSM_EMBEDDED_WORKER": "0", "SPEECHMATICS_API_KEY": "k",
           "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("True"), proc.stdout


def test_the_flow_factory_tunes_only_when_asked(tmp_path) -> None:  # noqa: ANN001
    code = ("import gc, sys\nfrom bytewax.speechmatics.flows import microbatch\n"
            "before = (gc.get_threshold()[0], sys.getswitchinterval())\n"
            "microbatch.flow()\nbuilt = (gc.get_threshold()[0], sys.getswitchinterval())\n"
            "microbatch.flow(tune=True)\ntuned = (gc.get_threshold()[0], sys.getswitchinterval())\n"
            "print(before == built, tuned)\n")
    env = {"PATH": "/usr/bin:/bin", "BWSM_EMBEDDED_WORKER": "0", "SPEECHMATICS_API_KEY": "k",
           "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "BWSM_JOURNAL_DIR": str(tmp_path / "journal")}  # its own lock
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True", "(100000,", "0.001)"]


TINY_FLOW = """
import gc, sys
from bytewax.dataflow import Dataflow
import bytewax.operators as op
from bytewax.testing import TestingSource

def seen(_item):
    print("tuning", gc.get_threshold()[0], sys.getswitchinterval(), flush=True)

flow = Dataflow("tiny")
op.inspect("look", op.input("in", flow, TestingSource([1])), lambda _step, item: seen(item))
"""


def test_the_supervised_flow_process_tunes_its_process(tmp_path) -> None:  # noqa: ANN001
    (tmp_path / "tiny_flow.py").write_text(TINY_FLOW)
    env = {"PATH": "/usr/bin:/bin", "BWSM_GC_THRESHOLD": "12345", "BWSM_GIL_SWITCH_SECONDS": "0.002"}
    proc = subprocess.run([sys.executable, "-m", "bytewax.speechmatics.connectors.cli.flow_process",
                           f"{tmp_path / 'tiny_flow.py'}:flow"], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "tuning 12345 0.002" in proc.stdout


def test_a_second_process_with_a_taken_index_stops_in_one_line_naming_it(tmp_path) -> None:  # noqa: ANN001
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys\nfrom bytewax.speechmatics.connectors.speechmatics.journal import JobJournal\n"
        f"j = JobJournal({str(tmp_path)!r}, 1)\nprint('open', flush=True)\nsys.stdin.read()\n")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    env = {"PATH": "/usr/bin:/bin", "BWSM_EMBEDDED_WORKER": "0", "SPEECHMATICS_API_KEY": "k",
           "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "BWSM_JOURNAL_DIR": str(tmp_path)}
    try:
        assert holder.stdout.readline().strip() == "open"
        proc = subprocess.run([sys.executable, "-m", "bytewax.run", "bytewax.speechmatics.flows.microbatch:flow",
                               "-i1", "-a", "127.0.0.1:1;127.0.0.1:2"], capture_output=True, text=True, env=env,
                              timeout=60, check=False)
    finally:
        holder.communicate("", timeout=30)
    assert proc.returncode != 0
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("bytewax-speechmatics: process index 1 is already taken: another live process holds")
