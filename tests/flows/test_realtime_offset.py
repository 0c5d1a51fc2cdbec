"""A resumed real-time session's times move onto the call's timeline by its `rt_offset` header."""

from __future__ import annotations

import orjson
from bytewax.connectors.kafka import KafkaSourceMessage

from bytewax.speechmatics.flows.realtime import RealtimeState, _keyed, normalize
from bytewax.speechmatics.schemas.dead_letters import DeadLetter

FINAL = {"message": "AddTranscript", "format": "2.1", "metadata": {"start_time": 0.5, "end_time": 1.0,
                                                                    "transcript": "hi"},
         "results": [{"type": "word", "start_time": 0.5, "end_time": 1.0,
                      "alternatives": [{"content": "hi", "confidence": 1.0, "speaker": "UU"}]}]}


def test_offset_moves_words_and_segment():
    state = RealtimeState()
    normalize("c", {"message": "RecognitionStarted", "id": "s2"}, state, 30.0)
    [event] = normalize("c", FINAL, state, 30.0)
    assert (event["start_time"], event["end_time"]) == (30.5, 31.0)
    assert [(w["start_time"], w["end_time"]) for w in event["words"]] == [(30.5, 31.0)]


def test_offset_header_is_read_and_checked():
    def msg(headers):
        return KafkaSourceMessage(b"c", orjson.dumps(FINAL), headers=headers, topic="rt", partition=0, offset=1)

    assert _keyed(msg([]))[1][2] == 0.0
    assert _keyed(msg([("rt_offset", b"12.5")]))[1][2] == 12.5
    assert isinstance(_keyed(msg([("rt_offset", b"soon")])), DeadLetter)
    assert isinstance(_keyed(msg([("rt_offset", b"-1")])), DeadLetter)
