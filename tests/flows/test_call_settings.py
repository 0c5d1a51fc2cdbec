"""Per-call settings through the stages, without Bytewax or HTTP: decode keeps start messages (and marks refused
ones), the chunker announces each call once and stamps its settings on every chunk (snapshots included), submission
shapes each job and each result by the call's settings, and every event of the call carries its metadata."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import jsonschema
import orjson
from bytewax.connectors.kafka import KafkaSourceMessage
from test_chunking_helpers import frames_for, run_chunker, strip_clock
from test_submit_logic import RecordingService

from bytewax.speechmatics.connectors.speechmatics.service import ChunkDone, SubmitRequest, SubmitService
from bytewax.speechmatics.flows.chunking import CallChunker, ChunkConfig
from bytewax.speechmatics.flows.decode import decode_batch
from bytewax.speechmatics.flows.segments import batch_segment, call_completed, call_started
from bytewax.speechmatics.flows.stitching import CallTimeline, Completion, Release, StitchSettings
from bytewax.speechmatics.flows.submitter import SubmitLogic
from bytewax.speechmatics.schemas.call_start import (
    NO_SETTINGS,
    CallConfig,
    CallSettings,
    CallStart,
    Vocab,
    encode_start,
    parse_start_value,
)
from bytewax.speechmatics.schemas.chunks import CallStarted, Chunk, ChunkResult, ChunkSpan
from bytewax.speechmatics.schemas.dead_letters import DeadLetter
from bytewax.speechmatics.schemas.events import SCHEMA_VERSION, event_id
from bytewax.speechmatics.schemas.frames import AudioFrame, encode_frame

SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "transcript_event.schema.json").read_text())
RATE = 8000
SMALL = ChunkConfig(policy="fixed", chunk_seconds=1.0, overlap_seconds=0.1, reorder_window_frames=3)
GERMAN = parse_start_value(orjson.dumps({"config": {"language": "de", "additional_vocab": ["Lisinopril"]},
                                         "metadata": {"tenant": "acme", "agent": "a-17"}}))
FRENCH = parse_start_value(orjson.dumps({"config": {"language": "fr"}, "metadata": {"tenant": "acme", "n": 2}}))


def message(key: bytes | None, value: bytes | None, headers: list, offset: int) -> KafkaSourceMessage:
    return KafkaSourceMessage(key=key, value=value, topic="calls.audio", headers=headers, offset=offset, partition=1)


def call_frames(call_id: str = "c", seconds: float = 3.5) -> list[AudioFrame]:
    audio = bytes(range(256)) * int(seconds * RATE * 2 / 256)
    return frames_for(call_id, audio, [RATE // 5], (RATE, "pcm_s16le", 1))


def start(settings: CallSettings, call_id: str = "c", refused: str | None = None) -> CallStart:
    return CallStart(call_id, settings, refused, "calls.audio", 1, 99)


# ---- decode ------------------------------------------------------------------------------------------------


def test_decode_passes_start_messages_on_and_marks_refused_ones_for_their_call() -> None:
    frame = AudioFrame("c2", 0, b"\0\0" * 160)
    messages = [
        message(*encode_start("c1", {"language": "de"}, {"tenant": "acme"}), offset=0),
        message(*encode_frame(AudioFrame("c1", 0, b"\0\0" * 160)), offset=1),
        message(b"c2", b'{"config": {"langauge": "de"}}', [("kind", b"start")], offset=2),
        message(*encode_frame(frame), offset=3),
        message(None, b"{}", [("kind", b"start")], offset=4),
    ]
    out = decode_batch(messages)
    (c1, good), (c1_, _), letter, (c2, marker), (c2_, _), keyless = out
    assert (c1, c1_, c2, c2_) == ("c1", "c1", "c2", "c2")
    assert isinstance(good, CallStart) and good.refused is None
    assert good.settings.config.language == "de" and good.settings.metadata == {"tenant": "acme"}
    # The refused start: a dead letter with the original bytes and the field, and a marker so the call goes on.
    assert isinstance(letter, DeadLetter) and letter.stage == "decode"
    assert letter.value == b'{"config": {"langauge": "de"}}' and letter.key == b"c2"
    assert "field config" in letter.reason and "langauge" in letter.reason and "calls.audio[1]@2" in letter.reason
    assert isinstance(marker, CallStart) and marker.settings == NO_SETTINGS and "langauge" in marker.refused
    assert isinstance(keyless, DeadLetter) and "no key" in keyless.reason  # no call to go on with


# ---- the chunker -------------------------------------------------------------------------------------------


def test_a_call_is_announced_once_before_its_first_chunk_and_every_chunk_carries_its_settings() -> None:
    arrivals = [start(GERMAN), *call_frames()]
    out = run_chunker(SMALL, arrivals)
    assert out[0] == CallStarted("c", GERMAN, ())
    chunks = out[1:]
    assert len(chunks) == 4 and all(isinstance(c, Chunk) and c.call == GERMAN and not c.warnings for c in chunks)
    # Restored from a snapshot taken anywhere (also between the start message and the first frame): the same.
    for stops in ([1], [2], [1, 2, 9], range(len(arrivals))):
        assert [strip_clock(o) for o in run_chunker(SMALL, arrivals, restore_at=stops)] == [strip_clock(o) for o in out]


def test_a_call_without_a_start_message_is_announced_by_its_first_frame_with_the_defaults() -> None:
    out = run_chunker(SMALL, call_frames())
    assert out[0] == CallStarted("c", NO_SETTINGS, ())
    assert all(c.call == NO_SETTINGS for c in out[1:])
    assert sum(isinstance(o, CallStarted) for o in out) == 1


def test_a_refused_start_announces_the_call_with_the_defaults_and_a_warning() -> None:
    out = run_chunker(SMALL, [start(NO_SETTINGS, refused="start message is not JSON"), *call_frames()])
    (warning,) = out[0].warnings
    assert out[0].call == NO_SETTINGS and "start message refused" in warning and "not JSON" in warning
    assert all(isinstance(c, Chunk) and c.call == NO_SETTINGS for c in out[1:])


def test_a_later_start_message_applies_to_the_chunks_cut_after_it_with_a_warning() -> None:
    frames = call_frames()
    arrivals = [start(GERMAN), *frames[:12], start(FRENCH), *frames[12:]]
    out = run_chunker(SMALL, arrivals)
    assert [type(o) for o in out].count(CallStarted) == 1
    chunks = out[1:]
    # 12 frames of 0.2 s: chunks 0 and 1 were cut before (chunk 1 at 1.9 s), the rest after.
    assert [c.call for c in chunks] == [GERMAN, GERMAN, FRENCH, FRENCH]
    assert [bool(c.warnings) for c in chunks] == [False, False, True, False]
    assert "from chunk 2 on" in chunks[2].warnings[0]
    refused = run_chunker(SMALL, [start(GERMAN), *frames[:12], start(NO_SETTINGS, refused="bad"), *frames[12:]])
    assert [c.call for c in refused[1:]] == [GERMAN] * 4 and "keeps its settings" in refused[3].warnings[0]
    late = run_chunker(SMALL, [*frames[:3], start(FRENCH), *frames[3:]])  # after the first frame
    assert late[0] == CallStarted("c", NO_SETTINGS, ()) and late[1].call == FRENCH and late[1].warnings


def test_a_start_message_after_the_end_is_dead_lettered() -> None:
    out = run_chunker(SMALL, [*call_frames(seconds=0.4), start(FRENCH)])
    letter = out[-1]
    assert isinstance(letter, DeadLetter) and letter.stage == "chunker" and "after the call ended" in letter.reason
    assert parse_start_value(letter.value) == FRENCH and ("kind", b"start") in letter.headers
    assert ("dlq.source.offset", "99") in letter.context


def test_the_settings_survive_a_restore_between_the_start_message_and_the_first_frame() -> None:
    chunker, out = CallChunker(SMALL), []
    chunker.push(start(GERMAN), out)
    snapshot = pickle.loads(pickle.dumps(chunker.snapshot()))
    assert snapshot.settings == GERMAN and snapshot.started and snapshot.audio_format is None
    resumed, after = CallChunker(SMALL, snapshot), []
    for frame in call_frames():
        resumed.push(frame, after)
    assert after and all(isinstance(c, Chunk) and c.call == GERMAN for c in after)  # announced before the crash


# ---- submission --------------------------------------------------------------------------------------------


def chunk(index: int, settings: CallSettings, last: bool = False) -> Chunk:
    span = ChunkSpan("c", index, index * 100, (index + 1) * 100, 0, 16000, "pcm_s16le", 1, last=last)
    return Chunk(span, bytes(200), (("calls.audio", 0, index, index),), call=settings)


def test_call_started_passes_submission_with_the_config_its_jobs_will_ask_for() -> None:
    service = RecordingService(language="en", diarization="speaker", channel_labels=("left", "right"))
    out, discard = SubmitLogic(None, service, None).on_item(CallStarted("c", GERMAN, ("w",)))
    (resolved,) = out
    config = resolved.call.config
    assert (config.language, config.diarization, config.additional_vocab) == ("de", "speaker", (Vocab("Lisinopril"),))
    assert resolved.call.metadata == GERMAN.metadata and resolved.warnings == ("w",) and discard is True
    channel = CallSettings(CallConfig(diarization="channel"))
    (resolved,), _ = SubmitLogic(None, service, None).on_item(CallStarted("c", channel))
    assert resolved.call.config.channel_labels == ("left", "right")  # the flow's labels for a call without its own


def test_speaker_chaining_follows_each_calls_diarization() -> None:
    service = RecordingService(diarization="speaker")
    channel = CallSettings(CallConfig(diarization="channel", channel_labels=("agent", "caller")))
    logic = SubmitLogic(None, service, None)
    logic.on_item(chunk(0, channel))
    logic.on_item(chunk(1, channel, last=True))
    assert [r.chunk.span.index for r in service.submitted] == [0, 1]  # not chained: both at once
    assert all(r.speaker_config is None for r in service.submitted)
    chained_service = RecordingService(diarization="speaker")
    chained = SubmitLogic(None, chained_service, None)
    chained.on_item(chunk(0, GERMAN))
    chained.on_item(chunk(1, GERMAN, last=True))
    assert [r.chunk.span.index for r in chained_service.submitted] == [0]  # one after another
    assert chained_service.submitted[0].speaker_config == {"get_speakers": True}


def test_results_carry_the_effective_settings_the_metadata_and_the_warnings() -> None:
    service = RecordingService(diarization="none")
    logic = SubmitLogic(None, service, None)
    logic.on_item(replace(chunk(0, GERMAN, last=True), warnings=("changed",)))
    service.events = [ChunkDone(0, "job-1", {"results": []}, 1)]
    (result,), _ = logic.on_notify()
    assert result.call.config.language == "de" and result.call.config.diarization == "none"
    assert result.call.metadata == {"tenant": "acme", "agent": "a-17"} and result.warnings == ("changed",)


def test_each_job_asks_for_its_calls_config_and_another_config_is_another_job(tmp_path: Path) -> None:
    from bytewax.speechmatics.connectors.speechmatics.journal import JobJournal
    from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings

    settings = SubmitSettings(language="en", diarization="speaker", additional_vocab=({"content": "Flow"},),
                              transcription_extra={"enable_entities": False})
    service = SubmitService(settings, journal=JobJournal(tmp_path / "journal"))
    plain = chunk(0, NO_SETTINGS)
    channel = CallSettings(CallConfig(language="fr", diarization="channel", channel_labels=("agent", "caller"),
                                      additional_vocab=(), enable_entities=True))
    asked = service._job_config(SubmitRequest(chunk(0, channel)), "digest").transcription_config.to_dict()
    assert asked["language"] == "fr" and asked["diarization"] == "channel" and asked["enable_entities"] is True
    assert asked["channel_diarization_labels"] == ["agent", "caller"] and "additional_vocab" not in asked
    flow = service._job_config(SubmitRequest(plain), "digest").transcription_config.to_dict()
    assert (flow["language"], flow["diarization"], flow["additional_vocab"]) == ("en", "speaker", [{"content": "Flow"}])
    tags = {service._job_tag(c) for c in (plain, chunk(0, channel), chunk(0, GERMAN), chunk(0, FRENCH))}
    assert len(tags) == 4 and service._job_tag(plain) == settings.job_fingerprint()
    # Metadata does not shape the job: the same config with other metadata is the same job.
    assert service._job_tag(chunk(0, replace(GERMAN, metadata_json=b"{}"))) == service._job_tag(chunk(0, GERMAN))


# ---- stitching and events ------------------------------------------------------------------------------------


def result(index: int, settings: CallSettings, words: list[tuple[str, float, float, str]], last: bool = False,
           error: str | None = None) -> ChunkResult:
    span = ChunkSpan("c", index, index * 16000, (index + 1) * 16000 + (1600 if not last else 0), 0 if index == 0
                     else 1600, 16000, "pcm_s16le", 2, last=last)
    results = [{"type": "word", "start_time": s, "end_time": e, "channel": ch,
                "alternatives": [{"content": t, "confidence": 0.9, "language": "de", "speaker": "UU"}]}
               for t, s, e, ch in words]
    return ChunkResult(span, None if error else {"results": results}, error=error, job_id=f"job-{index}",
                       call=settings)


def test_every_event_of_a_call_carries_its_metadata_and_channels_get_the_calls_labels() -> None:
    settings = CallSettings(CallConfig(language="de", diarization="channel", channel_labels=("agent", "caller")),
                            GERMAN.metadata_json)
    timeline = CallTimeline("c")
    items = timeline.push(result(0, settings, [("hallo", 0.1, 0.4, "channel_1"), ("ja", 0.5, 0.8, "caller")]),
                          StitchSettings())
    items += timeline.push(result(1, settings, [], error="rejected"), StitchSettings())
    items += timeline.push(result(2, settings, [("gut", 0.2, 0.5, "channel_2")], last=True), StitchSettings())
    events = [call_completed(i) if isinstance(i, Completion) else batch_segment(i) for i in items]
    # chunk 0, its held tail (released by chunk 1's failure), chunk 1 (failed), chunk 2, the completion
    assert [e["type"] for e in events] == ["segment"] * 4 + ["call_completed"]
    assert [e.get("error") is not None for e in events[:4]] == [False, False, True, False]
    for event in events:
        jsonschema.validate(event, SCHEMA)
        assert event["metadata"] == {"tenant": "acme", "agent": "a-17"} and event["schema_version"] == SCHEMA_VERSION
    words = [(w["text"], w["speaker"], w["channel"]) for e in events for w in e["words"]]
    assert words == [("hallo", "agent", "agent"), ("ja", "caller", "caller"), ("gut", "caller", "caller")]
    assert events[-1]["speakers"] == ["agent", "caller"]
    plain = batch_segment(Release(result(0, NO_SETTINGS, []).span, (), (0.0, 1.0), "en", "j", 1))
    assert "metadata" not in plain and "warnings" not in plain  # calls without a start message: as before


def test_call_started_is_deterministic_and_says_what_the_call_asks_for() -> None:
    settings = CallSettings(CallConfig(language="fr", diarization="channel", channel_labels=("agent", "caller"),
                                       additional_vocab=(Vocab("Acme"),), operating_point="enhanced"),
                            FRENCH.metadata_json)
    event = call_started(CallStarted("c", settings, ("start message refused (x)",)))
    jsonschema.validate(event, SCHEMA)
    assert event["event_id"] == event_id("c", "batch", "started") and event["type"] == "call_started"
    assert event["language"] == "fr" and event["metadata"] == {"tenant": "acme", "n": 2}
    assert event["settings"] == {"language": "fr", "diarization": "channel", "channel_labels": ["agent", "caller"],
                                 "operating_point": "enhanced", "additional_vocab": 1}
    assert event["warnings"] == ["start message refused (x)"]
    assert orjson.dumps(call_started(CallStarted("c", settings, ("start message refused (x)",)))) == orjson.dumps(event)
    bare = call_started(CallStarted("d"))
    assert "metadata" not in bare and bare["warnings"] == [] and bare["settings"]["diarization"] == "none"


def test_events_of_schema_1_0_stay_valid() -> None:
    old = {"schema_version": "1.0", "event_id": "x", "call_id": "c", "type": "segment", "source": "batch",
           "is_final": True, "start_time": 0, "end_time": 1, "transcript": "", "words": [], "speakers": [],
           "language": "en"}
    jsonschema.validate(old, SCHEMA)
    broken = {**old, "schema_version": "1.1", "type": "call_started"}  # a batch call_started needs its settings
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(broken)
