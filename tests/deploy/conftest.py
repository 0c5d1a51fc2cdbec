"""The operations tools (helm, promtool, prometheus, kubecheck), built once from the Go module proxy and cached.

`deploy/tools/build.sh` builds a missing tool into BWSM_CACHE_DIR/tools and prints its path; `make test` runs it
before pytest, so here it normally only finds them. A test that needs a tool gets its path from `tool(name)`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BUILD = DEPLOY / "tools" / "build.sh"


@pytest.fixture(scope="session")
def tool() -> Callable[[str], Path]:
    """name -> path of the built tool (built on first use, ~2 CPU-minutes for each of helm and promtool)."""
    found: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in found:
            done = subprocess.run(["bash", str(BUILD), name], capture_output=True, text=True, timeout=3000)
            assert done.returncode == 0, f"building {name} failed:\n{done.stderr[-3000:]}"
            found[name] = Path(done.stdout.strip().splitlines()[-1])
        return found[name]

    return get
