"""The public contracts: audio frames, chunks, transcript events, and their JSON/AsyncAPI documents; and the read
side, `CallTranscript` (a call's transcript built from its events)."""

from bytewax.speechmatics.schemas.call_transcript import CallTranscript, Turn

__all__ = ["CallTranscript", "Turn"]
