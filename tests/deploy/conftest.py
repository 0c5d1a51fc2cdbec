"""The deploy tests' `tool` fixture: the operations tools built once from the Go module proxy (tests/ops_tools.py)."""

from ops_tools import tool  # noqa: F401 - a fixture, made available to this directory
