"""Fixtures for the local Speechmatics-compatible worker (filled in by the worker's issue)."""
