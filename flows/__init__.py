"""Dataflows and the stateful logic they are built from (chunking, submission, stitching)."""
