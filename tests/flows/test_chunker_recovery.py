"""The chunker in a real Bytewax dataflow: a run that crashes and resumes from recovery cuts the same chunks."""

from __future__ import annotations

import dataclasses
import os
import random
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main
from test_chunking_helpers import add_duplicates, bounded_shuffle, frames_for, strip_clock

from bytewax.speechmatics.flows.chunker import chunk_calls
from bytewax.speechmatics.flows.chunking import ChunkConfig
from bytewax.speechmatics.flows.decode import decode_frames
from bytewax.speechmatics.schemas.chunks import CallStarted, Chunk
from bytewax.speechmatics.schemas.frames import encode_frame

CONFIG = ChunkConfig(chunk_seconds=0.5, overlap_seconds=0.05, reorder_window_frames=4)
FORMATS = [(8000, "mulaw", 1), (16000, "pcm_s16le", 2), (48000, "pcm_s16le", 1)]


def call_messages(rng: random.Random) -> tuple[list[KafkaSourceMessage], dict[str, bytes]]:
    """Three interleaved calls, reordered and with replays, as the Kafka messages of one partition."""
    per_call, audio_of = [], {}
    for n, fmt in enumerate(FORMATS):
        rate, encoding, channels = fmt
        width = (2 if encoding == "pcm_s16le" else 1) * channels
        audio_of[f"call-{n}"] = audio = rng.randbytes(int(rate * rng.uniform(1.5, 2.5)) * width)
        frames = frames_for(f"call-{n}", audio, [rate // 50], fmt)
        per_call.append(add_duplicates(bounded_shuffle(frames, CONFIG.reorder_window_frames, rng), 5, rng))
    merged = []
    while any(per_call):
        queue = rng.choice([q for q in per_call if q])
        merged.append(queue.pop(0))
    messages = [KafkaSourceMessage(*encode_frame(f)[:2], topic="calls.audio", headers=encode_frame(f)[2],
                                   offset=i, partition=0) for i, f in enumerate(merged)]
    return messages, audio_of


def chunking_flow(items: list, sink: list) -> Dataflow:
    flow = Dataflow("chunker_recovery")
    decoded = decode_frames("decode", op.input("in", flow, TestingSource(items)))
    op.output("out", chunk_calls("chunker", decoded.oks, CONFIG).oks, TestingSink(sink))
    return flow


def by_reference(outputs: list[tuple[str, Chunk | CallStarted]]) -> dict[str, set[Chunk | CallStarted]]:
    """Chunk reference (or `started/<call>` for the call's announcement) -> every version of it that came out."""
    found: dict[str, set[Chunk | CallStarted]] = {}
    for _, item in outputs:
        ref = item.span.reference if isinstance(item, Chunk) else f"started/{item.call_id}"
        found.setdefault(ref, set()).add(strip_clock(item))
    return found


def test_a_crashed_and_resumed_run_cuts_the_same_chunks(tmp_path: Path) -> None:
    messages, audio_of = call_messages(random.Random(11))
    clean: list = []
    run_main(chunking_flow(messages, clean))
    expected = by_reference(clean)
    for call_id, audio in audio_of.items():
        chunks = sorted((c for c, in expected.values() if isinstance(c, Chunk) and c.span.call_id == call_id),
                        key=lambda c: c.span.index)
        assert b"".join(c.new_audio for c in chunks) == audio and chunks[-1].span.last

    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    aborts = sorted(random.Random(5).sample(range(20, len(messages) - 5), 4))
    items = list(messages)
    for at in reversed(aborts):
        items.insert(at, TestingSource.ABORT())
    resumed: list = []
    per_run = []
    for _ in range(len(aborts) + 1):
        before = len(resumed)
        run_main(chunking_flow(items, resumed), epoch_interval=timedelta(0), recovery_config=recovery)
        per_run.append(resumed[before:])
    got = by_reference(resumed)
    assert all(len(versions) == 1 for versions in got.values()), "a chunk came out differently after a resume"
    assert got == expected
    # The runs really resumed (from the last snapshot, not from the start): no run repeats the first chunk.
    first = next(c for _, c in clean if isinstance(c, Chunk)).span.reference
    assert sum(1 for run in per_run for _, c in run if isinstance(c, Chunk) and c.span.reference == first) == 1
    assert os.listdir(tmp_path)


def test_an_idle_call_is_flushed_by_the_timer_and_continues_after(tmp_path: Path) -> None:
    config = dataclasses.replace(CONFIG, idle_timeout_seconds=0.05, chunk_seconds=30)
    frames = frames_for("call-x", bytes(8000 * 2), [800], (8000, "pcm_s16le", 1))
    first, rest = frames[:4], frames[4:]
    messages = [KafkaSourceMessage(*encode_frame(f)[:2], topic="t", headers=encode_frame(f)[2], offset=f.seq,
                                   partition=0) for f in frames]
    items = [*messages[: len(first)], TestingSource.PAUSE(timedelta(seconds=2)), *messages[len(first):]]
    out: list = []
    flow = Dataflow("chunker_idle")
    decoded = decode_frames("decode", op.input("in", flow, TestingSource(items)))
    cut = chunk_calls("chunker", decoded.oks, config)
    op.output("out", op.merge("all", cut.oks, op.map("keyed", cut.errs, lambda dl: ("", dl))), TestingSink(out))
    run_main(flow)
    spans = [c.span for _, c in out if isinstance(c, Chunk)]
    assert [(s.index, s.start_sample, s.end_sample, s.last) for s in spans] == [
        (0, 0, 800 * len(first), True), (1, 800 * len(first), 800 * len(frames), True)]
    assert len(rest) > 0
