"""The whole micro-batch flow with a real broker and the local worker (reference engine): correctness end to end,
through SIGKILL + recovery, and on a 2-process cluster.

12 calls of 2-3 minutes with known truth (4-6 chunks each, over 4 partitions) are published at full speed. A
baseline run (1 process, no crash) is the reference the other runs are compared with, event for event (minus the job
id, which the server assigns per run).
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
from e2e_harness import (
    FlowRun,
    OutputReader,
    Topics,
    TruthCall,
    distinct_events,
    flow_env,
    free_port,
    publish,
    repeated_with_other_bytes,
    start_flow,
    stitched_words,
    without_run_specific,
)
from worker_fixtures import synthetic_call, with_pauses

from bytewax.speechmatics.connectors.worker.control import WorkerProcess, start_worker
from bytewax.speechmatics.schemas import CallTranscript

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

CALLS = 12  # enough to spread over the 4 partitions and both processes of the cluster run, and to be killed mid-way
DEADLINE_S = 420


def make_calls(prefix: str) -> list[TruthCall]:
    rng = random.Random(8)
    calls = []
    for i in range(CALLS):
        seconds = rng.uniform(120, 180)
        audio, words = with_pauses(*synthetic_call(seconds, seed=100 + i), seed=100 + i)  # silences to compact
        calls.append(TruthCall(f"{prefix}-{i:02d}", audio, words))
    return calls


@pytest.fixture(scope="module")
def calls() -> list[TruthCall]:
    return make_calls("e2e")


def fresh_topics(kafka_bootstrap: str) -> Topics:
    from confluent_kafka.admin import AdminClient, NewTopic

    suffix = random.getrandbits(40)
    topics = Topics(f"audio-{suffix:x}", f"rt-{suffix:x}", f"transcripts-{suffix:x}", f"dlq-{suffix:x}")
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    specs = [NewTopic(topics.audio, 4, 1), NewTopic(topics.rt, 2, 1), NewTopic(topics.transcripts, 4, 1),
             NewTopic(topics.dlq, 1, 1)]
    for future in admin.create_topics(specs).values():
        future.result(30)
    return topics


def worker_with(calls: list[TruthCall]) -> WorkerProcess:
    worker = start_worker(engine="reference", parallel=8)
    for call in calls:
        worker.admin.register_call(call.call_id, call.audio, call.words)
    return worker


def check_alive(*runs: FlowRun) -> None:
    for run in runs:
        assert run.alive(), f"flow exited with {run.proc.returncode}:\n{run.log()}"


def all_completed(calls: list[TruthCall]):  # noqa: ANN201
    return lambda out: out.completed() >= {c.call_id for c in calls}


def run_to_completion(kafka_bootstrap: str, calls: list[TruthCall], tmp: Path, processes: int = 1) -> dict:
    """Publish the calls, run the flow (1 or 2 processes) until every call completed; return the output."""
    topics = fresh_topics(kafka_bootstrap)
    worker = worker_with(calls)
    reader = OutputReader(kafka_bootstrap, topics)
    env = flow_env(kafka_bootstrap, topics, worker, tmp / "journal")
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
    runs = [start_flow(env, tmp / f"flow-{i}.log", cluster=(i, addresses) if processes > 1 else None)
            for i in range(processes)]
    try:
        publish(kafka_bootstrap, topics.audio, calls)
        out = reader.poll_until(all_completed(calls), DEADLINE_S, check=lambda: check_alive(*runs))
        return {"output": out, "stats": worker.admin.stats()}
    finally:
        for run in runs:
            run.stop()
        reader.close()
        worker.stop()


@pytest.fixture(scope="module")
def baseline(kafka_bootstrap: str, calls: list[TruthCall], tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_to_completion(kafka_bootstrap, calls, tmp_path_factory.mktemp("baseline"))


def jobs_by_reference(stats: dict) -> dict[str, int]:
    return stats["jobs_by_reference"]


def test_every_call_comes_out_exactly_as_its_truth(baseline: dict, calls: list[TruthCall]) -> None:
    by_call = baseline["output"].by_call()
    for call in calls:
        events = by_call[call.call_id]
        assert stitched_words(events) == call.truth_texts(), call.call_id
        # Silence compaction (on by default) sends each chunk's speech with its pauses shortened: every word and
        # mark still comes back at its time in the call.
        times = [(w["start_time"], w["end_time"]) for e in distinct_events(events).values()
                 if e["type"] == "segment" for w in e["words"]]
        truth = [(w["start_time"], w["end_time"]) for w in call.words]
        assert len(times) == len(truth) and all(abs(a - c) < 1e-3 and abs(b - d) < 1e-3
                                                for (a, b), (c, d) in zip(times, truth, strict=True)), call.call_id
        counts = events[-1]["counts"]
        assert 0 < counts["billed_seconds"] < counts["audio_seconds"] - 5  # the pauses were not paid for
        final = CallTranscript.from_events(events).to_document()  # what a consumer reads: the final document
        assert final["completed"] and [w["text"] for w in final["words"]] == call.truth_texts(), call.call_id
        assert [e["type"] for e in events].count("call_completed") == 1
        assert events[-1]["type"] == "call_completed"
        indexes = [e["job"]["chunk_index"] for e in events if e["type"] == "segment"]
        assert indexes == list(range(len(indexes))), f"{call.call_id}: segments out of order {indexes}"
        assert len(indexes) >= 4  # 2-3 minutes in chunks of at most 35 s
        completed = events[-1]
        assert completed["counts"]["chunks"] == len(indexes) and completed["counts"]["failed_chunks"] == 0
    assert all(count == 1 for count in jobs_by_reference(baseline["stats"]).values())


def test_sigkill_twice_and_recovery_change_nothing(kafka_bootstrap: str, calls: list[TruthCall], baseline: dict,
                                                  tmp_path: Path) -> None:
    """Two SIGKILLs while the worker answers some requests with 429/503: the same events, each repeated event
    byte-identical to its first emission (job attempts included), and no chunk lost or paid twice."""
    topics = fresh_topics(kafka_bootstrap)
    worker = worker_with(calls)
    worker.admin.set_faults({"rates": {"post": {"429": 0.2, "503": 0.05}, "get": {"503": 0.05}}, "seed": 11})
    reader = OutputReader(kafka_bootstrap, topics)
    recovery = tmp_path / "recovery"
    from bytewax.recovery import init_db_dir

    recovery.mkdir()
    init_db_dir(recovery, 1)
    env = flow_env(kafka_bootstrap, topics, worker, tmp_path / "journal")
    rng = random.Random(2026)
    run = start_flow(env, tmp_path / "flow.log", recovery=recovery)
    kills = 0
    try:
        publish(kafka_bootstrap, topics.audio, calls)
        total_events = sum(len(e) for e in baseline["output"].by_call().values())
        for _ in range(2):
            # Kill at a random point while work is under way: after a random share of the events has appeared.
            target = len(reader.output.events) + rng.randint(5, max(6, total_events // 4))
            reader.poll_until(lambda out, t=target: len(out.events) >= t, DEADLINE_S,
                              check=lambda r=run: check_alive(r))
            run.kill()
            kills += 1
            run = start_flow(env, tmp_path / "flow.log", recovery=recovery)
        out = reader.poll_until(all_completed(calls), DEADLINE_S, check=lambda: check_alive(run))
        stats = worker.admin.stats()
    finally:
        run.stop()
        reader.close()
        worker.stop()
    assert kills == 2
    repeated = [eid for eid, values in out.raw.items() if len(values) > 1]
    assert repeated_with_other_bytes(out) == {}, f"{len(repeated)} ids repeated, some with other bytes"
    assert any(e.get("job", {}).get("attempts", 0) > 1 for e in out.events)  # the faults did cost retries
    crashed = {k: without_run_specific(v) for k, v in distinct_events(out.events).items()}
    expected = {k: without_run_specific(v) for k, v in distinct_events(baseline["output"].events).items()}
    assert crashed.keys() == expected.keys()
    assert crashed == expected
    refs = jobs_by_reference(stats)
    assert refs.keys() == jobs_by_reference(baseline["stats"]).keys()  # zero lost chunks
    duplicates = {r: n for r, n in refs.items() if n != 1}
    assert duplicates == {}, explain_duplicates(duplicates, tmp_path)


def explain_duplicates(duplicates: dict[str, int], tmp_path: Path) -> str:
    """What the flow's log and its journal say about the references that got more than one job."""
    def about(path: Path, marker: str) -> list[str]:
        text = path.read_text(errors="replace") if path.exists() else ""
        return [line for line in text.splitlines() if any(marker.format(r) in line for r in duplicates)]

    journal = [str(row) for f in sorted((tmp_path / "journal").glob("journal-p*.sqlite3"))
               for row in sqlite3.connect(f).execute("SELECT * FROM jobs") if row[0] in duplicates]
    return "\n".join([f"duplicate jobs: {duplicates}", "flow log:", *about(tmp_path / "flow.log", "reference={}"),
                      "journal:", *journal])


def test_two_process_cluster_matches_one_process(kafka_bootstrap: str, calls: list[TruthCall], baseline: dict,
                                                 tmp_path: Path) -> None:
    clustered = run_to_completion(kafka_bootstrap, calls, tmp_path, processes=2)
    got = {k: without_run_specific(v) for k, v in distinct_events(clustered["output"].events).items()}
    expected = {k: without_run_specific(v) for k, v in distinct_events(baseline["output"].events).items()}
    assert got == expected
    assert all(count == 1 for count in jobs_by_reference(clustered["stats"]).values())
