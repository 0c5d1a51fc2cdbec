"""ChunkerLogic's timers and lifecycle, driven directly (deadlines are moved, never slept on)."""

from __future__ import annotations

import pickle
import time
from dataclasses import replace

from bytewax.operators import StatefulBatchLogic

from bytewax.speechmatics.flows.chunker import ChunkerLogic
from bytewax.speechmatics.flows.chunking import ChunkConfig
from bytewax.speechmatics.schemas.chunks import CallStarted
from bytewax.speechmatics.schemas.frames import AudioFrame

CONFIG = ChunkConfig(idle_timeout_seconds=10, forget_seconds=600)


def frame(seq: int, end: bool = False) -> AudioFrame:
    return AudioFrame("call-7", seq, b"\x01\x00" * 160, 8000, end=end)


def expire(logic: ChunkerLogic) -> None:
    """As if the call had been quiet past any timeout: its deadline and its last activity lie in the past."""
    logic.deadline = time.time() - 1
    logic.touched_at = time.time() - 100_000


def test_a_deadline_that_comes_while_the_call_is_active_is_pushed_on() -> None:
    logic = ChunkerLogic(CONFIG, None)
    logic.on_batch([frame(0)])
    first = logic.notify_at()
    logic.on_batch([frame(1)])
    assert logic.notify_at() is first  # not re-filed on every batch
    logic.deadline = time.time() - 1  # the deadline came, but the call was active since
    assert logic.on_notify() == ([], StatefulBatchLogic.RETAIN)
    assert 0 < logic.notify_at().timestamp() - time.time() <= CONFIG.idle_timeout_seconds


def test_idle_flush_then_tombstone_then_forget() -> None:
    logic = ChunkerLogic(CONFIG, None)
    assert logic.notify_at() is None
    out, discard = logic.on_batch([frame(0), frame(1)])
    assert [type(o) for o in out] == [CallStarted] and discard is StatefulBatchLogic.RETAIN  # announced, no chunk
    idle_at = logic.notify_at().timestamp()
    assert 0 < idle_at - time.time() <= 10
    assert logic.on_notify() == ([], StatefulBatchLogic.RETAIN)  # woken early: nothing happens
    expire(logic)
    out, discard = logic.on_notify()
    assert [(c.span.index, c.span.end_sample, c.span.last) for c in out] == [(0, 320, True)]
    assert discard is StatefulBatchLogic.RETAIN
    assert 10 < logic.notify_at().timestamp() - time.time() <= 600  # the tombstone waits to be forgotten
    tombstone = logic.snapshot()
    assert not tombstone.audio and tombstone.index == 1 and tombstone.next_seq == 2
    assert len(pickle.dumps(tombstone)) < 600
    expire(logic)
    assert logic.on_notify() == ([], StatefulBatchLogic.DISCARD)


def test_a_revived_call_continues_and_a_restored_one_gets_a_fresh_idle_timer() -> None:
    logic = ChunkerLogic(CONFIG, None)
    logic.on_batch([frame(0)])
    expire(logic)
    logic.on_notify()
    logic.on_batch([frame(1)])
    restored = ChunkerLogic(CONFIG, pickle.loads(pickle.dumps(logic.snapshot())))
    assert 0 < restored.notify_at().timestamp() - time.time() <= 10
    out, _ = restored.on_batch([frame(2, end=True)])
    assert [(c.span.index, c.span.start_sample, c.span.end_sample, c.span.last) for c in out] == [(1, 160, 480, True)]
    assert 10 < restored.notify_at().timestamp() - time.time() <= 600


def test_restarts_do_not_keep_a_flushed_call_forever() -> None:
    """The forget timer of an ended call runs from its last activity, not from the latest restore."""
    logic = ChunkerLogic(CONFIG, None)
    logic.on_batch([frame(0), frame(1, end=True)])
    ended = pickle.loads(pickle.dumps(logic.snapshot()))
    assert ended.touched_at > 0
    resumed = ChunkerLogic(CONFIG, ended)
    assert abs(resumed.notify_at().timestamp() - (ended.touched_at + CONFIG.forget_seconds)) < 1e-3  # datetime: µs
    old = ChunkerLogic(CONFIG, replace(ended, touched_at=time.time() - CONFIG.forget_seconds - 1))
    assert old.on_notify() == ([], StatefulBatchLogic.DISCARD)
