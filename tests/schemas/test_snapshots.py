"""Snapshot values stay readable by the next version: a field added since the snapshot takes its default, a field
removed from a dict-pickled class is dropped, every form pickle writes is read, every class reachable from an
operator's state is evolvable, and the frozen slotted ones (pickled as lists of values) only ever append fields."""

from __future__ import annotations

import dataclasses
import json
import pickle
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

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
#: The fields of each frozen slotted state class as released: pickled as a list of values, read by position.
RELEASED_FIELDS = Path(__file__).with_name("snapshot_fields.json")


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


def state_classes() -> dict[type, str]:
    seen: dict[type, str] = {}
    for root in STATE_ROOTS:
        reachable(root, seen)
    return seen


def test_every_class_an_operators_state_can_hold_is_evolvable() -> None:
    seen = state_classes()
    assert len(seen) >= 20  # the walk really descends (chunks, settings, timeline units, speakers ...)
    assert {f"{cls.__qualname__} ({path})" for cls, path in seen.items() if not is_evolvable(cls)} == set()


def test_frozen_slotted_state_classes_only_ever_append_fields() -> None:
    """Their snapshots are lists of values read by position: a field reordered, renamed or removed would hand an
    old snapshot's values to the wrong fields. A new field goes last, with a default; a new class goes in the file."""
    released = json.loads(RELEASED_FIELDS.read_text())
    wrong = {}
    for cls in state_classes():
        if not (cls.__dataclass_params__.frozen and hasattr(cls, "__slots__")):
            continue
        name, now = f"{cls.__module__}.{cls.__qualname__}", [f.name for f in dataclasses.fields(cls)]
        before = released.get(name)
        if before is None or now[:len(before)] != before:
            wrong[name] = {"released": before, "now": now}
    assert wrong == {}, f"append-only fields broken, or a class missing from {RELEASED_FIELDS.name}: {wrong}"


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
def test_a_field_added_with_a_default_is_filled(shape: dict) -> None:
    v1, v2 = versions(shape, "    a: int\n    b: str = 'x'\n    c: list = field(default_factory=list)\n"
                             "    d: float = 2.5\n")
    blob = pickle.dumps(v1(7, "y"))
    sys.modules["bwsm_snapshot_test_rec"].Rec = v2  # the upgrade
    restored = pickle.loads(blob)  # noqa: S301 - the test's own bytes
    assert (restored.a, restored.b, restored.c, restored.d) == (7, "y", [], 2.5)


@pytest.mark.parametrize("shape", SHAPES[1:], ids=["slots", "plain"])
def test_a_field_removed_from_a_class_pickled_by_name_is_dropped(shape: dict) -> None:
    v1, v2 = versions(shape, "    a: int\n    d: float = 2.5\n")
    blob = pickle.dumps(v1(7, "y"))
    sys.modules["bwsm_snapshot_test_rec"].Rec = v2
    restored = pickle.loads(blob)  # noqa: S301
    assert (restored.a, restored.d) == (7, 2.5) and not hasattr(restored, "b")


@pytest.mark.parametrize("shape", SHAPES, ids=["frozen-slots", "slots", "plain"])
def test_a_field_added_without_a_default_is_an_error_naming_it(shape: dict) -> None:
    v1, v2 = versions(shape, "    a: int\n    b: str\n    e: int\n")
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


def test_state_values_round_trip_and_are_written_as_before() -> None:
    chunk = Chunk(span(), b"\x01\x02" * 8, CallSettings(CallConfig(language="de"), {"team": "a"}))
    state = SubmitState(done={1, 2}, last_seen=True)
    for value in (chunk, state):
        assert pickle.loads(pickle.dumps(value)) == value  # noqa: S301
    assert chunk.__getstate__() == [getattr(chunk, f.name) for f in dataclasses.fields(Chunk)]  # dataclasses' form
