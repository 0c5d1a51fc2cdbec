"""A durable journal of reference -> job id, so a job learned after the last Bytewax snapshot is not paid twice.

Bytewax persists operator state only at epoch ends. A POST that returned after the last snapshot and
before a SIGKILL would be forgotten, and the replayed chunk posted again. So the job id is appended
(and fsynced) the moment the POST returns, and consulted before every POST.

Layout: one JSON-lines file per process (`journal-p<process index>.jsonl`) in BWSM_JOURNAL_DIR, else a sibling of
the Bytewax recovery directory (`<recovery dir>-bwsm-journal`), else
`$XDG_CACHE_HOME/bytewax-speechmatics/journal`. A process reads every file in the directory (a call may be routed
to another process after a rescale) and writes only its own. Lines: `{"r": reference, "j": job id, "h": audio hash,
"t": unix time, "a": POST attempts}` (the attempts travel with the id so that a result re-emitted after a crash
carries the same `job.attempts` as the first emission), `{"r": reference, "p": unix time, "h": audio hash}` just
before the first POST (an intent: a crash mid-POST leaves the job possibly created, so the next run looks it up by
reference before posting), and `{"r": reference, "d": unix time}` once the chunk's result was emitted. Compaction
rewrites the own file with the live entries, dropping references whose result was emitted (or whose intent was
written) more than `retention` seconds ago, long after any snapshot that could replay them.

Group commit: an fsync takes milliseconds, and at a hundred chunks a second one fsync per line made the journal the
submission loop's bottleneck (the loop stood still during each). Lines are written at once (in order, under the
lock) and `sync(upto)` makes them durable: one fsync covers every line written before it started, so callers
waiting together share it. The submission loop awaits `sync` in a thread (`record_async`, `intend_async`), so it
keeps serving other requests while the disk works; what must be durable first still is.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """What the journal knows of a reference: its job id, or only that a POST was about to be sent."""

    job_id: str | None
    audio_hash: str
    written_at: float
    done_at: float | None = None
    attempts: int = 1

    @property
    def intent_only(self) -> bool:
        return self.job_id is None


def default_journal_dir(argv: Sequence[str], env: Mapping[str, str]) -> Path:
    """BWSM_JOURNAL_DIR, else next to the recovery directory, else the user's cache directory (read from the
    command line and environment that `Settings.from_env` is given)."""
    if env.get("BWSM_JOURNAL_DIR"):
        return Path(env["BWSM_JOURNAL_DIR"])
    recovery = env.get("BYTEWAX_RECOVERY_DIRECTORY")
    for i, arg in enumerate(argv):
        if arg in ("-r", "--recovery-directory") and i + 1 < len(argv):
            recovery = argv[i + 1]
    if recovery:
        path = Path(recovery).resolve()
        return path.with_name(path.name + "-bwsm-journal")
    return cache_journal_dir(Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else None)


def cache_journal_dir(cache: Path | None = None) -> Path:
    """The journal directory under the user's cache directory (`~/.cache` unless given)."""
    return (cache or Path.home() / ".cache") / "bytewax-speechmatics" / "journal"


_journals: dict[tuple[Path, int], JobJournal] = {}
_journals_lock = threading.Lock()


def shared_journal(directory: Path | str | None, process_index: int, retention: float) -> JobJournal:
    """The process's one journal for a directory: every submission service of the process writes through it
    (two JobJournal objects on one file would compact each other's lines away)."""
    path = Path(directory) if directory else cache_journal_dir()
    with _journals_lock:
        journal = _journals.get((path.resolve(), process_index))
        if journal is None:
            journal = _journals[(path.resolve(), process_index)] = JobJournal(path, process_index, retention)
        return journal


def _attempts(value: object) -> int:
    """The attempts of a journal line; 1 for lines written before attempts were journalled."""
    return value if isinstance(value, int) and value >= 0 else 1


class JobJournal:
    """Reference -> job id, durable on disk; thread-safe."""

    def __init__(self, directory: Path | str, process_index: int = 0, retention: float = 86400.0) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / f"journal-p{process_index}.jsonl"
        self.retention = retention
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()  # one fsync at a time; waiters find their line already covered
        self._entries: dict[str, JournalEntry] = {}
        self._lines = 0
        self._written = 0  # serial number of the last line written
        self._synced = 0  # every line up to this serial number is on disk
        self._handle = None  # the own file, open for appending between compactions
        for path in sorted(self.directory.glob("journal-p*.jsonl")):
            self._load(path)
        self.compact()

    def _load(self, path: Path) -> None:
        with open(path, "rb") as handle:
            for raw in handle:
                try:
                    line = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue  # a line torn by a crash mid-write: its POST's id is also in the API's job list
                self._apply(line)

    def _apply(self, line: dict) -> None:
        ref = line.get("r")
        if not isinstance(ref, str):
            return
        if "j" in line:
            self._entries[ref] = JournalEntry(str(line["j"]), str(line.get("h", "")), float(line.get("t", 0.0)),
                                              attempts=_attempts(line.get("a")))
        elif "p" in line:
            known = self._entries.get(ref)
            if known is None or known.intent_only:
                self._entries[ref] = JournalEntry(None, str(line.get("h", "")), float(line["p"]))
        elif "d" in line and ref in self._entries:
            entry = self._entries[ref]
            self._entries[ref] = JournalEntry(entry.job_id, entry.audio_hash, entry.written_at, float(line["d"]),
                                              entry.attempts)

    def _append(self, line: dict) -> int:
        """Write one line (under `_lock`); its serial number, for `sync`."""
        if self._handle is None:
            self._handle = open(self.path, "ab")  # noqa: SIM115 - kept open until the next compaction
        self._handle.write(orjson.dumps(line) + b"\n")
        self._handle.flush()
        self._lines += 1
        self._written += 1
        return self._written

    def sync(self, upto: int) -> None:
        """Block until line `upto` is on disk: one fsync for every line written so far, unless one already did."""
        with self._sync_lock:
            if self._synced >= upto:
                return
            with self._lock:
                target, handle = self._written, self._handle
            if handle is not None:
                os.fsync(handle.fileno())
            self._synced = max(self._synced, target)

    async def record_async(self, reference: str, job_id: str, audio_hash: str, attempts: int = 1) -> None:
        """`record` for the submission loop: the fsync runs in a thread (shared with whoever waits with us)."""
        await asyncio.to_thread(self.sync, self._record(reference, job_id, audio_hash, attempts))

    async def intend_async(self, reference: str, audio_hash: str) -> None:
        """`intend` for the submission loop (see `record_async`)."""
        await asyncio.to_thread(self.sync, self._intend(reference, audio_hash))

    def lookup(self, reference: str) -> JournalEntry | None:
        with self._lock:
            return self._entries.get(reference)

    def record(self, reference: str, job_id: str, audio_hash: str, attempts: int = 1) -> None:
        """Make `reference -> job_id` (and the POST attempts it took) durable before anything else happens (fsync)."""
        self.sync(self._record(reference, job_id, audio_hash, attempts))

    def intend(self, reference: str, audio_hash: str) -> None:
        """A POST for this reference is about to leave (fsync): after a crash, look for its job before posting."""
        self.sync(self._intend(reference, audio_hash))

    def _record(self, reference: str, job_id: str, audio_hash: str, attempts: int) -> int:
        line = {"r": reference, "j": job_id, "h": audio_hash, "t": time.time(), "a": attempts}
        with self._lock:
            serial = self._append(line)
            self._apply(line)
            if self._lines > 2 * len(self._entries) + 1000:
                self._compact_locked()  # fsyncs the rewritten file: every line so far is durable
        return serial

    def _intend(self, reference: str, audio_hash: str) -> int:
        line = {"r": reference, "p": time.time(), "h": audio_hash}
        with self._lock:
            serial = self._append(line)
            self._apply(line)
        return serial

    def mark_done(self, reference: str) -> None:
        """The chunk's result was emitted; the entry may go after `retention` (no fsync: losing it is harmless)."""
        line = {"r": reference, "d": time.time()}
        with self._lock:
            if reference in self._entries:
                self._append(line)
                self._apply(line)

    def forget(self, reference: str) -> None:
        """The job is gone at the server (expired, deleted): a new POST is the only way forward."""
        with self._lock:
            self._entries.pop(reference, None)
            self._compact_locked()

    def compact(self) -> None:
        with self._lock:
            self._compact_locked()

    def _compact_locked(self) -> None:
        horizon = time.time() - self.retention
        live = {r: e for r, e in self._entries.items()
                if (e.done_at or e.written_at) >= horizon or (e.done_at is None and not e.intent_only)}
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as handle:
            for ref, entry in live.items():
                line = ({"r": ref, "p": entry.written_at, "h": entry.audio_hash} if entry.intent_only else
                        {"r": ref, "j": entry.job_id, "h": entry.audio_hash, "t": entry.written_at,
                         "a": entry.attempts})
                handle.write(orjson.dumps(line) + b"\n")
                if entry.done_at is not None:
                    handle.write(orjson.dumps({"r": ref, "d": entry.done_at}) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        os.replace(tmp, self.path)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._entries = live
        self._lines = len(live)
        self._synced = self._written  # the rewritten file holds every live line, fsynced
        log.debug("journal compacted: %d live entries in %s", len(live), self.path)
