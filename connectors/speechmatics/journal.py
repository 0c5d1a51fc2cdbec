"""A durable journal of reference -> job id, so a job learned after the last Bytewax snapshot is not paid twice.

Bytewax persists operator state only at epoch ends. A POST that returned after the last snapshot and before a
SIGKILL would be forgotten, and the replayed chunk posted again. So the intent to POST is made durable before the
POST leaves and the job id the moment it returns, and both are consulted before every POST.

Why SQLite (the standard library's sqlite3) and not a hand-written log: one database per process
(`journal-p<index>.sqlite3`), WAL with `synchronous=FULL`, so a commit is on disk before it is acknowledged; an
entry is one row updated in place, so a done mark cannot be undone by an older copy, there is no compaction to race
with a sync, and the file stays the size of the live rows (SQLite reuses the pages of deleted rows). Each process
writes only its own database; a lookup reads its own first and then, read-only, the others' (a call lands on
another process after a rescale). A process that finds an entry in another's database copies it into its own, so
its done mark and expiry happen there.

No journal I/O on the caller's thread: writes go to one writer thread, which commits whatever is queued in one
transaction (a group commit: one sync for every write waiting together) and then acknowledges them; the submission
loop awaits that acknowledgement and keeps serving other requests meanwhile. Lookups run in a thread too.

Retention, in the journal's running time (seconds the process had it open, kept in the database, so downtime does
not age an entry: a flow down for a week still finds its jobs when it resumes). An entry leaves `retention` running
seconds after it was last written (intent, job id or done mark), finished or not, or at once when its job is found
gone at the server (`forget`). Settings derive the default from Bytewax's recovery (see `replay_horizon` in
flows/settings.py). Rows per database are therefore at most (POSTs per second) x (retention), whatever the restarts.

A lock file per index (`journal-p<index>.lock`, flock) makes a second live process claiming the same index stop with
one line naming it, instead of sharing a POST share and a database.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import itertools
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from pathlib import Path

import orjson

from bytewax.speechmatics.schemas.errors import BytewaxSpeechmaticsError

log = logging.getLogger(__name__)

Clock = Callable[[], float]

#: Running seconds between two sweeps of expired rows.
EXPIRE_EVERY_SECONDS = 60.0
#: Most writes committed in one transaction.
MAX_BATCH = 512

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    reference TEXT PRIMARY KEY,
    job_id TEXT,                -- NULL: a POST was about to leave (an intent), or the job was found gone
    audio_hash TEXT NOT NULL,   -- '' for a job found gone: the row hides other processes' copies
    written_at REAL NOT NULL,   -- wall time of the intent or of the job id (where a lookup at the API starts)
    attempts INTEGER NOT NULL,
    done_at REAL,               -- wall time the chunk's result was emitted
    touched REAL NOT NULL       -- the journal's running time at the last write: what expiry reads
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS running (id INTEGER PRIMARY KEY CHECK (id = 0), seconds REAL NOT NULL);
"""

# A later intent never hides a known job id; a job id keeps its done mark unless it is another job.
_INTEND = """
INSERT INTO jobs (reference, job_id, audio_hash, written_at, attempts, done_at, touched)
VALUES (?1, NULL, ?2, ?3, 1, NULL, ?4)
ON CONFLICT (reference) DO UPDATE SET audio_hash = ?2, written_at = ?3, attempts = 1, done_at = NULL, touched = ?4
WHERE jobs.job_id IS NULL
"""
_RECORD = """
INSERT INTO jobs (reference, job_id, audio_hash, written_at, attempts, done_at, touched)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
ON CONFLICT (reference) DO UPDATE SET
    done_at = CASE WHEN jobs.job_id IS ?2 THEN coalesce(jobs.done_at, ?6) ELSE ?6 END,
    job_id = ?2, audio_hash = ?3, written_at = ?4, attempts = ?5, touched = ?7
"""
_DONE = "UPDATE jobs SET done_at = coalesce(done_at, ?2), touched = ?3 WHERE reference = ?1 AND job_id IS NOT NULL"
_FORGET = """
INSERT INTO jobs (reference, job_id, audio_hash, written_at, attempts, done_at, touched)
VALUES (?1, NULL, '', ?2, 0, NULL, ?3)
ON CONFLICT (reference) DO UPDATE SET job_id = NULL, audio_hash = '', done_at = NULL, attempts = 0, touched = ?3
"""
_WRITES = {"intend": _INTEND, "record": _RECORD, "done": _DONE, "forget": _FORGET}
_LOOKUP = "SELECT job_id, audio_hash, written_at, done_at, attempts FROM jobs WHERE reference = ?"


class JournalClosed(RuntimeError):
    """A write after close: the process is ending (the journal closes at exit), so the write's chunk is recovery's."""


class JournalLocked(BytewaxSpeechmaticsError, RuntimeError):
    """Another live process holds this process index's journal: two processes claim one index."""


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


def database_name(process_index: int) -> str:
    return f"journal-p{process_index}.sqlite3"


def _connect(path: Path, writer: bool = False) -> sqlite3.Connection:
    """A connection; the writer's commits are synced before they return (WAL, synchronous=FULL). Readers only
    SELECT (not opened read-only: a read-only reader of a WAL database cannot open it once its owner closed it)."""
    db = sqlite3.connect(path, check_same_thread=False, timeout=5.0, isolation_level=None)
    if writer:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
    return db


class JobJournal:
    """Reference -> job id, durable on disk; thread-safe. `clock` is the running clock (monotonic), `wall` the time
    written into entries; both injectable for simulated-time tests."""

    def __init__(self, directory: Path | str, process_index: int = 0, retention: float = 86400.0, *,
                 clock: Clock = time.monotonic, wall: Clock = time.time) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process_index = process_index
        self.path = self.directory / database_name(process_index)
        self.retention = retention
        self._clock, self._wall = clock, wall
        self._lock_file = open(self.directory / f"journal-p{process_index}.lock", "a")  # noqa: SIM115 - held open
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise JournalLocked(f"process index {process_index} is already taken: another live process holds "
                                f"{self.directory / f'journal-p{process_index}.lock'} (two processes started "
                                f"with -i {process_index}?)") from None
        self._db = _connect(self.path, writer=True)
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT seconds FROM running WHERE id = 0").fetchone()
        self._running_base = row[0] if row else 0.0
        self._opened = clock()
        self._read_lock = threading.Lock()
        self._reader = _connect(self.path)
        self._others: dict[Path, sqlite3.Connection] = {}
        self._queue: queue.SimpleQueue[tuple[str, tuple, Future | None] | None] = queue.SimpleQueue()
        self._next_sweep = self.running()  # the first batch sweeps
        self.commits = 0  # transactions committed (each a sync): fewer than writes when callers wait together
        legacy = self.directory / f"journal-p{process_index}.jsonl"
        if legacy.exists():
            self._import_legacy(legacy)
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name=f"bwsm-journal-p{process_index}", daemon=True)
        self._writer.start()

    # -- time --

    def running(self) -> float:
        """Seconds this index's journal has been open, over all its processes so far."""
        return self._running_base + self._clock() - self._opened

    # -- writes (any thread; never block on the disk unless waited for) --

    def _put(self, kind: str, args: tuple, wait: bool) -> Future | None:
        if self._closed:
            raise JournalClosed("journal closed")
        done: Future | None = Future() if wait else None
        self._queue.put((kind, args, done))
        return done

    def _intent(self, reference: str, audio_hash: str) -> Future:
        return self._put("intend", (reference, audio_hash, self._wall()), True)  # type: ignore[return-value]

    def _job(self, reference: str, job_id: str, audio_hash: str, attempts: int) -> Future:
        return self._put("record", (reference, job_id, audio_hash, self._wall(), attempts, None), True)  # type: ignore

    def intend(self, reference: str, audio_hash: str) -> None:
        """A POST for this reference is about to leave (durable on return): after a crash, look for its job first."""
        self._intent(reference, audio_hash).result()

    def record(self, reference: str, job_id: str, audio_hash: str, attempts: int = 1) -> None:
        """Make `reference -> job_id` (and the POST attempts it took) durable before anything else happens."""
        self._job(reference, job_id, audio_hash, attempts).result()

    async def intend_async(self, reference: str, audio_hash: str) -> None:
        """`intend` for the submission loop: the loop keeps running while the writer commits."""
        await asyncio.wrap_future(self._intent(reference, audio_hash))

    async def record_async(self, reference: str, job_id: str, audio_hash: str, attempts: int = 1) -> None:
        """`record` for the submission loop (see `intend_async`)."""
        await asyncio.wrap_future(self._job(reference, job_id, audio_hash, attempts))

    def mark_done(self, reference: str) -> None:
        """The chunk's result was emitted; the entry may go after `retention` (not waited for: losing it is
        harmless, the entry then leaves a little later)."""
        self._put("done", (reference, self._wall()), False)

    def forget(self, reference: str) -> None:
        """The job is gone at the server (expired, deleted): a new POST is the only way forward. The row stays as
        a marker that hides other processes' copies of the gone job until it expires."""
        self._put("forget", (reference, self._wall()), False)

    def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        done = self._put("flush", (), True)
        assert done is not None
        done.result()

    # -- reads --

    def lookup(self, reference: str) -> JournalEntry | None:
        """The entry of this process, else of another process's journal in the directory (copied into ours)."""
        with self._read_lock:
            row = self._reader.execute(_LOOKUP, (reference,)).fetchone()
            if row is not None:
                return None if row[1] == "" else JournalEntry(row[0], row[1], row[2], row[3], row[4])
            found = self._lookup_others(reference)
        if found is not None and found.job_id is not None:  # ours from now on: our done mark, our expiry
            self._put("record", (reference, found.job_id, found.audio_hash, found.written_at, found.attempts,
                                 found.done_at), False)
        return found

    async def lookup_async(self, reference: str) -> JournalEntry | None:
        """`lookup` in a thread: the submission loop never reads the disk itself."""
        return await asyncio.to_thread(self.lookup, reference)

    def _lookup_others(self, reference: str) -> JournalEntry | None:
        best: JournalEntry | None = None
        for path in sorted(self.directory.glob("journal-p*.sqlite3")):
            if path == self.path:
                continue
            try:
                db = self._others.get(path)
                if db is None:
                    db = self._others[path] = _connect(path)
                row = db.execute(_LOOKUP, (reference,)).fetchone()
            except sqlite3.DatabaseError as exc:  # a database being created or damaged: ours decides alone
                log.warning("journal %s unreadable: %s", path.name, exc)
                continue
            if row is None or row[1] == "":
                continue
            entry = JournalEntry(row[0], row[1], row[2], row[3], row[4])
            # A job id beats an intent; between two of a kind, the newer.
            if best is None or (entry.job_id is not None, entry.written_at) > (best.job_id is not None,
                                                                               best.written_at):
                best = entry
        return best

    # -- the writer thread --

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            batch = [item]
            while item is not None and len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                batch.append(item)
            stop = batch[-1] is None
            work = [entry for entry in batch if entry is not None]
            try:
                self._commit(work)
            except Exception as exc:  # a full disk, a damaged file: every waiter hears it, no write is dropped silently
                log.exception("journal write failed")
                _tell(work, exc)
            else:
                _tell(work, None)
            if stop:
                return

    def _commit(self, work: list[tuple[str, tuple, Future | None]]) -> None:
        now = self.running()
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for kind, group in itertools.groupby(work, key=lambda item: item[0]):
                if kind in _WRITES:
                    db.executemany(_WRITES[kind], [(*args, now) for _, args, _ in group])
            db.execute("INSERT INTO running (id, seconds) VALUES (0, ?1) ON CONFLICT (id) DO UPDATE SET seconds = ?1",
                       (now,))
            if now >= self._next_sweep:
                gone = db.execute("DELETE FROM jobs WHERE touched < ?", (now - self.retention,)).rowcount
                self._next_sweep = now + EXPIRE_EVERY_SECONDS
                if gone:
                    log.debug("journal: %d entries expired", gone)
            db.execute("COMMIT")  # synced before it returns (synchronous=FULL): only then are waiters told
            self.commits += 1
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

    def _import_legacy(self, path: Path) -> None:
        """Take over the JSON-lines journal of earlier versions (its own file), then set it aside."""
        work: list[tuple[str, tuple, Future | None]] = []
        with open(path, "rb") as handle:
            for raw in handle:
                try:
                    line = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue  # a line torn by a crash mid-write
                ref = line.get("r") if isinstance(line, dict) else None
                if not isinstance(ref, str):
                    continue
                if "j" in line:
                    attempts = line.get("a") if isinstance(line.get("a"), int) else 1
                    work.append(("record", (ref, str(line["j"]), str(line.get("h", "")), float(line.get("t", 0.0)),
                                            attempts, None), None))
                elif "p" in line:
                    work.append(("intend", (ref, str(line.get("h", "")), float(line["p"])), None))
                elif "d" in line:
                    work.append(("done", (ref, float(line["d"])), None))
        self._commit(work)
        path.rename(path.with_name(path.name + ".imported"))
        log.info("journal: %d lines of %s taken over", len(work), path.name)

    # -- figures and lifecycle --

    def entries(self) -> int:
        with self._read_lock:
            return self._reader.execute("SELECT count(*) FROM jobs").fetchone()[0]

    def size_bytes(self) -> int:
        """Bytes on disk: the database and its write-ahead log."""
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())

    def close(self) -> None:
        """Commit what is queued, stop the writer and release the index."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._writer.join()
        for db in (self._db, self._reader, *self._others.values()):
            db.close()
        self._lock_file.close()


def _tell(work: list[tuple[str, tuple, Future | None]], error: Exception | None) -> None:
    """Acknowledge (or fail) the writes waited for; a waiter that gave up (a cancelled task) is skipped."""
    for _, _, done in work:
        if done is None:
            continue
        with contextlib.suppress(InvalidStateError):  # cancelled meanwhile
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)


_journals: dict[tuple[Path, int], JobJournal] = {}
_journals_lock = threading.Lock()


def shared_journal(directory: Path | str | None, process_index: int, retention: float) -> JobJournal:
    """The process's one journal for a directory (None: the cache directory) and index: every submission service
    of the process writes through it (a second JobJournal on the same index would find it locked)."""
    path = (Path(directory) if directory else cache_journal_dir()).resolve()
    with _journals_lock:
        journal = _journals.get((path, process_index))
        if journal is None:
            journal = _journals[(path, process_index)] = JobJournal(path, process_index, retention)
            atexit.register(journal.close)  # the last done marks are committed at a normal exit
        return journal


def cache_journal_dir(cache: Path | None = None) -> Path:
    """The journal directory under the user's cache directory (`~/.cache` unless given)."""
    return (cache or Path.home() / ".cache") / "bytewax-speechmatics" / "journal"

