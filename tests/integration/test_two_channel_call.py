"""A real stereo agent/caller call through the real flow, the whisper engine and the real broker.

The pyannote sample (30 s, two speakers) is split into two channels by its RTTM speaker turns (one speaker per
channel, silence elsewhere), as a contact centre records agent and caller, and published with channel
diarization (`agent`, `caller`). The flow cuts 10 s windows (two seams), the local worker's whisper engine
transcribes each channel, and then, in the segments and in the read side's turns, captions and `export`:
no punctuation-only turn, no doubled punctuation, each turn's words from one channel, every mark with a word of
its own channel, and captions of the two channels overlap only where the two parties really talk at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_harness import OutputReader, flow_env, make_topics, start_flow

from bytewax.speechmatics.connectors.cli.publish import CallAudio, publish_calls
from bytewax.speechmatics.connectors.cli.sample_audio import pyannote_sample, stereo_by_speaker
from bytewax.speechmatics.schemas.call_start import start_value
from bytewax.speechmatics.schemas.call_transcript import CallTranscript

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(600)]

CALL = "stereo-pyannote"
LABELS = ("agent", "caller")
DEADLINE_S = 400
PUNCT = ".,?!"


def export(call_id: str, fmt: str, topic: str, bootstrap: str) -> str:
    """The `export` command's output, run as a user runs it."""
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    done = subprocess.run([sys.executable, "-m", "bytewax.speechmatics.connectors.cli", "export", call_id,
                           "--format", fmt, "--topic", topic], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def srt_cues(srt: str) -> list[tuple[float, float, str]]:
    """(start, end, label) per cue."""
    def seconds(stamp: str) -> float:
        h, m, rest = stamp.split(":")
        s, ms = rest.split(",")
        return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000

    cues = []
    for block in srt.strip().split("\n\n"):
        _, times, first, *_ = block.split("\n")
        lo, hi = times.split(" --> ")
        cues.append((seconds(lo), seconds(hi), first.split(": ", 1)[0]))
    return cues


def talk_at_once(words: list[dict], lo: float, hi: float) -> bool:
    """Both channels have a word in [lo, hi] that overlaps a word of the other channel there."""
    inside = [w for w in words if w["type"] == "word" and w["start_time"] < hi and w["end_time"] > lo]
    return any(a["channel"] != b["channel"] and min(a["end_time"], b["end_time"]) > max(a["start_time"],
                                                                                        b["start_time"])
               for a in inside for b in inside)


def check_turn_text(label: str, text: str, where: str) -> None:
    """A turn's display text: a word in every space-separated piece, at most one mark glued to each side."""
    assert label in LABELS, (where, label, text)
    for piece in text.split(" "):
        word = piece.strip(PUNCT)
        assert word, (where, "punctuation-only piece", label, text)
        tail = piece[piece.rindex(word) + len(word):]
        assert len(tail) <= 1, (where, "doubled punctuation", label, piece)


def test_a_stereo_agent_caller_call_keeps_each_channel_apart(kafka_bootstrap: str, make_topic, local_worker,
                                                              tmp_path: Path) -> None:  # noqa: ANN001
    sample = pyannote_sample()
    pcm, rate = stereo_by_speaker(sample.wav, sample.rttm)
    worker = local_worker(engine="whisper", parallel=1)
    topics = make_topics(make_topic, audio_partitions=1)
    env = flow_env(kafka_bootstrap, topics, worker, tmp_path / "journal", BWSM_CHUNK_POLICY="fixed",
                   BWSM_CHUNK_SECONDS="10", BWSM_CHUNK_OVERLAP_SECONDS="1.0")
    reader = OutputReader(kafka_bootstrap, topics)
    run = start_flow(env, tmp_path / "flow.log")
    try:
        start = start_value({"diarization": "channel", "channel_labels": list(LABELS)})
        publish_calls([CallAudio(CALL, pcm, rate, 2, start)], topics.audio, frame_ms=200,
                      producer_config={"bootstrap.servers": kafka_bootstrap})
        out = reader.poll_until(lambda o: CALL in o.completed(), DEADLINE_S,
                                check=lambda: None if run.alive() else pytest.fail(run.log()))
    finally:
        run.stop()
        reader.close()

    events = out.by_call()[CALL]
    segments = [e for e in events if e["type"] == "segment" and not e.get("error")]
    assert len(segments) >= 3 and all(e["source"] == "batch" for e in segments)
    # The segments: every word on a channel, every mark right after (or before) a word of its own channel and
    # inside its time; the transcript one line per channel turn.
    for event in segments:
        words = event["words"]
        assert {w.get("channel") for w in words} <= set(LABELS)
        for n, w in enumerate(words):
            if w["type"] != "punctuation":
                continue
            host = words[n + 1] if w["attaches_to"] == "next" else words[n - 1]
            assert host["type"] == "word" and host["channel"] == w["channel"] and host["speaker"] == w["speaker"], \
                (event["job"]["chunk_index"], n)
            assert host["start_time"] <= w["start_time"] <= host["end_time"]
        for line in event["transcript"].splitlines():
            label, _, text = line.partition(": ")
            check_turn_text(label, text, "segment transcript")

    transcript = CallTranscript.from_events(events)
    assert transcript.completed
    words = transcript.words
    assert sum(w["type"] == "word" for w in words) >= 40  # the call was heard (not an accuracy figure)
    assert {w["channel"] for w in words} == set(LABELS)  # both parties
    for turn in transcript.turns:
        check_turn_text(turn.speaker, turn.text, "turn")

    # The exports, as a user gets them: one channel per txt line, and captions of the two channels overlapping
    # only where both parties really talk at once.
    txt = export(CALL, "txt", topics.transcripts, kafka_bootstrap)
    for line in txt.splitlines():
        label, _, text = line.split("] ", 1)[1].partition(": ")
        check_turn_text(label, text, "txt")
    srt = export(CALL, "srt", topics.transcripts, kafka_bootstrap)
    cues = srt_cues(srt)
    overlapping = [(a, b) for n, a in enumerate(cues) for b in cues[n + 1:]
                   if min(a[1], b[1]) - max(a[0], b[0]) > 0.0015]
    overlap_s = sum(min(a[1], b[1]) - max(a[0], b[0]) for a, b in overlapping)
    print(f"{len(cues)} cues, {len(overlapping)} pairs of cues overlap, {overlap_s:.2f} s in all")
    for a, b in overlapping:
        assert a[2] != b[2], ("one party's captions overlap", a, b)
        assert talk_at_once(words, max(a[0], b[0]), min(a[1], b[1])), (a, b)
