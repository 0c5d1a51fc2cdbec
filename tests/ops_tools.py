"""The operations tools (helm, promtool, prometheus, kubecheck), built once from the Go module proxy and cached.

`deploy/tools/build.sh` builds a missing tool into BWSM_CACHE_DIR/tools and prints its path; `make test` runs it
before pytest, so here it normally only finds them. A test that needs a tool gets its path from `tool(name)`
(tests/deploy), or calls `build(name)`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BUILD = DEPLOY / "tools" / "build.sh"


_built: dict[str, Path] = {}


def build(name: str) -> Path:
    """The path of a built tool (built on first use: a few CPU-minutes for each of helm and promtool)."""
    if name not in _built:
        done = subprocess.run(["bash", str(BUILD), name], capture_output=True, text=True, timeout=3000)
        assert done.returncode == 0, f"building {name} failed:\n{done.stderr[-3000:]}"
        _built[name] = Path(done.stdout.strip().splitlines()[-1])
    return _built[name]


@pytest.fixture(scope="session")
def tool() -> Callable[[str], Path]:
    """name -> path of the built tool (tests/deploy/conftest.py makes this fixture theirs)."""
    return build
