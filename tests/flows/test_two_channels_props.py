"""Two-channel calls: each channel is its own timeline in every output (property tests over generated calls).

A generated call has two parties (agent, caller), each with its own words in order (talk of the two overlaps
freely), punctuation after a word (`previous`) or, rarely, before one (`next`). It is cut into chunks with
overlaps (0, 0.3 or 1 s: the seam merge by alignment and by time), each chunk's results selected by a recogniser's
edge rule (midpoint, drop, keep; times clipped), the two channels interleaved by time as a two-channel job returns
them (so the result before a mark is often the other party's word). Real-time finals per channel stand where a
chunk failed (the read side's merge).

Every output then keeps each channel's own word order, and attaches every punctuation mark to a word of its own
channel (the word it followed or preceded in that channel's truth), with that word's speaker and a time inside it,
never doubled and never alone: the stitcher's units, each segment's `words` and `transcript`, `CallTranscript`'s
`words`, `turns` and `text`, and the txt, srt, vtt and json exports. Captions of the two channels overlap only
where the two parties really talk at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bytewax.speechmatics.flows.segments import batch_segment, call_completed
from bytewax.speechmatics.flows.stitching import CallTimeline, Completion, Release, StitchSettings
from bytewax.speechmatics.schemas.call_transcript import CallTranscript
from bytewax.speechmatics.schemas.chunks import ChunkResult, ChunkSpan

RATE = 100  # samples per second: times on a 10 ms grid
CALL = "two-ch"
LABELS = {"agent": "a", "caller": "c"}
MARKS = {".": True, "?": True, ",": False}  # text -> is_eos
OPENING = "¿"  # a `next` mark
PUNCT = set(MARKS) | {OPENING}


@dataclass(frozen=True)
class Tok:
    text: str
    start: float
    end: float
    kind: str
    channel: str
    attaches_to: str | None = None


@st.composite
def channel_truth(draw: st.DrawFn, channel: str, seconds: float) -> list[Tok]:
    """One party's words in order: times on the grid, never overlapping each other."""
    out: list[Tok] = []
    at = draw(st.integers(0, 150))
    n = 0
    while at < seconds * RATE:
        length = draw(st.integers(5, 60))
        opening = draw(st.integers(0, 15)) == 0
        mark = draw(st.sampled_from([None, None, *MARKS]))
        start, end = at / RATE, (at + length) / RATE
        if opening:
            out.append(Tok(OPENING, start, start, "punctuation", channel, "next"))
        out.append(Tok(f"{LABELS[channel]}{n}", start, end, "word", channel))
        if mark:
            out.append(Tok(mark, end, end, "punctuation", channel, "previous"))
        n += 1
        at += length + draw(st.sampled_from([0, 0, 5, 10, 30, 80, 150]))
    return out


def host_index(truth: list[Tok], i: int) -> int:
    """The truth index of the word a mark attaches to."""
    step = 1 if truth[i].attaches_to == "next" else -1
    j = i + step
    while truth[j].kind != "word":
        j += step
    return j


def select(truth: list[Tok], lo: float, hi: float, rule: str) -> list[tuple[Tok, float, float]]:
    """A recogniser's view of [lo, hi): the edge rule decides cut words, marks follow their word, times clipped."""
    def kept(w: Tok) -> bool:
        if rule == "drop":
            return lo <= w.start and w.end <= hi
        if rule == "keep":
            return w.start < hi and w.end > lo
        return lo <= (w.start + w.end) / 2 < hi

    out = []
    for i, tok in enumerate(truth):
        if kept(truth[i if tok.kind == "word" else host_index(truth, i)]):
            out.append((tok, min(max(tok.start, lo), hi), min(max(tok.end, lo), hi)))
    return out


def result_of(tok: Tok, start: float, end: float, offset: float) -> dict:
    result = {"type": tok.kind, "start_time": round(start - offset, 6), "end_time": round(end - offset, 6),
              "channel": tok.channel,
              "alternatives": [{"content": tok.text, "confidence": 0.9, "language": "en", "speaker": "UU"}]}
    if tok.kind == "punctuation":
        result.update(attaches_to=tok.attaches_to, is_eos=MARKS.get(tok.text, False))
    return result


@dataclass
class Call:
    truth: dict[str, list[Tok]]
    spans: list[ChunkSpan]
    rule: str
    failed: set[int]


@st.composite
def calls(draw: st.DrawFn) -> Call:
    seconds = draw(st.integers(6, 40))
    truth = {ch: draw(channel_truth(ch, seconds)) for ch in LABELS}
    total = int(max(t.end for toks in truth.values() for t in toks) * RATE) + draw(st.integers(0, 50))
    length = draw(st.integers(3, 9)) * RATE
    overlap = draw(st.sampled_from([0, 30, 100]))
    spans, start, ov = [], 0, 0
    while True:
        end = min(total, start + ov + length)
        spans.append(ChunkSpan(CALL, len(spans), start, end, ov, RATE, "pcm_s16le", 2, last=end == total))
        if end == total:
            break
        ov = min(overlap, end - start)
        start = end - ov
    failed = set(draw(st.lists(st.integers(0, len(spans) - 1), max_size=1)))
    return Call(truth, spans, draw(st.sampled_from(["midpoint", "drop", "keep"])), failed)


def chunk_result(call: Call, span: ChunkSpan) -> ChunkResult:
    if span.index in call.failed:
        return ChunkResult(span, error="job failed")
    selected = [r for toks in call.truth.values() for r in select(toks, span.start_time, span.end_time, call.rule)]
    selected.sort(key=lambda r: r[1])  # the channels interleaved by time, each in its own order
    return ChunkResult(span, {"results": [result_of(t, s, e, span.start_time) for t, s, e in selected]})


def realtime_events(call: Call) -> list[dict]:
    """Real-time finals per channel: a few words each, the channel's own timeline."""
    events = []
    for channel, toks in call.truth.items():
        for n in range(0, len(toks), 4):
            part = toks[n:n + 4]
            words = [{"text": t.text, "start_time": t.start, "end_time": t.end, "confidence": 0.8, "speaker": channel,
                      "type": t.kind, "channel": channel, **({"attaches_to": t.attaches_to, "is_eos": False}
                                                              if t.kind == "punctuation" else {})} for t in part]
            events.append({"schema_version": "1.1", "event_id": f"rt-{channel}-{n}", "call_id": CALL, "type": "segment",
                           "source": "realtime", "is_final": True, "start_time": part[0].start,
                           "end_time": part[-1].end, "transcript": "", "words": words, "speakers": [channel],
                           "language": "en", "channel": channel})
    return events


# ------------------------------------------------------------------------------------------------ the checks


class Checker:
    """Checks sequences against the truth: each channel's words in order, each mark with its own word."""

    def __init__(self, truth: dict[str, list[Tok]]) -> None:
        self.truth = truth
        self.index = {ch: {t.text: i for i, t in enumerate(toks) if t.kind == "word"} for ch, toks in truth.items()}
        self.channel_of = {letter: ch for ch, letter in LABELS.items()}

    def mark_after(self, channel: str, word: str) -> str:
        toks, i = self.truth[channel], self.index[channel][word]
        return toks[i + 1].text if i + 1 < len(toks) and toks[i + 1].attaches_to == "previous" else ""

    def mark_before(self, channel: str, word: str) -> str:
        toks, i = self.truth[channel], self.index[channel][word]
        return toks[i - 1].text if i > 0 and toks[i - 1].attaches_to == "next" else ""

    def words(self, words: list[dict], what: str) -> None:
        """Word dicts in output order: per channel, order and attachment; marks inside their word."""
        for channel in LABELS:
            mine = [w for w in words if w.get("channel") == channel]
            assert all(w["speaker"] == channel for w in mine), (what, "speaker", channel)
            self._order([w["text"] for w in mine if w["type"] == "word"], channel, what)
            for n, w in enumerate(mine):
                if w["type"] != "punctuation":
                    continue
                step = 1 if w["attaches_to"] == "next" else -1
                assert 0 <= n + step < len(mine), (what, "a mark without a word", channel, w)
                host = mine[n + step]
                assert host["type"] == "word", (what, "doubled or lone mark", channel, w, host)
                expect = self.mark_before if step == 1 else self.mark_after
                assert expect(channel, host["text"]) == w["text"], (what, "mark on another word", channel, w, host)
                assert host["start_time"] <= w["start_time"] <= w["end_time"] <= host["end_time"], (what, w, host)
        assert {w.get("channel") for w in words} <= set(LABELS), what

    def _order(self, texts: list[str], channel: str, what: str) -> None:
        positions = [self.index[channel][t] for t in texts]
        pairs = list(zip(positions, positions[1:], strict=False))
        assert all(a < b for a, b in pairs), (what, "order (or a word twice)", channel, texts)

    def lines(self, lines: list[tuple[str | None, str]], what: str) -> None:
        """(label, display text) per line/turn/cue in output order: one channel per line, each channel's words in
        order across lines, every mark glued to a word of its own with the mark that word has in the truth."""
        seen: dict[str, list[str]] = {ch: [] for ch in LABELS}
        for label, text in lines:
            assert label in LABELS, (what, "label", label, text)
            for piece in text.split(" "):
                word = piece.strip("".join(PUNCT))
                assert word, (what, "a piece without a word", label, text)
                assert self.channel_of.get(word[0]) == label, (what, "a word of the other channel", label, text)
                before, after = piece[:piece.index(word)], piece[piece.index(word) + len(word):]
                assert before in ("", self.mark_before(label, word)), (what, "mark before", label, piece)
                assert after in ("", self.mark_after(label, word)), (what, "mark after", label, piece)
                seen[label].append(word)
        for channel, texts in seen.items():
            self._order(texts, channel, what)


def label_lines(text: str) -> list[tuple[str | None, str]]:
    out = []
    for line in text.splitlines():
        label, _, said = line.partition(": ")
        out.append((label, said))
    return out


CUE = re.compile(r"(\d\d):(\d\d):(\d\d)[,.](\d\d\d) --> (\d\d):(\d\d):(\d\d)[,.](\d\d\d)")


def seconds(groups: tuple[str, ...]) -> float:
    h, m, s, ms = (int(g) for g in groups)
    return h * 3600 + m * 60 + s + ms / 1000


def srt_cues(srt: str) -> list[tuple[float, float, str, str]]:
    cues = []
    for block in srt.strip().split("\n\n"):
        _, times, *text = block.split("\n")
        found = CUE.fullmatch(times)
        assert found, times
        label, _, said = " ".join(text).partition(": ")
        cues.append((seconds(found.groups()[:4]), seconds(found.groups()[4:]), label, said))
    return cues


def vtt_cues(vtt: str) -> list[tuple[float, float, str, str]]:
    cues = []
    for block in vtt.strip().split("\n\n")[1:]:
        times, *text = block.split("\n")
        found = CUE.fullmatch(times)
        assert found, times
        said = " ".join(text)
        voice = re.match(r"<v ([^>]*)>", said)
        assert voice, said
        cues.append((seconds(found.groups()[:4]), seconds(found.groups()[4:]), voice.group(1), said[voice.end():]))
    return cues


def check_cue_overlaps(cues: list[tuple[float, float, str, str]], words: list[dict], what: str) -> None:
    """Cues of one channel never overlap; cues of two overlap in time only where a word of each overlaps the
    other's."""
    times: dict[tuple[str | None, str], list[tuple[float, float]]] = {}
    for w in words:
        if w["type"] == "word":
            times.setdefault((w.get("channel"), w["text"]), []).append((w["start_time"], w["end_time"]))

    def spans(label: str, said: str) -> list[tuple[float, float]]:
        return [t for piece in said.split(" ") for t in times.get((label, piece.strip("".join(PUNCT))), [])]

    for n, (s1, e1, l1, t1) in enumerate(cues):
        for s2, e2, l2, t2 in cues[n + 1:]:
            if min(e1, e2) - max(s1, s2) <= 0.0015:  # no overlap beyond millisecond rounding
                continue
            assert l1 != l2, (what, "one channel's cues overlap", (s1, e1, l1, t1), (s2, e2, l2, t2))
            assert any(min(a[1], b[1]) - max(a[0], b[0]) > 0 for a in spans(l1, t1) for b in spans(l2, t2)), (
                what, "cues overlap where the parties do not talk at once", (s1, e1, l1, t1), (s2, e2, l2, t2))


def stitched(call: Call) -> tuple[list[Release], list[dict]]:
    timeline, releases, events = CallTimeline(CALL), [], []
    for span in call.spans:
        for item in timeline.push(chunk_result(call, span), StitchSettings()):
            if isinstance(item, Completion):
                events.append(call_completed(item))
            else:
                releases.append(item)
                events.append(batch_segment(item))
    return releases, events


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls())
def test_every_output_keeps_each_channels_order_and_its_punctuation(call: Call) -> None:
    releases, events = stitched(call)
    check = Checker(call.truth)
    for release in releases:
        tokens = [{"text": t.text, "type": t.kind, "channel": t.channel, "speaker": t.speaker,
                   "attaches_to": t.attaches_to, "start_time": t.start, "end_time": t.end}
                  for u in release.units for t in u.tokens()]
        check.words(tokens, "stitched units")
    batch_words = [w for e in events for w in e["words"]]
    check.words(batch_words, "segment words (all segments)")
    for event in events:
        check.lines(label_lines(event["transcript"]), "segment transcript")

    transcript = CallTranscript.from_events([*events, *(realtime_events(call) if call.failed else [])])
    words = transcript.words
    check.words(words, "CallTranscript.words")
    check.lines([(t.speaker, t.text) for t in transcript.turns], "CallTranscript.turns")
    check.lines(label_lines(transcript.text), "CallTranscript.text")
    check.lines([(label, said) for label, said in label_lines(transcript.to_txt())
                 for label, said in [(label.split("] ", 1)[1], said)]], "txt")
    document = transcript.to_document()
    check.words(document["words"], "json words")
    check.lines([(t["speaker"], t["text"]) for t in document["turns"]], "json turns")
    for name, cues in (("srt", srt_cues(transcript.to_srt())), ("vtt", vtt_cues(transcript.to_vtt()))):
        check.lines([(label, said) for _, _, label, said in cues], name)
        check_cue_overlaps(cues, words, name)


def test_words_an_engine_started_together_keep_its_order() -> None:
    # Whisper clamps a word's start to the one before it: "to" then "go" both start at 1.0, "go" ends first.
    span = ChunkSpan(CALL, 0, 0, 300, 0, RATE, "pcm_s16le", 2, last=True)
    results = [result_of(Tok(text, start, end, "word", "agent"), start, end, 0.0)
               for text, start, end in (("want", 0.5, 1.0), ("to", 1.0, 1.5), ("go", 1.0, 1.3))]
    (release, _) = CallTimeline(CALL).push(ChunkResult(span, {"results": results}), StitchSettings())
    assert [u.host.text for u in release.units] == ["want", "to", "go"]
