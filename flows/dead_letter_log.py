"""Every dead letter leaves a warning in the flow's log, and a flood of them cannot flood it.

Why: a letter on the dead-letter topic is invisible to whoever watches the flow, and a user whose every frame is
refused otherwise sees nothing at all. Each warning says the stage, the reason, where the original lies
(topic/partition/offset, or a chunk's source ranges) and the call id: never the value (audio), metadata values or
transcript text (reasons name fields, never their content; see schemas/call_start.py).

Rate limit: letters are grouped by stage and reason *shape* (the reason with its numbers and quoted ids blanked,
so a thousand copies of one producer bug are one kind). The first letter of a kind in an interval is logged in
full; the others are counted, and when the interval ends one line per kind gives its count (a timer armed by the
first counted letter, so a flood that stops is still reported). At most `kinds_per_interval` kinds are logged per
interval; letters of further kinds are counted together. The `dlq` command lists every letter, and
`bwsm_dead_letters_total` counts them per stage.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bytewax.speechmatics.connectors.logs import fields
from bytewax.speechmatics.schemas.dead_letters import DeadLetter, view

log = logging.getLogger(__name__)

#: A logged reason is cut to this many characters (the topic keeps it whole).
MAX_LOGGED_REASON = 300
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"\d+(\.\d+)?")


def reason_shape(reason: str) -> str:
    """The reason with quoted ids and numbers blanked: letters of one kind share it whatever call or offset."""
    return _NUMBER.sub("#", _QUOTED.sub("'...'", reason))


def _later(delay: float, action: Callable[[], None]) -> None:
    """Run `action` on a daemon thread after `delay` seconds (a stopping process does not wait for it)."""
    timer = threading.Timer(delay, action)
    timer.daemon = True
    timer.start()


@dataclass
class _Kind:
    stage: str
    example: str  # the first reason of this kind in the interval
    suppressed: int = 0


class DeadLetterLog:
    """Call it with each dead letter the flow writes (it returns the letter): a warning per letter, rate-limited.

    Thread-safe: a process's Bytewax workers share one.
    """

    def __init__(self, interval: float = 60.0, kinds_per_interval: int = 20,
                 clock: Callable[[], float] = time.monotonic, logger: logging.Logger = log,
                 schedule: Callable[[float, Callable[[], None]], None] = _later) -> None:
        self.interval = interval
        self.kinds_per_interval = kinds_per_interval
        self._clock = clock
        self._log = logger
        self._schedule = schedule
        self._lock = threading.Lock()
        self._started: float | None = None
        self._kinds: dict[tuple[str, str], _Kind] = {}
        self._overflow = 0
        self._interval_no = 0  # which interval is open: a timer of an interval already rolled does nothing
        self._armed = False  # a timer will report this interval's counts

    def __call__(self, letter: DeadLetter) -> DeadLetter:
        shown = view(letter)
        reason = _cut(shown.reason)
        kind = (shown.stage, reason_shape(shown.reason))
        with self._lock:
            now = self._clock()
            summary = self._roll(now)
            seen = self._kinds.get(kind)
            if seen is not None:
                seen.suppressed += 1
                first = False
            elif len(self._kinds) >= self.kinds_per_interval:
                self._overflow += 1
                first = False
            else:
                self._kinds[kind] = _Kind(shown.stage, reason)
                first = True
            arm = not first and not self._armed
            if arm:
                self._armed, number = True, self._interval_no
                delay = max(0.0, (self._started or now) + self.interval - now)
        if arm:
            self._schedule(delay, lambda: self._interval_over(number))
        self._log_summary(summary)
        if first:
            self._log.warning(
                "dead letter from stage %s: %s (source %s, call %s, %s bytes); more like it in the next %g s are "
                "counted, not logged ('bytewax-speechmatics dlq' lists them all)", shown.stage, reason,
                shown.source or "-", shown.call_id or "-", "-" if shown.original_size is None else shown.original_size,
                self.interval, extra=fields(call_id=shown.call_id, stage=shown.stage))
        return letter

    def flush(self) -> None:
        """Log the counts of the current interval now (for a flow that stops)."""
        with self._lock:
            summary = self._roll(None)
        self._log_summary(summary)

    def _interval_over(self, number: int) -> None:
        """The timer of interval `number`: its counts, unless a later letter already reported them."""
        with self._lock:
            summary = self._roll(None) if number == self._interval_no else []
        self._log_summary(summary)

    def _log_summary(self, summary: list[tuple[str, tuple, dict]]) -> None:
        for line, args, extra in summary:
            self._log.warning(line, *args, extra=extra)

    def _roll(self, now: float | None) -> list[tuple[str, tuple, dict]]:
        """When the interval is over (or `now` is None), the summary lines of its suppressed letters; a new
        interval starts."""
        if self._started is None:
            self._started = now
            return []
        if now is not None and now - self._started < self.interval:
            return []
        elapsed = (self._clock() if now is None else now) - self._started
        out = [("%d more dead letter(s) from stage %s in the last %.0f s like: %s", (k.suppressed, k.stage, elapsed,
                                                                                     k.example),
                fields(stage=k.stage, count=k.suppressed)) for k in self._kinds.values() if k.suppressed]
        if self._overflow:
            out.append(("%d more dead letter(s) of other kinds in the last %.0f s (not logged: more than %d kinds)",
                        (self._overflow, elapsed, self.kinds_per_interval), fields(count=self._overflow)))
        self._started, self._kinds, self._overflow = now, {}, 0
        self._interval_no += 1
        self._armed = False
        return out


def _cut(reason: str) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= MAX_LOGGED_REASON else reason[:MAX_LOGGED_REASON] + "..."
