"""The journal's size bound on a simulated clock: 24 h at 10 POST/s, the cluster restarted every hour.

Every restart leaves the jobs then in flight never marked done (the old journal kept those forever, and every
process held the whole cluster's entries). Retention counts the journal's running time, so the bound is
(POST rate) x (retention) rows whatever the restarts; the figures are printed for the README.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bytewax.speechmatics.connectors.speechmatics.journal import JobJournal
from bytewax.speechmatics.flows.run_args import RunArgs
from bytewax.speechmatics.flows.settings import replay_horizon

POST_RATE = 10  # per second
HOURS = 24
CHUNK_SECONDS = 30  # from POST to done mark
DOWNTIME = 60.0  # seconds between a crash and the restart (not running time: entries do not age)
# Traffic is applied a simulated minute at a time (one transaction each): the rows are the same, the test is fast.


def simulate(directory: Path, retention: float) -> tuple[int, int, int]:
    """(rows, bytes, rows at most) after HOURS of traffic with a crash and restart at every hour."""
    clock = [0.0]
    most = 0
    serial = 0
    for _hour in range(HOURS):
        journal = JobJournal(directory, 0, retention, clock=lambda: clock[0], wall=lambda: 1.7e9 + clock[0])
        in_flight: list[str] = []
        for _minute in range(60):
            wall = 1.7e9 + clock[0]
            refs = [f"call-{n // 40}/{n % 40}" for n in range(serial, serial + POST_RATE * 60)]
            serial += len(refs)
            batch = [("intend", (ref, "h", wall), None) for ref in refs]
            batch += [("record", (ref, f"job-{ref}", "h", wall, 1, None), None) for ref in refs]
            in_flight += refs
            done, in_flight = in_flight[:-POST_RATE * CHUNK_SECONDS], in_flight[-POST_RATE * CHUNK_SECONDS:]
            batch += [("done", (ref, wall), None) for ref in done]
            journal._commit(batch)  # noqa: SLF001 - a simulated minute per transaction, without the writer thread
            clock[0] += 60.0
        most = max(most, journal.entries())
        journal.close()  # the crash: the last CHUNK_SECONDS of jobs are never marked done
        clock[0] += DOWNTIME
    journal = JobJournal(directory, 0, retention)
    rows, size = journal.entries(), journal.size_bytes()
    journal.close()
    return rows, size, most


@pytest.mark.slow  # about 9 s of CPU: 864,000 POSTs
def test_a_day_at_ten_posts_a_second_with_hourly_restarts_stays_bounded(tmp_path: Path) -> None:
    retention = replay_horizon(RunArgs(), 900.0)  # the default: 4510 running seconds
    rows, size, most = simulate(tmp_path, retention)
    bound = POST_RATE * (retention + CHUNK_SECONDS + 2 * 60)  # + the done mark's delay and a sweep interval
    print(f"\njournal after {HOURS} h at {POST_RATE} POST/s, restarted hourly, retention {retention:.0f} s: "
          f"{rows} entries, {size} bytes on disk (most entries at once {most}, bound {bound:.0f})")
    assert most <= bound
    assert rows <= bound
    assert size <= bound * 300  # bytes per row, page overhead and the write-ahead log included
