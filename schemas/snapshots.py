"""Values kept in Bytewax snapshots stay readable by the next version of the code that wrote them.

A recovery store outlives the code: after an upgrade the flow resumes from state pickled by the version before it.
Pickle restores a dataclass's fields as they were written, so a field added since is simply missing (an
`AttributeError` on first use, or a resume that crashes on every restart).

`@evolvable` (under `@dataclass`) makes reading tolerant, and leaves what is written as it was (snapshots stay as
small as before: a frozen slotted dataclass pickles a bare list of its values, others a dict of them):
- read: any of those forms (a dict, slots as `(dict | None, dict)`, or a list matched by position); a field the
  snapshot lacks takes its default; a field it has that the class no longer has is dropped; a missing field without
  a default is a SnapshotError naming the class and the field.
- the rule that keeps lists right: the fields of a frozen slotted evolvable class are only ever appended to (with
  defaults), never reordered, renamed or removed. tests/schemas/test_snapshots.py holds their field lists and fails
  on any other change.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, fields
from typing import Any, TypeVar

from bytewax.speechmatics.schemas.errors import BytewaxSpeechmaticsError

T = TypeVar("T", bound=type)


class SnapshotError(BytewaxSpeechmaticsError, ValueError):
    """A snapshot value this version cannot read: the message names the class and the field."""


def _default(cls: type, f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise SnapshotError(f"a snapshot of {cls.__qualname__} has no {f.name!r}, and this version has no default for "
                        "it: resume with the version that wrote the snapshot, or start without the recovery store")


def _as_dict(cls: type, names: tuple[str, ...], state: Any) -> dict[str, Any]:
    """The field values of any form a version of `cls` pickled."""
    if isinstance(state, dict):
        return state
    if isinstance(state, tuple) and len(state) == 2 and all(s is None or isinstance(s, dict) for s in state):
        return {**(state[0] or {}), **(state[1] or {})}  # (instance dict, slots): a slotted class's default form
    if isinstance(state, list | tuple):
        return dict(zip(names, state, strict=False))  # a frozen slotted dataclass's own form: values by position
    raise SnapshotError(f"a snapshot of {cls.__qualname__} holds a {type(state).__name__}, not its fields")


def evolvable(cls: T) -> T:
    """Class decorator (under `@dataclass`): snapshots of `cls` are readable by later versions of it."""
    declared = fields(cls)
    names = tuple(f.name for f in declared)

    def __setstate__(self: Any, state: Any) -> None:  # noqa: N807 - the pickle protocol's name
        values = _as_dict(cls, names, state)
        for f in declared:
            object.__setattr__(self, f.name, values[f.name] if f.name in values else _default(cls, f))

    cls.__setstate__ = __setstate__  # type: ignore[attr-defined]
    return cls
