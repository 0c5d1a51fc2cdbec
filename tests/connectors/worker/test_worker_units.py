"""Pure logic of the local worker: locating chunks, edge rules, faults, capacity, listing, WAV parsing, formats."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bytewax.speechmatics.connectors.cli.sample_audio import normalise_for_wer, stm_text
from bytewax.speechmatics.connectors.speechmatics.wav import encode_wav
from bytewax.speechmatics.connectors.worker.audio import AudioFormatError, canonical_samples, parse_wav
from bytewax.speechmatics.connectors.worker.engines.reference import (
    TruthError,
    TruthWord,
    find_offset,
    parse_truth,
    select_words,
)
from bytewax.speechmatics.connectors.worker.engines.whisper import (
    ModelResolutionError,
    join_wheel_model,
    split_word,
    word_confidence,
    words_to_results,
)
from bytewax.speechmatics.connectors.worker.faults import Distribution, FaultConfigError, FaultPlan
from bytewax.speechmatics.connectors.worker.formats import to_srt, to_txt
from bytewax.speechmatics.connectors.worker.jobs import EngineCapacity, Job, JobStore, iso_now

# ---------------------------------------------------------------- locating chunks


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    frame_bytes=st.sampled_from([1, 2, 4]),
    silence=st.integers(0, 3000),
    length=st.integers(1, 6000),
    where=st.floats(0, 1),
)
def test_find_offset_finds_every_chunk_even_after_silence(seed, frame_bytes, silence, length, where):
    rng = np.random.default_rng(seed)
    frames = 20000
    call = rng.integers(0, 256, frames * frame_bytes, dtype=np.uint8)
    start = int(where * (frames - length))
    view = call.reshape(frames, frame_bytes)
    view[start : start + min(silence, length)] = 0  # the chunk opens in digital silence
    haystack = call.tobytes()
    needle = haystack[start * frame_bytes : (start + length) * frame_bytes]
    found = find_offset(haystack, needle, frame_bytes)
    if len(set(needle[i : i + frame_bytes] for i in range(0, len(needle), frame_bytes))) == 1:
        assert found is None  # nothing distinguishes a constant chunk
    else:
        assert found is not None
        assert haystack[found * frame_bytes : (found + length) * frame_bytes] == needle


def test_find_offset_respects_frame_alignment_and_unknown_audio():
    call = bytes([1, 2, 3, 4, 5, 6, 7, 8])
    assert find_offset(call, bytes([3, 4, 5, 6]), 2) == 1
    assert find_offset(call, bytes([2, 3, 4, 5]), 2) is None  # matches only off a frame boundary
    assert find_offset(call, bytes([9, 9, 9, 1]), 2) is None
    assert find_offset(call, call + b"\1\2", 2) is None


def test_find_offset_tolerates_gap_filled_chunk():
    rng = np.random.default_rng(3)
    call = rng.integers(-3000, 3000, 50000).astype("<i2")
    chunk = call[10000:30000].copy()
    chunk[12000:13000] = 0  # a gap the chunker filled with silence
    assert find_offset(call.tobytes(), chunk.tobytes(), 2) == 10000


def test_mulaw_zeros_are_folded_so_a_roundtrip_through_a_ulaw_wav_still_matches():
    codes = bytes(range(256)) * 40
    wav = encode_wav(codes, 8000, "mulaw", 1)
    parsed = parse_wav(wav)
    assert parsed.encoding == "mulaw" and parsed.sample_rate == 8000
    assert parsed.data != codes  # libsndfile writes 0x7F as 0xFF
    from bytewax.speechmatics.connectors.worker.audio import RawAudio

    assert canonical_samples(parsed) == canonical_samples(RawAudio(codes, 8000, 1, "mulaw"))


# ---------------------------------------------------------------- edge rules


def _truth() -> list[TruthWord]:
    return parse_truth(
        [
            {"text": "a", "start_time": 0.0, "end_time": 1.0, "speaker": "x"},
            {"text": "b", "start_time": 1.8, "end_time": 2.6, "speaker": "y"},
            {"text": ".", "start_time": 2.6, "end_time": 2.6, "type": "punctuation"},
            {"text": "c", "start_time": 3.0, "end_time": 4.0, "speaker": "x"},
        ]
    )


@pytest.mark.parametrize(
    ("rule", "expected"),
    [("midpoint", ["b", "."]), ("drop", []), ("keep", ["b", ".", "c"])],
)
def test_edge_rules_on_a_chunk_cutting_two_words(rule, expected):
    # chunk [2.1, 3.4): b's midpoint 2.2 inside, c's midpoint 3.5 outside, both cut by an edge
    kept = select_words(_truth(), 2.1, 3.4, rule)
    assert [w.text for w, _, _ in kept] == expected
    for _, s, e in kept:
        assert 2.1 <= s <= e <= 3.4


def test_punctuation_follows_its_word():
    kept = select_words(_truth(), 2.3, 3.0, "midpoint")  # b's midpoint 2.2 is outside: its "." goes too
    assert kept == []


def test_punctuation_stays_with_a_word_of_its_own_channel():
    # the agent's "." comes after the caller's "yes" in time: it belongs to the agent's "ok", so it goes
    # (and stays out) with "ok", whatever happens to "yes"
    truth = parse_truth([
        {"text": "ok", "start_time": 1.0, "end_time": 1.6, "channel": 1},
        {"text": "yes", "start_time": 1.5, "end_time": 2.4, "channel": 2},
        {"text": ".", "start_time": 2.4, "end_time": 2.4, "type": "punctuation", "channel": 1},
    ])
    assert [w.text for w, _, _ in select_words(truth, 1.4, 3.0, "midpoint")] == ["yes"]
    assert [w.text for w, _, _ in select_words(truth, 0.0, 1.4, "midpoint")] == ["ok", "."]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 5)), min_size=1, max_size=40), st.floats(0, 90),
       st.floats(1, 40))
def test_midpoint_rule_assigns_each_word_to_exactly_one_of_two_adjacent_chunks(spans, cut, length):
    truth = parse_truth([{"text": f"w{i}", "start_time": s, "end_time": s + d} for i, (s, d) in enumerate(spans)])
    left = {w for w, _, _ in select_words(truth, cut - length, cut, "midpoint")}
    right = {w for w, _, _ in select_words(truth, cut, cut + length, "midpoint")}
    assert not left & right
    inside = {w for w in truth if cut - length <= w.midpoint < cut + length}
    assert left | right == inside


def test_parse_truth_says_which_word_is_wrong():
    with pytest.raises(TruthError, match=r"words\[1\].*start_time"):
        parse_truth([{"text": "ok", "start_time": 0, "end_time": 1}, {"text": "bad", "start_time": 2, "end_time": 1}])
    with pytest.raises(TruthError, match=r"words\[0\].*type"):
        parse_truth([{"text": "x", "start_time": 0, "end_time": 1, "type": "entity"}])


# ---------------------------------------------------------------- faults


def test_fault_schedule_comes_before_rates_and_rates_follow_their_probabilities():
    plan = FaultPlan.parse({"schedule": {"post": ["429", "drop", "ok"]}, "rates": {"post": {"503": 0.25}}, "seed": 1})
    assert [plan.outcome("post") for _ in range(3)] == ["429", "drop", "ok"]
    draws = [plan.outcome("post") for _ in range(4000)]
    assert 0.2 < draws.count("503") / len(draws) < 0.3
    assert set(draws) == {"503", "ok"}
    assert plan.outcome("get") == "ok"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"rates": {"get": {"drop": 0.5}}}, "post"),
        ({"rates": {"post": {"429": 0.7, "503": 0.6}}}, "more than 1"),
        ({"schedule": {"put": ["429"]}}, "route classes"),
        ({"schedule": {"post": ["teapot"]}}, "outcome"),
        ({"latency": {"get": {"dist": "uniform", "min": 2, "max": 1}}}, "min <= max"),
        ({"bogus": 1}, "unknown fault keys"),
    ],
)
def test_bad_fault_documents_are_refused_with_the_key(doc, message):
    with pytest.raises(FaultConfigError, match=message):
        FaultPlan.parse(doc)


def test_distributions_stay_in_their_bounds():
    rng = random.Random(5)
    uniform = Distribution.parse({"dist": "uniform", "min": 0.1, "max": 0.2}, "x")
    capped = Distribution.parse({"dist": "exponential", "mean": 1.0, "max": 0.5}, "x")
    assert all(0.1 <= uniform.sample(rng) <= 0.2 for _ in range(500))
    assert all(0 <= capped.sample(rng) <= 0.5 for _ in range(500))
    assert Distribution.parse(0.3, "x").sample(rng) == 0.3


# ---------------------------------------------------------------- capacity and listing


def test_capacity_refuses_with_seed_003_message_and_frees_on_release():
    cap = EngineCapacity(5)
    assert cap.try_acquire("a", 2) is None
    assert cap.try_acquire("b", 8) == "Server busy: 8 engines not available (2 engines in use, 5 parallel allowed)"
    assert cap.try_acquire("c", 3) is None
    assert cap.snapshot()["unused_engines"] == 0
    cap.release("a")
    assert cap.snapshot() == {"active_jobs": [{"job_id": "c", "parallel_engines": 3}], "max_engines": 5,
                              "unused_engines": 2}


def test_listing_is_newest_first_capped_and_windowed():
    store = JobStore()
    for n in range(150):
        store.add(Job(f"j{n}", {"tracking": {"reference": f"r{n}"}}, "a.wav", 1.0, 1, None, created=1000.0 + n))
    listed = store.listing()
    assert len(listed) == 100 and listed[0].id == "j149" and listed[-1].id == "j50"
    assert [j.id for j in store.listing(limit=3)] == ["j149", "j148", "j147"]
    window = store.listing(created_after=iso_now(1009.5), created_before=iso_now(1012.5))
    assert [j.id for j in window] == ["j12", "j11", "j10"]


# ---------------------------------------------------------------- audio and formats


def test_parse_wav_reads_what_the_submitter_writes_and_refuses_other_formats():
    pcm = np.arange(-500, 500, dtype="<i2").repeat(2).tobytes()
    parsed = parse_wav(encode_wav(pcm, 48000, "pcm_s16le", 2))
    assert (parsed.data, parsed.sample_rate, parsed.channels, parsed.encoding) == (pcm, 48000, 2, "pcm_s16le")
    with pytest.raises(AudioFormatError):
        parse_wav(b"ID3 not a wav at all")


def _result(kind, content, start, end, speaker="UU", eos=None):
    out = {"type": kind, "start_time": start, "end_time": end,
           "alternatives": [{"content": content, "confidence": 1.0, "language": "en", "speaker": speaker}]}
    if kind == "punctuation":
        out.update(attaches_to="previous", is_eos=eos)
    return out


def test_txt_and_srt_render_turns_and_cues():
    doc = {"results": [
        _result("word", "hello", 0.0, 0.5, "S1"), _result("punctuation", ".", 0.5, 0.5, "S1", True),
        _result("word", "hi", 3.0, 3.2, "S2"), _result("word", "there", 3.3, 3.6, "S2"),
    ]}
    assert to_txt(doc) == "SPEAKER S1: hello.\nSPEAKER S2: hi there\n"
    assert to_srt(doc) == "1\n00:00:00,000 --> 00:00:00,500\nhello.\n\n2\n00:00:03,000 --> 00:00:03,600\nhi there\n"


def test_whisper_words_become_json_v2_items():
    assert split_word(" Hello,") == ("", "Hello", ",")
    results = words_to_results([(" Hi", 0.0, 0.3, 0.9), (" there.", 0.3, 0.8, 0.5)], "en", None)
    assert [(r["type"], r["alternatives"][0]["content"]) for r in results] == [
        ("word", "Hi"), ("word", "there"), ("punctuation", ".")]
    assert results[2]["is_eos"] is True and results[2]["start_time"] == 0.8


@pytest.mark.parametrize(
    ("probability", "expected"),
    [(0.0004, 0.0), (0.0005, 0.001), (0.9996, 1.0), (1.0000001, 1.0), (-1e-9, 0.0), (float("nan"), 0.0),
     (float("inf"), 0.0), (np.float32(0.25), 0.25)],
)
def test_whisper_confidence_stays_inside_the_event_schema(probability: float, expected: float) -> None:
    from bytewax.speechmatics.schemas.events import event_schema

    bounds = event_schema()["$defs"]["word"]["properties"]["confidence"]
    got = word_confidence(probability)
    assert got == expected and type(got) is float
    assert bounds["minimum"] <= got <= bounds["maximum"]
    item = words_to_results([(" so.", 0.0, 0.2, probability)], "en", None)
    assert [r["alternatives"][0]["confidence"] for r in item] == [expected, 1.0]


def test_join_wheel_model_verifies_and_skips_rehash(tmp_path):
    p1, p2, target = tmp_path / "p1", tmp_path / "p2", tmp_path / "cache"
    p1.mkdir()
    p2.mkdir()
    (p1 / "model.bin.part1").write_bytes(b"abc" * 1000)
    (p2 / "model.bin.part2").write_bytes(b"def" * 1000)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (p1 / name).write_text(name)
    digest = hashlib.sha256(b"abc" * 1000 + b"def" * 1000).hexdigest()
    with pytest.raises(ModelResolutionError, match="SHA-256"):
        join_wheel_model(p1, p2, target, "0" * 64)
    assert not (target / "model.bin").exists()
    join_wheel_model(p1, p2, target, digest)
    assert (target / "model.bin").read_bytes() == b"abc" * 1000 + b"def" * 1000
    assert (target / "vocabulary.txt").read_text() == "vocabulary.txt"
    marker = json.loads((target / ".bwsm-verified").read_text())
    (target / "model.bin").write_bytes(b"tampered")  # a second start trusts the marker: no rehash
    join_wheel_model(p1, p2, target, digest)
    assert (target / "model.bin").read_bytes() == b"tampered"
    assert json.loads((target / ".bwsm-verified").read_text()) == marker


def test_stm_text_and_wer_normalisation(tmp_path):
    stm = tmp_path / "a.stm"
    stm.write_text("s 1 A 0.1 0.5 Oh, hello.\ns 1 B 0.6 1.0 <o,f0,male> I didn't know!\n")
    assert stm_text(stm) == "Oh, hello. I didn't know!"
    assert normalise_for_wer(stm_text(stm)) == "oh hello i didn't know"


def test_cli_flags_merge_into_one_fault_document():
    from bytewax.speechmatics.connectors.cli.worker import build_parser, fault_document

    args = build_parser({}).parse_args([
        "--engine", "reference", "--port", "0", "--faults", '{"schedule": {"get": ["429"]}}',
        "--fault-post-429", "0.2", "--fault-503", "0.1", "--fault-latency", "0.1:0.3", "--fault-seed", "4"])
    assert fault_document(args) == {
        "schedule": {"get": ["429"]},
        "rates": {"post": {"429": 0.2, "503": 0.1}, "get": {"503": 0.1}},
        "latency": {"post": {"dist": "uniform", "min": 0.1, "max": 0.3},
                    "get": {"dist": "uniform", "min": 0.1, "max": 0.3}},
        "seed": 4,
    }
    with pytest.raises(SystemExit):  # a fraction above 1: refused by the command line (connectors/cli/arguments.py)
        build_parser({}).parse_args(["--fault-post-429", "1.5"])
    bad = build_parser({}).parse_args(["--fault-post-429", "0.6", "--fault-503", "0.6"])
    with pytest.raises(FaultConfigError, match="add up to more than 1"):
        fault_document(bad)


def test_find_offset_tolerates_a_chunk_padded_past_the_end_of_the_call():
    rng = np.random.default_rng(4)
    call = rng.integers(-3000, 3000, 50000).astype("<i2")
    chunk = np.concatenate([call[40000:], np.zeros(5000, dtype="<i2")])
    assert find_offset(call.tobytes(), chunk.tobytes(), 2) == 40000


def test_reference_speakers_in_order_of_appearance_and_unvoiced_punctuation():
    from bytewax.speechmatics.connectors.worker.audio import RawAudio
    from bytewax.speechmatics.connectors.worker.engines.reference import ReferenceEngine

    audio = np.random.default_rng(8).integers(-3000, 3000, 16000 * 4).astype("<i2").tobytes()
    engine = ReferenceEngine()
    engine.register("c", RawAudio(audio, 16000, 1, "pcm_s16le"), [
        {"text": "one", "start_time": 0.5, "end_time": 0.9, "speaker": "bob"},
        {"text": ",", "start_time": 0.9, "end_time": 0.9, "type": "punctuation"},
        {"text": "two", "start_time": 1.5, "end_time": 1.9, "speaker": "ann"},
        {"text": "three", "start_time": 2.5, "end_time": 2.9, "speaker": "bob"},
    ])
    chunk = RawAudio(audio[16000:], 16000, 1, "pcm_s16le")  # from 0.5 s
    out = engine.transcribe("job", chunk, {"diarization": "speaker", "speaker_diarization_config": {"get_speakers": 1}})
    got = [(r["alternatives"][0]["content"], r["alternatives"][0]["speaker"], r["start_time"]) for r in out["results"]]
    assert got == [("one", "S1", 0.0), (",", "S1", 0.4), ("two", "S2", 1.0), ("three", "S1", 2.0)]
    assert [s["label"] for s in out["speakers"]] == ["S1", "S2"]
    plain = engine.transcribe("job2", chunk, {})
    assert {r["alternatives"][0]["speaker"] for r in plain["results"]} == {"UU"} and plain["speakers"] is None


def test_whisper_words_keep_their_order_when_alignment_steps_back() -> None:
    words = [(" a", 1.0, 1.2, 0.9), (" beep.", 1.2, 1.5, 0.9), (" This", 1.45, 1.6, 0.9)]
    results = words_to_results(words, "en", None)
    assert [r["alternatives"][0]["content"] for r in results] == ["a", "beep", ".", "This"]
    stepped_back = words_to_results([(" one", 2.0, 2.4, 0.9), (" two", 1.9, 2.5, 0.9)], "en", None)
    assert [r["start_time"] for r in stepped_back] == [2.0, 2.0]
