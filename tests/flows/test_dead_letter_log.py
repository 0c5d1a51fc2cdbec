"""The flow's dead-letter log: a warning per letter with stage, reason, source position and call id; never the value
or metadata; a flood of one kind is one line plus a count per interval."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import orjson
import pytest
from bytewax.connectors.kafka import KafkaSourceMessage

from bytewax.speechmatics.flows.dead_letter_log import DeadLetterLog, reason_shape
from bytewax.speechmatics.flows.decode import RefusedStart, decode_message
from bytewax.speechmatics.schemas.chunks import ChunkSpan
from bytewax.speechmatics.schemas.dead_letters import DeadLetter, failed_chunk

LOGGER = "bytewax.speechmatics.flows.dead_letter_log"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refused(key: bytes, value: bytes | None, headers: list, offset: int) -> DeadLetter:
    """The decode stage's own dead letter for a message of calls.audio."""
    msg = KafkaSourceMessage(key=key, value=value, topic="calls.audio", headers=headers, offset=offset, partition=2)
    out = decode_message(msg)
    letter = out.letter if isinstance(out, RefusedStart) else out
    assert isinstance(letter, DeadLetter)
    return letter


def warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def test_each_letter_is_a_warning_with_stage_reason_position_and_call(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    logged = DeadLetterLog(clock=Clock())
    secret = "ssn-123-45-6789"
    start = orjson.dumps({"config": {"language": "klingon!"}, "metadata": {"customer": secret}})
    odd = refused(b"call-odd", b"\x01\x02\x03" + secret.encode() * 2, [("seq", b"0")], 17)
    letters = [odd, refused(b"call-start", start, [("kind", b"start")], 18)]
    span = ChunkSpan("call-chunk", 3, 16000, 48000, 0, 16000, "pcm_s16le", 1)
    letters.append(failed_chunk("job rejected by the API: bad audio", "submit", span, (("calls.audio", 1, 40, 90),),
                                "job-9", 2))
    assert [logged(letter) for letter in letters] == letters  # handed on unchanged

    records = warnings(caplog)
    assert len(records) == 3
    text = [r.getMessage() for r in records]
    assert text[0].startswith("dead letter from stage decode: calls.audio[2]@17 call 'call-odd': frame seq 0 has ")
    assert "(source calls.audio[2]@17, call call-odd, 33 bytes)" in text[0]
    assert "start message field config.language: must be a language code" in text[1]
    assert "(source calls.audio[2]@18, call call-start," in text[1]
    assert text[2].startswith("dead letter from stage submit: job rejected by the API: bad audio "
                              "(source calls.audio[1]@40-90, call call-chunk, - bytes)")
    assert [(r.stage, r.call_id) for r in records] == [("decode", "call-odd"), ("decode", "call-start"),
                                                       ("submit", "call-chunk")]
    assert all(secret not in line and "\\x01" not in line for line in text)  # no metadata, no audio


def test_a_flood_of_one_kind_is_one_line_then_a_count_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    clock = Clock()
    logged = DeadLetterLog(interval=60.0, clock=clock)
    for i in range(1000):  # one producer bug: other calls, other offsets, other sizes
        logged(refused(f"call-{i}".encode(), b"\x00" * (2 * i + 1), [("seq", str(i).encode())], 100 + i))
        clock.now += 0.01
    assert len(warnings(caplog)) == 1

    clock.now += 60.0
    logged(refused(b"call-late", b"\x00\x00\x00", [("seq", b"0")], 5000))
    records = warnings(caplog)
    assert len(records) == 3
    summary = records[1].getMessage()
    assert summary.startswith("999 more dead letter(s) from stage decode in the last 70 s like: calls.audio[2]@100 "
                              "call 'call-0': frame seq 0 has 1 bytes")
    assert records[1].count == 999
    assert records[2].getMessage().startswith("dead letter from stage decode: calls.audio[2]@5000 call 'call-late'")


class Timers:
    """The log's timers, fired by hand: (delay, action) in the order they were set."""

    def __init__(self) -> None:
        self.set: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, delay: float, action: Callable[[], None]) -> None:
        self.set.append((delay, action))


def test_a_flood_that_stops_is_counted_when_its_interval_ends(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    clock, timers = Clock(), Timers()
    logged = DeadLetterLog(interval=60.0, clock=clock, schedule=timers)
    for i in range(50):
        logged(refused(f"call-{i}".encode(), b"\x00", [("seq", b"0")], i))
        clock.now += 0.5
    assert len(warnings(caplog)) == 1 and [delay for delay, _ in timers.set] == [59.5]  # armed once, at the 2nd
    clock.now = 1060.0
    timers.set[0][1]()  # no letter after the flood: the timer reports it
    assert [r.getMessage().split(" like:")[0] for r in warnings(caplog)[1:]] == [
        "49 more dead letter(s) from stage decode in the last 60 s"]
    timers.set[0][1]()  # fired again (or late): nothing more
    logged(refused(b"call-new", b"\x00", [("seq", b"0")], 99))
    assert len(warnings(caplog)) == 3 and len(timers.set) == 1  # a new interval: logged in full, nothing to arm


def test_a_timer_of_an_interval_a_letter_already_reported_does_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    clock, timers = Clock(), Timers()
    logged = DeadLetterLog(interval=10.0, clock=clock, schedule=timers)
    for _ in range(3):
        logged(DeadLetter(reason="same", stage="collect", key=b"c"))
    clock.now += 11
    logged(DeadLetter(reason="same", stage="collect", key=b"c"))  # reports the 2, starts a new interval
    logged(DeadLetter(reason="same", stage="collect", key=b"c"))  # counted: arms the new interval's timer
    assert len(warnings(caplog)) == 3 and len(timers.set) == 2
    timers.set[0][1]()  # the old interval's timer
    assert len(warnings(caplog)) == 3
    clock.now += 10
    timers.set[1][1]()
    assert warnings(caplog)[-1].getMessage().startswith("1 more dead letter(s) from stage collect in the last 10 s")


@pytest.mark.timeout(30)
def test_the_default_timer_reports_without_a_later_letter(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    logged = DeadLetterLog(interval=0.2)
    for _ in range(5):
        logged(DeadLetter(reason="same", stage="collect", key=b"c"))
    deadline = time.monotonic() + 20
    while len(warnings(caplog)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert warnings(caplog)[-1].getMessage().startswith("4 more dead letter(s) from stage collect")


def test_many_kinds_are_capped_per_interval_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    clock = Clock()
    logged = DeadLetterLog(interval=10.0, kinds_per_interval=5, clock=clock)
    for i in range(30):  # thirty different reasons
        logged(DeadLetter(reason=f"reason {'x' * i}", stage="collect", key=b"c"))
    assert len(warnings(caplog)) == 5
    clock.now += 11
    logged.flush()
    (overflow,) = [r.getMessage() for r in warnings(caplog)[5:]]
    assert overflow == "25 more dead letter(s) of other kinds in the last 11 s (not logged: more than 5 kinds)"
    logged.flush()  # nothing new: nothing more
    assert len(warnings(caplog)) == 6


def test_letters_of_one_kind_share_a_shape_whatever_their_ids_and_numbers() -> None:
    assert reason_shape("calls.audio[0]@17 call 'a': frame seq 3 has 5 bytes (0.250 s)") == \
        reason_shape("calls.audio[3]@99 call 'bcd': frame seq 40 has 77 bytes (1.5 s)")
    assert reason_shape("frame seq 1 is empty") != reason_shape("frame seq 1 has a null value")
