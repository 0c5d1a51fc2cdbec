"""The stitching operator inside Bytewax: several calls, results out of order, and crash + resume replays
that produce byte-identical events."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
import orjson
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main
from test_stitch_properties import RATE, VALIDATOR, engine_result, expected_words

from bytewax.speechmatics.connectors.worker.engines.reference import TruthWord
from bytewax.speechmatics.flows.segments import Produced
from bytewax.speechmatics.flows.stitcher import stitch_calls
from bytewax.speechmatics.flows.stitching import StitchSettings
from bytewax.speechmatics.schemas.chunks import ChunkResult, ChunkSpan


def call(call_id: str, rng: random.Random) -> tuple[list[ChunkResult], list[TruthWord], list[ChunkSpan]]:
    truth, t = [], 0.3
    while t < 40:
        d = rng.uniform(0.1, 0.7)
        truth.append(TruthWord(rng.choice(["yes", "no", "maybe"]), t, t + d, speaker=rng.choice(["v1", "v2"])))
        t += d + rng.choice([0.0, 0.1, 0.4])
    total, spans, start, overlap = int(t * RATE) + 100, [], 0, 0
    while True:
        end = min(total, start + overlap + int(rng.uniform(4, 9) * RATE))
        spans.append(ChunkSpan(call_id, len(spans), start, end, overlap, RATE, "pcm_s16le", 1, last=end == total,
                               closed_at=1000.0 + len(spans)))
        if end == total:
            break
        overlap = int(0.3 * RATE)
        start = end - overlap
    results = [engine_result(truth, s, "midpoint") for s in spans]
    failed = rng.randrange(1, len(results) - 1)
    results[failed] = ChunkResult(spans[failed], error="job rejected", job_id=f"job-{failed}")
    return results, truth, spans


def flow_of(items: list, out: list) -> Dataflow:
    flow = Dataflow("stitch_test")
    results = op.input("in", flow, TestingSource(items))
    events = stitch_calls("stitch", results, StitchSettings(linger_seconds=3600)).oks
    op.output("out", events, TestingSink(out))
    return flow


def calls() -> tuple[list, dict]:
    rng = random.Random(3)
    items, truth = [], {}
    for n in range(3):
        results, words, spans = call(f"call-{n}", rng)
        truth[f"call-{n}"] = (words, spans, results)
        items.extend((f"call-{n}", r) for r in results)
    rng.shuffle(items)
    return items, truth


def test_calls_are_stitched_in_chunk_order_whatever_the_arrival_order() -> None:
    items, truth = calls()
    out: list = []
    run_main(flow_of(items, out))
    for call_id, (words, spans, results) in truth.items():
        produced = [p for key, p in out if key == call_id]
        assert all(isinstance(p, Produced) for p in produced)
        evs = [p.event for p in produced]
        for event in evs:
            VALIDATOR.validate(event)
        segments = [e for e in evs if e["type"] == "segment"]
        # One segment per chunk, in order (plus, when a chunk failed, a tail event of the chunk before it).
        indices = [e["job"]["chunk_index"] for e in segments]
        assert indices == sorted(indices) and set(indices) == set(range(len(spans)))
        assert len(indices) <= len(spans) + 1
        assert evs[-1]["type"] == "call_completed" and sum(e["type"] == "call_completed" for e in evs) == 1
        assert evs[-1]["counts"]["failed_chunks"] == 1
        # The latency clock travels beside each event: the closed_at of the chunk it came from.
        assert [p.closed_at for p in produced[:-1]] == [spans[i].closed_at for i in indices]
        assert produced[-1].closed_at == spans[-1].closed_at
        # Words: the truth minus what only the failed chunk heard.
        failed = next(r.span for r in results if r.error)
        heard = expected_words(words, [s for s in spans if s != failed], "midpoint")
        got = [(w["text"], w["speaker"]) for e in segments for w in e["words"]]
        assert got == [(text, speaker) for text, _, _, speaker in heard]


def test_a_crashed_and_resumed_stitcher_emits_identical_events(tmp_path: Path) -> None:
    items, _ = calls()
    clean: list = []
    run_main(flow_of(items, clean))
    expected = {p.event["event_id"]: orjson.dumps(p.event) for _, p in clean}
    assert len(expected) == len(clean)

    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    aborts = sorted(random.Random(9).sample(range(3, len(items) - 2), 3))
    with_aborts = list(items)
    for at in reversed(aborts):
        with_aborts.insert(at, TestingSource.ABORT())
    resumed: list = []
    for _ in range(len(aborts) + 1):
        run_main(flow_of(with_aborts, resumed), epoch_interval=timedelta(0), recovery_config=recovery)
    seen: dict[str, set[bytes]] = {}
    for _, p in resumed:
        seen.setdefault(p.event["event_id"], set()).add(orjson.dumps(p.event))
    assert all(len(versions) == 1 for versions in seen.values()), "an event came out differently after a resume"
    assert {k: next(iter(v)) for k, v in seen.items()} == expected
    # The runs resumed from their snapshots instead of starting over: the first event came out once.
    first = clean[0][1].event["event_id"]
    assert sum(1 for _, p in resumed if p.event["event_id"] == first) == 1
