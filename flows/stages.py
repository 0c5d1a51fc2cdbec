"""What every stage returns: `StageOut(oks, errs)`, the way `bytewax.connectors.kafka.operators` returns
`KafkaOpOut`.

`oks` is keyed by call id (what the next stage consumes); `errs` carries the input a stage refused, as
DeadLetters for the dead-letter topic. A stage never raises on bad input: errors travel as data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators import KeyedStream

from bytewax.speechmatics.schemas.dead_letters import DeadLetter

T = TypeVar("T")


@dataclass(frozen=True)
class StageOut(Generic[T]):
    """A stage's two outputs: results keyed by call id, and dead letters."""

    oks: KeyedStream[T]
    errs: Stream[DeadLetter]


def _is_letter(item: tuple[str, object] | DeadLetter) -> bool:
    value = item if isinstance(item, DeadLetter) else item[1]
    return isinstance(value, DeadLetter)


def _unkey(item: tuple[str, DeadLetter] | DeadLetter) -> DeadLetter:
    return item if isinstance(item, DeadLetter) else item[1]


def split_letters(step_id: str, mixed: Stream) -> StageOut:
    """Split a stream of `(call_id, value)` pairs and dead letters (bare or keyed) into a StageOut."""
    branch = op.branch(f"{step_id}_split", mixed, _is_letter)
    return StageOut(oks=branch.falses, errs=op.map(f"{step_id}_letters", branch.trues, _unkey))
