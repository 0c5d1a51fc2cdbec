"""The job journal: durable across a new process, torn lines tolerated, compaction keeps live entries."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from bytewax.speechmatics.connectors.speechmatics.journal import JobJournal, default_journal_dir


def test_entries_survive_a_killed_writer(tmp_path) -> None:
    code = (
        "import os, sys\n"
        "from bytewax.speechmatics.connectors.speechmatics.journal import JobJournal\n"
        f"j = JobJournal({str(tmp_path)!r}, 0)\n"
        "j.record('call/1', 'job-1', 'h1')\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False)
    assert proc.returncode == -9
    entry = JobJournal(tmp_path, 1).lookup("call/1")
    assert entry is not None and (entry.job_id, entry.audio_hash) == ("job-1", "h1")


def test_torn_last_line_is_skipped_and_other_processes_files_are_read(tmp_path) -> None:
    JobJournal(tmp_path, 0).record("a/0", "job-a", "h")
    with open(tmp_path / "journal-p1.jsonl", "wb") as handle:
        handle.write(b'{"r":"b/0","j":"job-b","h":"h","t":1}\n{"r":"c/0","j":"jo')
    journal = JobJournal(tmp_path, 0)
    assert journal.lookup("a/0").job_id == "job-a"
    assert journal.lookup("b/0").job_id == "job-b"
    assert journal.lookup("c/0") is None


def test_compaction_drops_only_entries_done_before_the_retention(tmp_path) -> None:
    journal = JobJournal(tmp_path, 0, retention=3600)
    for i in range(5):
        journal.record(f"c/{i}", f"job-{i}", "h")
    journal.mark_done("c/1")
    path = tmp_path / "journal-p0.jsonl"
    with open(path, "a") as handle:  # c/0's result was emitted two hours ago
        handle.write(f'{{"r":"c/0","d":{time.time() - 7200}}}\n')
    compacted = JobJournal(tmp_path, 0, retention=3600)
    assert compacted.lookup("c/0") is None  # done beyond the retention
    assert compacted.lookup("c/1").done_at is not None  # done just now: kept for replays
    assert [compacted.lookup(f"c/{i}").job_id for i in range(1, 5)] == [f"job-{i}" for i in range(1, 5)]
    assert len(path.read_text().splitlines()) == 5  # 4 live jobs + 1 done mark


def test_forget_removes_a_gone_job(tmp_path) -> None:
    journal = JobJournal(tmp_path, 0)
    journal.record("c/0", "job-0", "h")
    journal.forget("c/0")
    assert JobJournal(tmp_path, 0).lookup("c/0") is None


def test_default_dir_follows_env_then_recovery_dir(tmp_path) -> None:
    assert default_journal_dir([], {"BWSM_JOURNAL_DIR": "/x/j"}) == Path("/x/j")
    recovery = tmp_path / "db"
    got = default_journal_dir(["bytewax.run", "f:flow", "-r", str(recovery)], {})
    assert got == tmp_path / "db-bwsm-journal"
    assert default_journal_dir([], {"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "bytewax-speechmatics" / "journal"


def test_intent_before_post_is_durable_and_replaced_by_the_job_id(tmp_path) -> None:
    journal = JobJournal(tmp_path, 0)
    journal.intend("c/0", "h0")
    reopened = JobJournal(tmp_path, 0)
    entry = reopened.lookup("c/0")
    assert entry is not None and entry.intent_only and entry.audio_hash == "h0"
    reopened.record("c/0", "job-0", "h0")
    reopened.intend("c/0", "h0")  # a later intent never hides a known job id
    assert JobJournal(tmp_path, 0).lookup("c/0").job_id == "job-0"


def test_attempts_survive_reopening_and_compaction(tmp_path) -> None:
    """A replayed result must carry the attempts of its first emission, so they are journalled with the id."""
    journal = JobJournal(tmp_path, 0)
    journal.record("c/0", "job-0", "h", attempts=3)
    journal.mark_done("c/0")
    assert JobJournal(tmp_path, 0).lookup("c/0").attempts == 3  # reopening compacts the file
    assert JobJournal(tmp_path, 0).lookup("c/0").attempts == 3  # and the compacted file keeps them
    with open(tmp_path / "journal-p1.jsonl", "wb") as handle:  # a line from before attempts were journalled
        handle.write(b'{"r":"old/0","j":"job-old","h":"h","t":1}\n')
    assert JobJournal(tmp_path, 0).lookup("old/0").attempts == 1


def test_lines_awaited_together_share_fsyncs_and_all_survive(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    journal = JobJournal(tmp_path, 0)
    fsyncs = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        fsyncs.append(fd)
        time.sleep(0.005)  # a disk's latency, so that waiters pile up behind one fsync
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)

    async def many() -> None:
        await asyncio.gather(*(journal.record_async(f"c/{i}", f"job-{i}", "h") for i in range(60)),
                             *(journal.intend_async(f"d/{i}", "h") for i in range(60)))

    asyncio.run(many())
    assert journal._synced == journal._written == 120  # noqa: SLF001 - every line is covered by an fsync
    assert 1 <= len(fsyncs) < 120
    reopened = JobJournal(tmp_path, 0)
    assert all(reopened.lookup(f"c/{i}").job_id == f"job-{i}" for i in range(60))
    assert all(reopened.lookup(f"d/{i}").intent_only for i in range(60))
