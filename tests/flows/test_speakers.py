"""SpeakerBook on hand-made transcripts: which labels stay, how raw ones are mapped, what is enrolled."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bytewax.speechmatics.connectors.speechmatics.settings import parse_channel_labels
from bytewax.speechmatics.flows.speakers import (
    MAX_IDENTIFIERS,
    SpeakerBook,
    channel_config,
    is_reserved,
    speaker_config,
)
from bytewax.speechmatics.schemas.chunks import ChunkSpan

RATE = 16000


def span(index: int, start: float, end: float, overlap: float = 0.5) -> ChunkSpan:
    return ChunkSpan("c", index, int(start * RATE), int(end * RATE), 0 if index == 0 else int(overlap * RATE),
                     RATE, "pcm_s16le", 1)


def word(text: str, start: float, end: float, speaker: str) -> dict:
    return {"type": "word", "start_time": start, "end_time": end,
            "alternatives": [{"content": text, "confidence": 0.9, "language": "en", "speaker": speaker}]}


def transcript(words: list[dict], speakers: dict[str, list[str]] | None = None) -> dict:
    out = {"format": "2.9", "results": words}
    if speakers is not None:
        out["speakers"] = [{"label": k, "speaker_identifiers": v} for k, v in speakers.items()]
    return out


def labels(t: dict) -> list[str]:
    return [r["alternatives"][0]["speaker"] for r in t["results"]]


def test_first_chunk_gets_new_stable_labels_and_learns_identifiers() -> None:
    book = SpeakerBook()
    raw = transcript([word("hi", 1, 1.2, "S1"), word("yo", 2, 2.2, "S2"), word("um", 3, 3.1, "UU")],
                     {"S1": ["id-a"], "S2": ["id-b"]})
    out = book.relabel(span(0, 0, 10), raw)
    assert labels(out) == ["spk_1", "spk_2", "UU"]
    assert labels(raw) == ["S1", "S2", "UU"]  # the input is not changed
    assert out["speakers"] == [{"label": "spk_1", "speaker_identifiers": ["id-a"]},
                               {"label": "spk_2", "speaker_identifiers": ["id-b"]}]
    assert book.enrollment() == out["speakers"]
    assert speaker_config(book) == {"get_speakers": True, "speakers": book.enrollment()}
    assert speaker_config(SpeakerBook()) == {"get_speakers": True}


def test_enrolled_labels_stay_and_a_new_voice_gets_a_new_label() -> None:
    book = SpeakerBook()
    book.relabel(span(0, 0, 10), transcript([word("hi", 1, 1.2, "S1")], {"S1": ["id-a"]}))
    out = book.relabel(span(1, 9.5, 20), transcript([word("yo", 12, 12.2, "S1"), word("hi", 13, 13.2, "spk_1")],
                                                    {"S1": ["id-c"], "spk_1": ["id-a2"]}))
    assert labels(out) == ["spk_2", "spk_1"]
    assert book.identifiers == {"spk_1": ["id-a", "id-a2"], "spk_2": ["id-c"]}


def test_raw_labels_follow_overlap_evidence() -> None:
    """Chunk 1's S1 said the overlap's words chunk 0 gave to spk_2: it is spk_2, not a new voice."""
    book = SpeakerBook()
    book.relabel(span(0, 0, 10), transcript([word("a", 1, 1.2, "S1"), word("b", 9.6, 9.9, "S2")]))
    out = book.relabel(span(1, 9.5, 20), transcript([word("b", 0.1, 0.4, "S1"), word("c", 2, 2.2, "S2")]))
    assert labels(out) == ["spk_2", "spk_3"]


def test_evidence_never_gives_one_label_to_two_raw_labels() -> None:
    book = SpeakerBook()
    book.relabel(span(0, 0, 10), transcript([word("b", 9.6, 9.7, "S1"), word("c", 9.75, 9.9, "S1")]))
    out = book.relabel(span(1, 9.5, 20), transcript([word("b", 0.1, 0.2, "S1"), word("c", 0.25, 0.4, "S2")]))
    assert sorted(labels(out)) == ["spk_1", "spk_2"]
    # An enrolled label present in the chunk is not given to a raw label too.
    out = book.relabel(span(2, 19.5, 30), transcript([word("x", 0.1, 0.2, "spk_1"), word("y", 0.3, 0.4, "S1")]))
    assert labels(out) == ["spk_1", "spk_3"]


def test_enrollment_keeps_the_most_recent_identifiers_of_every_speaker_within_the_limit() -> None:
    book = SpeakerBook()
    for n in range(40):
        book.relabel(span(n, n * 10, n * 10 + 10),
                     transcript([word("a", 1, 2, "spk_1"), word("b", 3, 4, "spk_2"), word("c", 5, 6, "spk_3")],
                                {"spk_1": [f"a{n}"], "spk_2": [f"b{n}"], "spk_3": [f"c{n}", f"c{n}x"]}))
    enrolled = book.enrollment()
    counts = {e["label"]: len(e["speaker_identifiers"]) for e in enrolled}
    assert sum(counts.values()) == MAX_IDENTIFIERS and min(counts.values()) >= MAX_IDENTIFIERS // 3
    by_label = {e["label"]: e["speaker_identifiers"] for e in enrolled}
    assert by_label["spk_1"][0] == "a39" and by_label["spk_3"][:2] == ["c39x", "c39"]
    assert pickle.loads(pickle.dumps(book)) == book


@given(st.lists(st.lists(st.sampled_from(["S1", "S2", "S3", "UU", "spk_1", "spk_9"]), max_size=6), max_size=8))
def test_labels_are_never_reserved_and_stay_consistent(chunks: list[list[str]]) -> None:
    book = SpeakerBook()
    for n, raws in enumerate(chunks):
        words = [word("w", 1 + i, 1.5 + i, raw) for i, raw in enumerate(raws)]
        out = labels(book.relabel(span(n, n * 10, n * 10 + 10), transcript(words)))
        for raw, label in zip(raws, out, strict=True):
            assert label == "UU" if raw == "UU" else not is_reserved(label)
            if not is_reserved(raw):
                assert label == raw
        mapping = {}
        for raw, label in zip(raws, out, strict=True):
            assert mapping.setdefault(raw, label) == label  # one label per raw label within a chunk
        assert len(set(mapping.values())) == len(mapping)  # and distinct raw labels stay distinct


def test_channel_labels() -> None:
    assert parse_channel_labels("agent,caller") == ("agent", "caller")
    assert parse_channel_labels("rep, customer") == ("rep", "customer")
    assert channel_config(("rep", "customer")) == {"diarization": "channel",
                                                   "channel_diarization_labels": ["rep", "customer"]}
    for bad in ("S1,S2", "agent", "agent,agent", "agent,,caller", "UU,x"):
        with pytest.raises(ValueError, match="labels"):
            parse_channel_labels(bad)


def test_results_without_usable_times_are_relabelled_but_are_no_evidence() -> None:
    book = SpeakerBook()
    bad = word("x", 1, 2, "S1")
    bad["start_time"] = "soon"
    out = book.relabel(span(0, 0, 10), transcript([bad, word("y", 9.6, 9.9, "S1")]))
    assert labels(out) == ["spk_1", "spk_1"] and [w.text for w in book.heard] == ["y"]


def test_malformed_results_pass_through_untouched() -> None:
    raw = {"results": [1, {"type": "word", "alternatives": "x"}, word("ok", 1, 2, "S1")], "speakers": [7]}
    out = SpeakerBook().relabel(span(0, 0, 10), raw)
    assert out["results"][:2] == raw["results"][:2] and labels({"results": out["results"][2:]}) == ["spk_1"]
