"""The calls a flow process holds, for `bytewax-speechmatics status` and the `bwsm_open_calls` gauge.

Per call: seconds of audio received, chunks cut, chunks not yet transcribed (jobs in flight) and when the oldest of
those was cut. Ids and counts only: nothing from the audio, the transcript or the call's metadata. The chunker and
the submitter report after each batch or wake-up (a dict update under a lock); a call leaves the board once its
audio is cut and all its chunks are transcribed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from bytewax.speechmatics.connectors import metrics


@dataclass
class CallStatus:
    """One call as its process sees it."""

    audio_seconds: float = 0.0
    chunks_cut: int = 0
    open: bool = False  # audio received that is not cut yet
    pending: int = 0  # chunks cut and not yet transcribed
    oldest_cut_at: float | None = None  # wall time the oldest of those was cut

    def held(self) -> bool:
        return self.open or self.pending > 0


class CallBoard:
    """Every call of this process (thread-safe: Bytewax workers are threads of one process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, CallStatus] = {}

    def chunker(self, call_id: str, audio_seconds: float, chunks_cut: int, open_: bool) -> None:
        with self._lock:
            status = self._calls.get(call_id) or CallStatus()
            status.audio_seconds, status.chunks_cut, status.open = audio_seconds, chunks_cut, open_
            self._keep(call_id, status)

    def submitter(self, call_id: str, pending: int, oldest_cut_at: float | None) -> None:
        with self._lock:
            status = self._calls.get(call_id) or CallStatus()
            status.pending, status.oldest_cut_at = pending, oldest_cut_at if pending else None
            self._keep(call_id, status)

    def _keep(self, call_id: str, status: CallStatus) -> None:
        if status.held():
            self._calls[call_id] = status
        else:
            self._calls.pop(call_id, None)

    def view(self, now: float) -> dict:
        """The board as JSON-able data: totals and one row per call, oldest pending job first."""
        with self._lock:
            calls = [(call_id, CallStatus(**vars(s))) for call_id, s in self._calls.items()]
        rows = [{
            "call_id": call_id,
            "audio_seconds": round(s.audio_seconds, 3),
            "chunks_cut": s.chunks_cut,
            "jobs_in_flight": s.pending,
            "oldest_pending_seconds": None if s.oldest_cut_at is None else round(max(0.0, now - s.oldest_cut_at), 3),
        } for call_id, s in calls]
        rows.sort(key=lambda r: (-(r["oldest_pending_seconds"] or -1.0), r["call_id"]))
        return {"open_calls": len(rows), "jobs_in_flight": sum(r["jobs_in_flight"] for r in rows), "calls": rows}

    def publish(self) -> None:
        """Set the open-calls and pending-chunks gauges."""
        with self._lock:
            metrics.OPEN_CALLS.set(len(self._calls))
            metrics.CHUNKS_PENDING.set(sum(s.pending for s in self._calls.values()))


#: The process's board (the chunker and submitter write it; the admin endpoint and the health thread read it).
BOARD = CallBoard()
