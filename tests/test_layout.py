"""The layout keeps its promises: every package is installed, data flows one way (flows -> connectors, never back,
except the command line), the environment is read only in Settings.from_env and the command line, and importing
any module starts nothing."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).parents[1]
TOPS = {"flows": "bytewax.speechmatics.flows", "connectors": "bytewax.speechmatics.connectors",
        "schemas": "bytewax.speechmatics.schemas", "producer": "bytewax.speechmatics.producer"}
#: The modules allowed to read the environment: the one Settings.from_env, and the command line.
ENV_READERS = ("flows/settings.py", "connectors/cli/")


def modules() -> dict[str, Path]:
    out = {}
    for top, package in TOPS.items():
        for path in (ROOT / top).rglob("*.py"):
            parts = path.relative_to(ROOT / top).with_suffix("").parts
            name = ".".join([package, *parts]).removesuffix(".__init__")
            if parts[-1] != "__main__":
                out[name] = path
    return out


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    return names


def test_every_package_is_installed() -> None:
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {name for name, path in modules().items() if path.name == "__init__.py"}
    assert found == declared


def test_connectors_and_schemas_never_import_flows() -> None:
    backwards = {name: sorted(i for i in imports_of(path) if i.startswith(TOPS["flows"]))
                 for name, path in modules().items()
                 if not name.startswith(TOPS["flows"]) and not name.startswith(TOPS["connectors"] + ".cli")}
    assert {name: found for name, found in backwards.items() if found} == {}


def test_schemas_import_nothing_of_ours_but_schemas() -> None:
    for name, path in modules().items():
        if name.startswith(TOPS["schemas"]):
            ours = {i for i in imports_of(path) if i.startswith("bytewax.speechmatics")}
            assert all(i.startswith(TOPS["schemas"]) for i in ours), (name, ours)


def test_only_settings_and_the_command_line_read_the_environment() -> None:
    readers = []
    for path in modules().values():
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text()
        if ("os.environ" in text or "getenv(" in text) and not rel.startswith(ENV_READERS):
            readers.append(rel)
    assert readers == []


def test_nothing_writes_the_environment() -> None:
    writes = [f"{path.relative_to(ROOT)}:{n}" for path in modules().values()
              for n, line in enumerate(path.read_text().splitlines(), 1)
              if "os.environ[" in line and "=" in line.split("os.environ[", 1)[1].split("]", 1)[-1][:3]
              or "os.environ.setdefault" in line or "os.environ.update" in line or "putenv(" in line]
    assert writes == []


def test_importing_every_module_starts_nothing() -> None:
    """No thread, no child process, no log handler, no environment change from importing the whole library."""
    code = f"""
import importlib, logging, os, threading, multiprocessing
before = dict(os.environ)
for name in {sorted(modules())!r}:
    importlib.import_module(name)
assert threading.active_count() == 1, threading.enumerate()
assert multiprocessing.active_children() == []
import glob
kids = "".join(open(p).read() for p in glob.glob("/proc/self/task/*/children"))  # Linux: any child process
assert kids.strip() == "", kids
assert logging.getLogger("bytewax.speechmatics").handlers == []
assert dict(os.environ) == before
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
