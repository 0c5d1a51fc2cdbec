"""Snapshot values stay readable by the next version: a field added since the snapshot takes its default, a field
removed is dropped, old forms (a frozen slotted class's list of values, a slotted class's (dict, slots)) are read,
and every class reachable from an operator's state is evolvable."""

from __future__ import annotations

import dataclasses
import pickle
import sys
import types
import typing
from dataclasses import dataclass, field

import pytest

from bytewax.speechmatics.flows.chunking import CallSnapshot
from bytewax.speechmatics.flows.collector import CollectState
from bytewax.speechmatics.flows.realtime import RealtimeState
from bytewax.speechmatics.flows.stitcher import StitchState
from bytewax.speechmatics.flows.submitter import SubmitState
from bytewax.speechmatics.schemas.call_start import CallConfig, CallSettings
from bytewax.speechmatics.schemas.chunks import Chunk, ChunkSpan
from bytewax.speechmatics.schemas.snapshots import SnapshotError, evolvable

#: The state types of the flow's stateful operators (chunker, submitter, stitcher, real-time, collector).
STATE_ROOTS = (CallSnapshot, SubmitState, StitchState, RealtimeState, CollectState)
SHAPES = [{"frozen": True, "slots": True}, {"slots": True}, {}]


def reachable(root: type, seen: dict[type, str], path: str = "") -> None:
    """Every class the type hints of `root` can hold, recursively, with the field path that reaches it."""
    origin_args = typing.get_args(root)
    if typing.get_origin(root) is not None or isinstance(root, types.UnionType):
        for arg in origin_args:
            reachable(arg, seen, path)
        return
    if not isinstance(root, type) or root in seen:
        return
    if dataclasses.is_dataclass(root):
        seen[root] = path or root.__name__
        for name, hint in typing.get_type_hints(root).items():
            reachable(hint, seen, f"{seen[root]}.{name}")
    elif root.__module__.startswith("bytewax.speechmatics"):
        seen[root] = path


def is_evolvable(cls: type) -> bool:
    setstate = cls.__dict__.get("__setstate__")
    return setstate is not None and setstate.__module__ == "bytewax.speechmatics.schemas.snapshots"


def test_every_class_an_operators_state_can_hold_is_evolvable() -> None:
    seen: dict[type, str] = {}
    for root in STATE_ROOTS:
        reachable(root, seen)
    assert len(seen) >= 20  # the walk really descends (chunks, settings, timeline units, speakers ...)
    assert {f"{cls.__qualname__} ({path})" for cls, path in seen.items() if not is_evolvable(cls)} == set()


def versions(shape: dict, v2_fields: str) -> tuple[type, type]:
    """Two versions of one class, `Rec`, that pickle finds under the same module and name."""
    module = types.ModuleType("bwsm_snapshot_test_rec")
    sys.modules[module.__name__] = module

    def define(source: str) -> type:
        namespace: dict = {"dataclass": dataclass, "field": field, "evolvable": evolvable}
        exec(source, namespace)  # noqa: S102 - the test's own class definitions
        cls = namespace["Rec"]
        cls.__module__ = module.__name__
        module.Rec = cls
        return cls

    args = ", ".join(f"{k}=True" for k in shape)
    v1 = define(f"@evolvable\n@dataclass({args})\nclass Rec:\n    a: int\n    b: str = 'x'\n")
    v2 = define(f"@evolvable\n@dataclass({args})\nclass Rec:\n{v2_fields}")
    module.Rec = v1
    return v1, v2


@pytest.mark.parametrize("shape", SHAPES, ids=["frozen-slots", "slots", "plain"])
def test_a_field_added_with_a_default_is_filled_and_a_removed_one_dropped(shape: dict) -> None:
    v1, v2 = versions(shape, "    a: int\n    c: list = field(default_factory=list)\n    d: float = 2.5\n")
    blob = pickle.dumps(v1(7, "y"))
    sys.modules["bwsm_snapshot_test_rec"].Rec = v2  # the upgrade
    restored = pickle.loads(blob)  # noqa: S301 - the test's own bytes
    assert (restored.a, restored.c, restored.d) == (7, [], 2.5)
    assert not hasattr(restored, "b") or "b" not in {f.name for f in dataclasses.fields(v2)}


@pytest.mark.parametrize("shape", SHAPES, ids=["frozen-slots", "slots", "plain"])
def test_a_field_added_without_a_default_is_an_error_naming_it(shape: dict) -> None:
    v1, v2 = versions(shape, "    a: int\n    e: int\n")
    blob = pickle.dumps(v1(1))
    sys.modules["bwsm_snapshot_test_rec"].Rec = v2
    with pytest.raises(SnapshotError, match="a snapshot of Rec has no 'e'"):
        pickle.loads(blob)  # noqa: S301


def span() -> ChunkSpan:
    return ChunkSpan("call-1", 2, 32000, 64000, 1600, 16000, "pcm_s16le", 2, last=True)


def test_the_forms_earlier_versions_wrote_are_read() -> None:
    """Before `evolvable`, a frozen slotted dataclass pickled a list of its values (dataclasses' own form) and a
    slotted one (None, slots); a list from a version with fewer fields fills the rest with defaults."""
    whole = span()
    values = [getattr(whole, f.name) for f in dataclasses.fields(ChunkSpan)]
    old = object.__new__(ChunkSpan)
    old.__setstate__(values)
    assert old == whole
    required = [f for f in dataclasses.fields(ChunkSpan) if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    shorter = object.__new__(ChunkSpan)
    shorter.__setstate__(values[:len(required)])  # an older version: only the fields without defaults
    assert shorter == dataclasses.replace(whole, **{f.name: ChunkSpan.__dataclass_fields__[f.name].default
                                                    for f in dataclasses.fields(ChunkSpan)[len(required):]
                                                    if f.default is not dataclasses.MISSING})
    state = RealtimeState(language="de", words=4)
    old_state = object.__new__(RealtimeState)
    old_state.__setstate__((None, {"language": "de", "words": 4}))  # an older version: fewer slots
    assert old_state == RealtimeState(language="de", words=4) == state


def test_state_values_round_trip_unchanged_and_are_written_by_name() -> None:
    chunk = Chunk(span(), b"\x01\x02" * 8, CallSettings(CallConfig(language="de"), {"team": "a"}))
    state = SubmitState(done={1, 2}, last_seen=True)
    for value in (chunk, state):
        assert pickle.loads(pickle.dumps(value)) == value  # noqa: S301
    assert chunk.__getstate__() == {f.name: getattr(chunk, f.name) for f in dataclasses.fields(Chunk)}
