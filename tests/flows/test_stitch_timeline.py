"""The stitcher's pure parts on hand-made cases: order, failures, repeats, punctuation, the seam safety net."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import orjson
import pytest

from bytewax.speechmatics.flows.segments import batch_segment, call_completed
from bytewax.speechmatics.flows.settings import Settings
from bytewax.speechmatics.flows.speakers import SpeakerBook
from bytewax.speechmatics.flows.stitching import CallTimeline, Completion, StitchSettings, group_units, parse_tokens
from bytewax.speechmatics.schemas.chunks import ChunkResult, ChunkSpan
from bytewax.speechmatics.schemas.errors import ContractError

SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "transcript_event.schema.json").read_text())
RATE = 16000
CFG = StitchSettings(hold_seconds=0.5)  # the hand-made seams below have 0.5 s overlaps


def span(index: int, start: float, end: float, overlap: float = 0.5, last: bool = False) -> ChunkSpan:
    ov = 0 if index == 0 else int(overlap * RATE)
    return ChunkSpan("call-t", index, int(start * RATE), int(end * RATE), ov, RATE, "pcm_s16le", 1,
                     gaps_filled=index, last=last, closed_at=100.0 + index)


def word(text: str, start: float, end: float, speaker: str = "spk_1", **extra: object) -> dict:
    result = {"type": "word", "start_time": start, "end_time": end,
              "alternatives": [{"content": text, "confidence": 0.9, "language": "en", "speaker": speaker}]}
    result.update(extra)
    return result


def punct(text: str, at: float, attaches_to: str = "previous", speaker: str = "spk_1") -> dict:
    return {"type": "punctuation", "start_time": at, "end_time": at, "attaches_to": attaches_to,
            "is_eos": text in ".?!",
            "alternatives": [{"content": text, "confidence": 1.0, "language": "en", "speaker": speaker}]}


def ok(s: ChunkSpan, results: list[dict]) -> ChunkResult:
    return ChunkResult(s, {"format": "2.9", "results": results}, job_id=f"job-{s.index}", attempts=1,
                       billed_seconds=1.25 * (s.index + 1))


# Three chunks of a call: [0, 10), [9.5, 20), [19.5, 25]; overlaps of 0.5 s.
S0, S1, S2 = span(0, 0, 10), span(1, 9.5, 20), span(2, 19.5, 25, last=True)
R0 = ok(S0, [word("hello", 1.0, 1.4), punct(",", 1.4), word("this", 9.3, 9.6), word("is", 9.7, 10.0)])
# Chunk 1 heard "this" (cut at its start) and "is" again, and finished "is" past 10.0 s.
R1 = ok(S1, [word("this", 0.0, 0.1), word("is", 0.2, 0.6), word("fine", 1.0, 1.3), punct(".", 1.3),
             word("bye", 10.2, 10.5)])
R2 = ok(S2, [word("bye", 0.2, 0.5, speaker="spk_2"), word("now", 1.0, 1.2, speaker="spk_2"),
             punct("!", 1.2, speaker="spk_2")])


def events(results: list[ChunkResult], cfg: StitchSettings = CFG) -> list[dict]:
    timeline, out = CallTimeline("call-t"), []
    for result in results:
        for item in timeline.push(result, cfg):
            out.append(call_completed(item) if isinstance(item, Completion) else batch_segment(item))
    for event in out:
        jsonschema.validate(event, SCHEMA)
    return out


def texts(evs: list[dict]) -> list[str]:
    return [e["transcript"] for e in evs]


def test_seam_words_come_back_once_with_their_full_times() -> None:
    evs = events([R0, R1, R2])
    assert texts(evs) == ["hello,", "this is fine.", "bye now!", ""]
    seg1 = evs[1]["words"]
    assert [(w["text"], w["start_time"], w["end_time"]) for w in seg1[:2]] == [("this", 9.3, 9.6), ("is", 9.7, 10.1)]
    # The chunks disagree on who said "bye" (19.7-20.0): its midpoint lies after the overlap's middle (19.75),
    # so chunk 2's copy decides.
    assert [w["speaker"] for w in evs[2]["words"]] == ["spk_2", "spk_2", "spk_2"]
    # supersedes: each segment owns the time from where the previous one stopped.
    assert evs[0]["supersedes"] == {"start_time": 0.0, "end_time": 9.3}
    assert evs[1]["supersedes"] == {"start_time": 9.3, "end_time": 19.7}
    assert evs[2]["supersedes"] == {"start_time": 19.7, "end_time": 25.0}
    done = evs[-1]
    assert done["type"] == "call_completed" and done["counts"] == {
        "chunks": 3, "failed_chunks": 0, "words": 6, "audio_seconds": 25.0, "gaps_filled": 3, "billed_seconds": 7.5}
    assert [e["job"]["billed_seconds"] for e in evs[:3]] == [1.25, 2.5, 3.75]  # each its own job's
    assert done["speakers"] == ["spk_1", "spk_2"]


def test_any_arrival_order_gives_the_same_bytes() -> None:
    expected = orjson.dumps(events([R0, R1, R2]))
    for order in ([R2, R1, R0], [R1, R2, R0], [R0, R2, R1]):
        assert orjson.dumps(events(order)) == expected


def test_later_chunks_wait_for_a_missing_one() -> None:
    timeline = CallTimeline("call-t")
    assert timeline.push(R2, CFG) == [] and timeline.push(R1, CFG) == []
    released = timeline.push(R0, CFG)
    assert [type(r).__name__ for r in released] == ["Release", "Release", "Release", "Completion"]


def test_repeats_are_ignored() -> None:
    timeline = CallTimeline("call-t")
    first = timeline.push(R0, CFG)
    assert first and timeline.push(R0, CFG) == []
    timeline.push(R2, CFG)
    assert timeline.push(R2, CFG) == []
    assert len(timeline.push(R1, CFG)) == 3
    assert timeline.push(R1, CFG) == [] and timeline.push(R0, CFG) == []


def test_a_failed_chunk_emits_its_error_in_place_and_the_call_goes_on() -> None:
    failed = ChunkResult(S1, error="job rejected: bad audio", job_id="job-1", attempts=3)
    evs = events([R2, failed, R0])
    assert [e["type"] for e in evs] == ["segment", "segment", "segment", "segment", "call_completed"]
    # Chunk 0's held words (ending in its last 0.5 s) go out in a tail event of chunk 0, before chunk 1's error.
    assert [(e["job"]["chunk_index"], e["transcript"]) for e in evs[:4]] == [
        (0, "hello,"), (0, "this is"), (1, ""), (2, "bye now!")]
    tail, error = evs[1], evs[2]
    assert tail["event_id"] != evs[0]["event_id"] and tail["error"] is None
    assert error["error"] == "job rejected: bad audio" and error["words"] == [] and error["supersedes"] is None
    assert error["job"]["attempts"] == 3
    assert evs[-1]["counts"]["failed_chunks"] == 1 and evs[-1]["counts"]["words"] == 5


def test_a_failed_last_chunk_still_completes_the_call() -> None:
    evs = events([R0, R1, ChunkResult(S2, error="timeout")])
    assert [e["type"] for e in evs][-2:] == ["segment", "call_completed"]
    assert evs[-2]["error"] == "timeout"
    assert texts(evs)[:3] == ["hello,", "this is fine.", "bye"]


def test_a_malformed_transcript_fails_only_its_chunk() -> None:
    bad = ok(S1, [{"type": "word", "start_time": "x", "end_time": 1, "alternatives": [{"content": "a"}]}])
    evs = events([R0, bad, R2])
    assert "bad transcript" in evs[2]["error"] and "results[0].start_time" in evs[2]["error"]
    assert evs[-1]["counts"]["failed_chunks"] == 1


def test_chunk_ids_are_deterministic() -> None:
    a, b = events([R0, R1, R2]), events([R0, R1, R2])
    assert [e["event_id"] for e in a] == [e["event_id"] for e in b]
    assert len({e["event_id"] for e in a}) == len(a)


def test_punctuation_attaches_to_its_word() -> None:
    tokens = parse_tokens({"results": [punct('"', 0.0, "next"), word("hi", 0.0, 0.2), punct(",", 0.2),
                                       word("you", 0.3, 0.5), punct("-", 0.5, "both"), word("all", 0.5, 0.7),
                                       {"type": "entity", "start_time": 0, "end_time": 1, "alternatives": []},
                                       punct(".", 0.7)]}, 10.0)
    units = group_units(tokens)
    assert [(u.host.text, [t.text for t in u.before], [t.text for t in u.after]) for u in units] == [
        ("hi", ['"'], [","]), ("you", [], ["-"]), ("all", [], ["."])]
    assert units[0].host.start == 10.0
    evs = events([ok(span(0, 0, 5, last=True), [punct('"', 0.0, "next"), word("hi", 0.0, 0.2), punct(",", 0.2),
                                                  word("you", 0.3, 0.5), punct("-", 0.5, "both"),
                                                  word("all", 0.5, 0.7), punct(".", 0.7)])])
    assert evs[0]["transcript"] == '"hi, you-all.'
    eos = evs[0]["words"][-1]
    assert eos["is_eos"] is True and eos["attaches_to"] == "previous" and eos["start_time"] == 0.7


def test_channel_diarization_makes_the_channel_the_speaker() -> None:
    results = [word("hi", 0.1, 0.3, speaker="UU", channel="agent"),
               word("hello", 0.2, 0.4, speaker="UU", channel="caller")]
    evs = events([ok(span(0, 0, 5, last=True), results)])
    assert [(w["speaker"], w["channel"]) for w in evs[0]["words"]] == [("agent", "agent"), ("caller", "caller")]


def test_unknown_speaker_is_none() -> None:
    evs = events([ok(span(0, 0, 5, last=True), [word("hi", 0.1, 0.3, speaker="UU")])])
    assert evs[0]["words"][0]["speaker"] is None and evs[0]["speakers"] == []


def test_seam_safety_net_drops_a_mistimed_repeat_but_keeps_genuine_repetition() -> None:
    """A real recogniser may time the overlap's words differently in the two chunks (no intersection)."""
    s0, s1 = span(0, 0, 10), span(1, 9.0, 15, overlap=1.0, last=True)  # overlap [9, 10], middle 9.5
    r0 = ok(s0, [word("so", 8.0, 8.3), word("no", 9.2, 9.3)])
    # Chunk 1 hears that "no" at 9.45-9.55: no time in common, midpoint at the middle, so rule 3 keeps it;
    # it lies wholly inside the overlap, 0.25 s from chunk 0's copy: the safety net drops it.
    r1 = ok(s1, [word("no", 0.45, 0.55), word("more", 1.2, 1.5)])
    assert texts(events([r0, r1]))[:2] == ["so no", "more"]
    # A genuine repeat reaching past the overlap (chunk 0 could not have heard all of it) is kept.
    r1b = ok(s1, [word("no", 0.9, 1.1), word("more", 1.2, 1.5)])
    assert texts(events([r0, r1b]))[:2] == ["so no", "no more"]
    # So is one too far from the earlier copy to be the same word.
    r1c = ok(s1, [word("no", 0.6, 0.7), word("more", 1.2, 1.5)])
    assert texts(events([r0, r1c]))[:2] == ["so no", "no more"]


@pytest.mark.parametrize("bad", [{"results": "x"}, {"results": [1]},
                                 {"results": [{"type": "word", "start_time": 0, "end_time": 1}]},
                                 {"results": [{"type": "word", "start_time": 0, "end_time": True,
                                               "alternatives": [{"content": "a"}]}]}])
def test_parse_errors_say_where(bad: dict) -> None:
    with pytest.raises(ContractError, match="chunk-x"):
        parse_tokens(bad, 0.0, where="chunk-x")


def test_settings_from_env() -> None:
    cfg = Settings.from_env({"BWSM_STITCH_HOLD_SECONDS": "0.25", "BWSM_STITCH_CONTEXT_SECONDS": "8"}, []).stitching
    assert (cfg.hold_seconds, cfg.context_seconds) == (0.25, 8.0)
    with pytest.raises(ValueError, match="BWSM_STITCH_HOLD_SECONDS"):
        Settings.from_env({"BWSM_STITCH_HOLD_SECONDS": "soon"}, [])
    with pytest.raises(ValueError, match="BWSM_STITCH_CONTEXT_SECONDS"):
        Settings.from_env({"BWSM_STITCH_CONTEXT_SECONDS": "-1"}, [])
    with pytest.raises(ValueError, match="BWSM_STITCH_HOLD_SECONDS must be > 0"):
        StitchSettings(hold_seconds=0)
    with pytest.raises(ValueError, match="BWSM_STITCH_CONTEXT_SECONDS must be >="):
        StitchSettings(hold_seconds=2, context_seconds=1)


def test_a_book_in_the_stitcher_maps_raw_labels_in_chunk_order() -> None:
    """Without upstream relabelling, raw per-job labels are mapped by overlap evidence, in chunk order."""
    r0 = ok(S0, [word("hi", 1.0, 1.3, speaker="S1"), word("there", 9.6, 9.9, speaker="S2")])
    r1 = ok(S1, [word("there", 0.1, 0.4, speaker="S1"), word("you", 2.0, 2.3, speaker="S2")])
    r2 = ok(S2, [word("ok", 1.0, 1.2, speaker="S1")])
    for order in ([r0, r1, r2], [r2, r1, r0]):
        book, timeline, got = SpeakerBook(), CallTimeline("call-t"), []
        for result in order:
            got += [w.host.speaker for r in timeline.push(result, CFG, book.relabel)
                    if not isinstance(r, Completion) for w in r.units]
        assert got == ["spk_1", "spk_2", "spk_3", "spk_4"]


def test_a_call_that_speaks_again_after_an_idle_flush_reopens_and_completes_again() -> None:
    """The chunker cuts an idle call's chunk as `last`; if the call then sends audio, its next chunk must still be
    transcribed and a new call_completed (a new id, counting every chunk) must follow."""
    idle_cut = span(0, 0, 10, overlap=0, last=True)
    resumed = span(1, 10, 20, overlap=0, last=True)
    out = events([ok(idle_cut, [word("hello", 1.0, 1.4)]), ok(resumed, [word("again", 12.0, 12.4)])])
    assert [e["type"] for e in out] == ["segment", "call_completed", "segment", "call_completed"]
    assert [w["text"] for e in out for w in e["words"]] == ["hello", "again"]
    first, second = out[1], out[3]
    assert first["event_id"] != second["event_id"]
    assert (first["counts"]["chunks"], second["counts"]["chunks"]) == (1, 2)
    assert second["counts"]["words"] == 2
