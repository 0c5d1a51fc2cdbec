"""The job journal: durable before acknowledged, exact across processes and restarts, bounded by its retention."""

from __future__ import annotations

import asyncio
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bytewax.speechmatics.connectors.speechmatics.journal import JobJournal, JournalLocked


class Clock:
    """A simulated clock: the journal's running clock and wall time both read it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1.7e9 + self.now


def journal_at(directory: Path, clock: Clock, index: int = 0, retention: float = 3600.0) -> JobJournal:
    return JobJournal(directory, index, retention, clock=clock, wall=clock.wall)


def test_entries_survive_a_killed_writer(tmp_path: Path) -> None:
    code = (
        "import os\n"
        "from bytewax.speechmatics.connectors.speechmatics.journal import JobJournal\n"
        f"j = JobJournal({str(tmp_path)!r}, 0)\n"
        "j.intend('call/0', 'h0')\n"
        "j.record('call/1', 'job-1', 'h1')\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False)
    assert proc.returncode == -9
    journal = JobJournal(tmp_path, 0)
    entry = journal.lookup("call/1")
    assert entry is not None and (entry.job_id, entry.audio_hash) == ("job-1", "h1")
    assert journal.lookup("call/0").intent_only
    journal.close()


WRITER = """
import os, sys
from bytewax.speechmatics.connectors.speechmatics.journal import JobJournal
j = JobJournal(sys.argv[1], 0)
j.intend("warm/0", "h")
os.write(1, b"BEGIN\\n")
j.record("call/1", "job-1", "h1")
os.write(1, b"ACK\\n")
j.close()
"""


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_a_write_is_synced_before_it_is_acknowledged(tmp_path: Path) -> None:
    """SIGKILL keeps the page cache, so a killed writer cannot show a missing sync; the system calls can. Between the
    caller starting a record and its return, the write-ahead log is written and then synced (fsync/fdatasync of
    that file) before the return: without the sync (synchronous=NORMAL/OFF), or with the acknowledgement before
    the commit, this fails."""
    trace = tmp_path / "trace"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.run(["strace", "-f", "-y", "-qq", "-o", str(trace), "-e",
                           "trace=write,pwrite64,fsync,fdatasync", sys.executable, str(script), str(tmp_path / "j")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = trace.read_text().splitlines()
    begin = next(i for i, line in enumerate(lines) if '"BEGIN\\n"' in line)
    ack = next(i for i, line in enumerate(lines) if '"ACK\\n"' in line)
    window = lines[begin:ack]
    wal_writes = [i for i, line in enumerate(window) if re.match(r"\d+\s+pwrite64\(", line) and "sqlite3-wal>" in line]
    assert wal_writes, "the record was not written to the database before it was acknowledged"
    syncs = [i for i, line in enumerate(window) if re.match(r"\d+\s+f(data)?sync\(", line) and "sqlite3-wal>" in line]
    assert syncs and syncs[-1] > wal_writes[-1], "the record's commit was acknowledged before it was synced"


def test_the_database_syncs_every_commit(tmp_path: Path) -> None:
    journal = JobJournal(tmp_path, 0)
    db = journal._db  # noqa: SLF001
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: the WAL is synced at each commit
    journal.close()


def test_a_done_mark_is_never_undone(tmp_path: Path) -> None:
    clock = Clock()
    journal = journal_at(tmp_path, clock)
    journal.record("c/0", "job-0", "h", attempts=2)
    journal.mark_done("c/0")
    journal.flush()
    done_at = journal.lookup("c/0").done_at
    assert done_at is not None
    clock.now += 10
    journal.record("c/0", "job-0", "h", attempts=2)  # the same job found again on a replay
    journal.intend("c/0", "h")  # an intent never hides a known job
    journal.flush()
    assert journal.lookup("c/0").done_at == done_at
    journal.record("c/0", "job-1", "h")  # another job (the first gone): not done yet
    assert journal.lookup("c/0").done_at is None
    journal.close()


def test_each_process_writes_only_its_own_and_a_stale_copy_elsewhere_changes_nothing(tmp_path: Path) -> None:
    clock = Clock()
    p1 = journal_at(tmp_path, clock, 1)
    p1.record("c/0", "job-0", "h")
    p1.mark_done("c/0")
    p1.close()
    p2 = journal_at(tmp_path, clock, 2)  # a stale copy (an older process, before the rescale)
    p2.record("c/0", "job-0", "h")
    p2.record("d/0", "job-d", "h", attempts=3)
    p2.close()
    before = (tmp_path / "journal-p2.sqlite3").read_bytes()
    p1 = journal_at(tmp_path, clock, 1)
    assert p1.lookup("c/0").done_at is not None  # ours decides, whatever another file holds
    found = p1.lookup("d/0")  # only in p2's journal: found, and taken over by p1
    assert (found.job_id, found.attempts) == ("job-d", 3)
    p1.mark_done("d/0")
    p1.flush()
    p1.close()
    assert (tmp_path / "journal-p2.sqlite3").read_bytes() == before  # p1 never wrote p2's database
    with sqlite3.connect(tmp_path / "journal-p1.sqlite3") as db:
        assert db.execute("SELECT done_at IS NOT NULL FROM jobs WHERE reference = 'd/0'").fetchone() == (1,)


def test_entries_leave_after_the_retention_in_running_time(tmp_path: Path) -> None:
    clock = Clock()
    journal = journal_at(tmp_path, clock, retention=3600)
    journal.record("done/0", "job-d", "h")
    journal.mark_done("done/0")
    journal.intend("intent/0", "h")  # a POST that never returned, and the chunk never finished
    journal.record("open/0", "job-o", "h")  # a job whose chunk never finished
    journal.close()
    clock.now += 7 * 86400  # a week down: downtime does not age entries
    journal = journal_at(tmp_path, clock, retention=3600)
    clock.now += 3000
    journal.record("new/0", "job-n", "h")  # a write sweeps expired entries: none yet
    assert journal.lookup("done/0") is not None and journal.lookup("open/0") is not None
    clock.now += 700  # 3700 running seconds after the first writes
    journal.record("newer/0", "job-nn", "h")
    assert [journal.lookup(r) is None for r in ("done/0", "intent/0", "open/0", "new/0", "newer/0")] == \
        [True, True, True, False, False]
    journal.close()


def test_a_job_found_gone_hides_other_processes_copies(tmp_path: Path) -> None:
    old = JobJournal(tmp_path, 3)
    old.record("c/0", "job-gone", "h")
    old.close()
    journal = JobJournal(tmp_path, 0)
    assert journal.lookup("c/0").job_id == "job-gone"
    journal.forget("c/0")
    journal.flush()
    assert journal.lookup("c/0") is None
    journal.intend("c/0", "h")  # the new POST's intent replaces the marker
    journal.record("c/0", "job-new", "h")
    journal.close()
    assert JobJournal(tmp_path, 0).lookup("c/0").job_id == "job-new"


def test_intent_before_post_is_durable_and_replaced_by_the_job_id(tmp_path: Path) -> None:
    journal = JobJournal(tmp_path, 0)
    journal.intend("c/0", "h0")
    journal.close()
    journal = JobJournal(tmp_path, 0)
    entry = journal.lookup("c/0")
    assert entry is not None and entry.intent_only and entry.audio_hash == "h0"
    journal.record("c/0", "job-0", "h0", attempts=3)
    journal.close()
    entry = JobJournal(tmp_path, 0).lookup("c/0")
    assert (entry.job_id, entry.attempts) == ("job-0", 3)


def test_a_second_live_process_with_the_same_index_stops_naming_it(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys\nfrom bytewax.speechmatics.connectors.speechmatics.journal import JobJournal\n"
        f"j = JobJournal({str(tmp_path)!r}, 1)\nprint('open', flush=True)\nsys.stdin.read()\n")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(JournalLocked, match="process index 1 is already taken"):
            JobJournal(tmp_path, 1)
        JobJournal(tmp_path, 0).close()  # another index is free
    finally:
        holder.communicate("", timeout=30)
    JobJournal(tmp_path, 1).close()  # free again once that process is gone


def test_concurrent_writers_forgets_and_lookups_never_fail_and_lose_nothing(tmp_path: Path) -> None:
    """The old journal's compaction closed the file between a sync's taking the handle and its fsync; there is no
    handle to close now, whatever runs at the same time."""
    journal = JobJournal(tmp_path, 0)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(50):
                journal.intend(f"t{n}/{i}", "h")
                journal.record(f"t{n}/{i}", f"job-{n}-{i}", "h")
                journal.forget(f"gone{n}/{i}")
                journal.mark_done(f"t{n}/{i}")
                journal.lookup(f"t{n}/{i // 2}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    journal.close()
    reopened = JobJournal(tmp_path, 0)
    assert all(reopened.lookup(f"t{n}/{i}").job_id == f"job-{n}-{i}" for n in range(8) for i in range(50))


def test_waiting_writes_share_commits_and_the_loop_keeps_running(tmp_path: Path) -> None:
    journal = JobJournal(tmp_path, 0)
    gate = threading.Event()
    commit = journal._commit  # noqa: SLF001

    def slow_commit(work: list) -> None:
        assert gate.wait(10), "the loop stood still while the journal wrote"
        commit(work)

    journal._commit = slow_commit  # noqa: SLF001 - a disk that answers only once the loop has done other work

    async def many() -> None:
        writes = [asyncio.ensure_future(journal.record_async(f"c/{i}", f"job-{i}", "h")) for i in range(100)]
        writes += [asyncio.ensure_future(journal.intend_async(f"d/{i}", "h")) for i in range(100)]
        await asyncio.sleep(0)  # the loop runs on while every write waits
        gate.set()
        await asyncio.gather(*writes)
        assert (await journal.lookup_async("c/7")).job_id == "job-7"

    asyncio.run(many())
    assert 1 <= journal.commits < 200
    journal.close()
    reopened = JobJournal(tmp_path, 0)
    assert all(reopened.lookup(f"c/{i}").job_id == f"job-{i}" for i in range(100))
    assert all(reopened.lookup(f"d/{i}").intent_only for i in range(100))


def test_the_json_lines_journal_of_earlier_versions_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / "journal-p0.jsonl").write_bytes(
        b'{"r":"a/0","p":1.0,"h":"h"}\n{"r":"a/0","j":"job-a","h":"h","t":2.0,"a":2}\n{"r":"a/0","d":3.0}\n'
        b'{"r":"b/0","p":4.0,"h":"hb"}\n{"r":"c/0","j":"jo')
    journal = JobJournal(tmp_path, 0)
    a = journal.lookup("a/0")
    assert (a.job_id, a.attempts, a.done_at) == ("job-a", 2, 3.0)
    assert journal.lookup("b/0").intent_only and journal.lookup("c/0") is None
    journal.close()
    assert not (tmp_path / "journal-p0.jsonl").exists()
    assert JobJournal(tmp_path, 0).lookup("a/0").job_id == "job-a"


def test_a_forget_while_a_record_is_syncing_cannot_fail_the_record(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The old journal took its file handle under the lock and fsynced it after releasing it; a compaction (each
    `forget`) closed the handle in between, and the record of a POSTed job failed with `ValueError: I/O operation on
    closed file`. Here a record is held exactly in that window (an append handle whose fileno() waits) while a
    forget runs."""
    from bytewax.speechmatics.connectors.speechmatics import journal as module

    entered, proceed = threading.Event(), threading.Event()

    class Gated:
        def __init__(self, handle) -> None:  # noqa: ANN001
            self._handle = handle

        def fileno(self) -> int:
            entered.set()
            proceed.wait(5)
            return self._handle.fileno()

        def __getattr__(self, name: str):  # noqa: ANN204
            return getattr(self._handle, name)

    def gated_open(file, mode="r", *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        handle = open(file, mode, *args, **kwargs)  # noqa: SIM115, PTH123
        return Gated(handle) if mode == "ab" else handle

    monkeypatch.setattr(module, "open", gated_open, raising=False)
    journal = JobJournal(tmp_path, 0)
    errors: list[BaseException] = []

    def record() -> None:
        try:
            journal.record("c/0", "job-0", "h")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    writer = threading.Thread(target=record)
    writer.start()
    entered.wait(2)  # the old journal's sync now holds a handle outside the lock (the new one has none)
    journal.forget("other/0")
    proceed.set()
    writer.join(10)
    assert errors == []
    assert journal.lookup("c/0").job_id == "job-0"


def test_a_waiter_that_gives_up_does_not_stop_the_writer(tmp_path: Path) -> None:
    """A fatal error cancels the submission loop's tasks while their writes are queued: the writer carries on."""
    journal = JobJournal(tmp_path, 0)
    gate = threading.Event()
    commit = journal._commit  # noqa: SLF001

    def held_commit(work: list) -> None:
        gate.wait(10)
        commit(work)

    journal._commit = held_commit  # noqa: SLF001

    async def cancel_one() -> None:
        task = asyncio.ensure_future(journal.record_async("c/0", "job-0", "h"))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(cancel_one())
    gate.set()
    journal._job("c/1", "job-1", "h", 1).result(timeout=10)  # noqa: SLF001 - times out if the writer died
    assert journal.lookup("c/0").job_id == "job-0"
    journal.close()
