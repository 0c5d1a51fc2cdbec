"""The punctuation rule by example (`schemas/punctuation.py`), two-channel events as the read side and `tail` show
them (including events written before the rule), and paragraphs for calls without speakers."""

from __future__ import annotations

from bytewax.speechmatics.connectors.cli.tail import speaker_turns
from bytewax.speechmatics.schemas import CallTranscript
from bytewax.speechmatics.schemas.punctuation import transcript_text, word_groups


def w(text: str, start: float, end: float | None = None, channel: str | None = None,
      speaker: str | None = None, attaches: str = "previous") -> dict:
    speaker = speaker if speaker is not None else channel
    word = {"text": text, "start_time": start, "end_time": end if end is not None else start + 0.3,
            "confidence": 0.9, "speaker": speaker, "type": "word"}
    if text in ".,?!¿":
        word.update(type="punctuation", end_time=start, attaches_to=attaches, is_eos=text in ".?!")
    if channel is not None:
        word["channel"] = channel
    return word


def segment(event_id: str, words: list[dict], chunk: int = 0, lo: float = 0.0, hi: float = 30.0) -> dict:
    return {"schema_version": "1.1", "event_id": event_id, "call_id": "c2", "type": "segment", "source": "batch",
            "is_final": True, "start_time": lo, "end_time": hi, "transcript": "", "words": words,
            "speakers": sorted({x["speaker"] for x in words if x["speaker"]}), "language": "en", "channel": None,
            "job": {"id": "j", "chunk_index": chunk, "chunk_start": lo, "chunk_end": hi, "attempts": 1},
            "supersedes": {"start_time": lo, "end_time": hi}, "error": None}


# The call, as the old stitcher wrote it: the caller's "." after "design" (ends 10.62) came after the
# agent's "Okay" in the time-ordered list and carried Okay's end, 10.96.
OLD_EVENT_WORDS = [
    w("needs", 10.1, 10.3, "caller"), w("a", 10.3, 10.4, "caller"), w("design", 10.4, 10.62, "caller"),
    w("Okay", 10.5, 10.96, "agent"), w(".", 10.96, channel="caller"), w(".", 10.96, channel="agent"),
    w("I", 11.0, 11.1, "agent"), w("thought", 11.1, 11.4, "agent"),
]


def test_a_mark_joins_a_word_of_its_own_channel_whatever_comes_between() -> None:
    groups = word_groups(OLD_EVENT_WORDS)
    assert [[x["text"] for x in g] for g in groups] == [
        ["needs"], ["a"], ["design", "."], ["Okay", "."], ["I"], ["thought"]]
    assert [x["channel"] for x in groups[2]] == ["caller", "caller"]
    # `next` punctuation waits for its channel's next word, not the other party's.
    opening = [w("¿", 1.0, channel="a", attaches="next"), w("hola", 1.0, 1.2, "b"), w("sí", 1.1, 1.3, "a")]
    assert [[x["text"] for x in g] for g in word_groups(opening)] == [["hola"], ["¿", "sí"]]
    # No channels: one timeline, as before.
    assert [[x["text"] for x in g] for g in word_groups([w("hi", 0.0), w(",", 0.3), w("you", 0.4)])] == [
        ["hi", ","], ["you"]]


def test_a_two_channel_transcript_is_one_line_per_channel_turn() -> None:
    assert transcript_text(OLD_EVENT_WORDS) == "caller: needs a design.\nagent: Okay. I thought"
    assert transcript_text([w("hi", 0.0), w(",", 0.3), w("you", 0.4)]) == "hi, you"  # no channels: as before


def test_tail_shows_old_events_with_each_mark_on_its_own_channels_word() -> None:
    assert speaker_turns(segment("s0", OLD_EVENT_WORDS)) == [("caller", "needs a design."),
                                                             ("agent", "Okay. I thought")]
    assert speaker_turns(segment("s1", [w("hi", 0.0), w(".", 0.3)])) == [("?", "hi.")]


def test_the_read_side_places_an_old_events_mark_inside_its_own_word() -> None:
    transcript = CallTranscript.from_events([segment("s0", OLD_EVENT_WORDS)])
    words = transcript.words
    caller_mark = next(x for x in words if x["type"] == "punctuation" and x["channel"] == "caller")
    assert (caller_mark["start_time"], caller_mark["end_time"]) == (10.62, 10.62)  # design's end, not Okay's
    assert [(t.speaker, t.text) for t in transcript.turns] == [("caller", "needs a design."),
                                                               ("agent", "Okay. I thought")]
    assert transcript.text == "caller: needs a design.\nagent: Okay. I thought"
    assert transcript.to_txt() == "[00:00:10] caller: needs a design.\n[00:00:10] agent: Okay. I thought\n"


def test_a_mark_that_came_without_its_word_joins_its_word_or_is_dropped() -> None:
    first = segment("s0", [w("hello", 1.0, 1.5, "agent"), w("there", 1.2, 1.6, "caller")], chunk=0, lo=0.0, hi=2.0)
    # The next event starts with the agent's mark of "hello" (its word in the event before) and a caller's mark
    # whose word no event kept: the first joins "hello", the second is dropped rather than shown alone.
    second = segment("s1", [w("?", 1.5, channel="agent"), w("yes", 2.5, 2.8, "caller"), w(".", 9.0, channel="agent")],
                     chunk=1, lo=2.0, hi=10.0)
    transcript = CallTranscript.from_events([first, second])
    assert [(t.speaker, t.text) for t in transcript.turns] == [("agent", "hello?"), ("caller", "there yes")]


def sentence(start: float, n: int, end_mark: str = ".") -> list[dict]:
    """n words 0.4 s apart, then the mark."""
    out = [w(f"w{start:g}-{k}", start + 0.4 * k, start + 0.4 * k + 0.35) for k in range(n)]
    return [*out, w(end_mark, out[-1]["end_time"])]


def test_a_call_without_speakers_reads_in_paragraphs() -> None:
    words = [
        *sentence(0.0, 5),  # ends 1.95; the next sentence starts at 2.1: no pause, same paragraph
        *sentence(2.1, 5),  # ends 4.05; then a 2 s pause: a new paragraph
        *sentence(6.05, 5, ","),  # a pause after a comma is no paragraph's end
        *sentence(9.0, 60),  # 24 s of one sentence: past 30 s, cut at the last sentence end before it
        *sentence(33.5, 20),  # starts right after (no pause); the paragraph would last over 30 s: cut here
    ]
    transcript = CallTranscript.from_events([segment("s0", words, hi=45.0)])
    turns = transcript.turns
    assert [(t.start_time, t.speaker) for t in turns] == [(0.0, None), (6.05, None), (33.5, None)]
    assert all(t.end_time - t.start_time <= 30.0 for t in turns)
    lines = transcript.to_txt().splitlines()
    assert [line[:11] for line in lines] == ["[00:00:00] ", "[00:00:06] ", "[00:00:33] "]
    assert lines[0].endswith("w2.1-4.") and lines[1].startswith("[00:00:06] w6.05-0 ")


def test_no_paragraph_lasts_over_30_seconds_even_without_a_sentence_end() -> None:
    words = [w(f"x{k}", 0.5 * k, 0.5 * k + 0.4) for k in range(200)]  # 100 s, no punctuation at all
    turns = CallTranscript.from_events([segment("s0", words, hi=100.0)]).turns
    assert len(turns) == 4 and all(t.end_time - t.start_time <= 30.0 for t in turns)
    # Speakers' turns are not cut into paragraphs (they are turns already).
    labelled = [{**x, "speaker": "S1"} for x in words]
    assert len(CallTranscript.from_events([segment("s0", labelled, hi=100.0)]).turns) == 1


def test_one_partys_captions_never_overlap_each_other() -> None:
    # A recogniser timed the agent's "sure" to end after its next word starts; the caller's word between them
    # splits the agent's words into two cues: the first ends where the second starts.
    words = [w("sure", 0.0, 1.2, "agent"), w("mhm", 0.9, 1.0, "caller"), w("then", 1.1, 1.5, "agent")]
    srt = CallTranscript.from_events([segment("s0", words, hi=2.0)]).to_srt()
    assert srt.split("\n\n")[0] == "1\n00:00:00,000 --> 00:00:01,100\nagent: sure"
    assert "00:00:00,900 --> 00:00:01,000\ncaller: mhm" in srt and "00:00:01,100 --> 00:00:01,500\nagent: then" in srt
