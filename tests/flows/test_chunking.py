"""Unit tests of the pure chunking code: config, reorder buffer, cuts, end/idle flush, refusals, snapshots."""

from __future__ import annotations

import dataclasses
import os
import pickle
import warnings
from dataclasses import replace

import numpy as np
import pytest
from test_chunking_helpers import encode_call, frames_for, quiet, run_chunker, speech_like, strip_clock

from bytewax.speechmatics.flows.chunking import (
    DUPLICATE,
    SEAL_PARTS,
    TOO_FAR,
    CallChunker,
    ChunkConfig,
    ReorderBuffer,
    Tally,
    silence,
)
from bytewax.speechmatics.flows.settings import Settings
from bytewax.speechmatics.flows.vad import MULAW_TO_PCM16, SpeechDetector, to_mono_pcm16
from bytewax.speechmatics.schemas.chunks import Chunk
from bytewax.speechmatics.schemas.dead_letters import DeadLetter
from bytewax.speechmatics.schemas.frames import AudioFrame

RATE = 8000
SMALL = ChunkConfig(policy="fixed", chunk_seconds=1.0, overlap_seconds=0.1, reorder_window_frames=3)


def chunks_of(out: list) -> list[Chunk]:
    return [o for o in out if isinstance(o, Chunk)]


def frame(seq: int, nbytes: int = 320, end: bool = False, fill: int = 1, **kw) -> AudioFrame:
    return AudioFrame("call-1", seq, bytes([fill]) * nbytes, RATE, end=end, **kw)


# --- config -------------------------------------------------------------------------------------------


def test_config_reads_the_environment() -> None:
    cfg = Settings.from_env({"BWSM_CHUNK_POLICY": "VAD", "BWSM_VAD_MIN_SECONDS": "20", "BWSM_VAD_MAX_SECONDS": "40",
                                "BWSM_VAD_AGGRESSIVENESS": "3", "BWSM_REORDER_WINDOW_FRAMES": "8"}, []).chunking
    assert (cfg.policy, cfg.vad_min_seconds, cfg.vad_max_seconds, cfg.vad_aggressiveness) == ("vad", 20, 40, 3)
    assert cfg.reorder_window_frames == 8 and cfg.max_seconds == 40
    assert Settings.from_env({}, []).chunking == ChunkConfig()
    assert ChunkConfig().max_seconds == 35  # the default policy is vad: its forced cut


@pytest.mark.parametrize("env, names", [
    ({"BWSM_CHUNK_POLICY": "words"}, "BWSM_CHUNK_POLICY"),
    ({"BWSM_CHUNK_SECONDS": "thirty"}, "BWSM_CHUNK_SECONDS"),
    ({"BWSM_CHUNK_OVERLAP_SECONDS": "40"}, "BWSM_CHUNK_OVERLAP_SECONDS"),
    ({"BWSM_VAD_MIN_SECONDS": "36"}, "BWSM_VAD_MAX_SECONDS"),
    ({"BWSM_VAD_AGGRESSIVENESS": "5"}, "BWSM_VAD_AGGRESSIVENESS"),
    ({"BWSM_VAD_FRAME_MS": "25"}, "BWSM_VAD_FRAME_MS"),
    ({"BWSM_REORDER_WINDOW_FRAMES": "-1"}, "BWSM_REORDER_WINDOW_FRAMES"),
])
def test_bad_config_names_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ValueError, match=names):
        Settings.from_env(env, [])


# --- reorder buffer -----------------------------------------------------------------------------------


def test_reorder_releases_in_order_and_drops_duplicates() -> None:
    buf = ReorderBuffer(window=4, max_gap=100)
    assert buf.push(frame(1)) == []
    assert buf.push(frame(2)) == []
    assert buf.push(frame(1)) is DUPLICATE
    assert [f.seq for f in buf.push(frame(0))] == [0, 1, 2]
    assert buf.push(frame(0)) is DUPLICATE
    assert buf.next_seq == 3


def test_reorder_fills_a_seq_once_the_window_passes_it_with_the_previous_frames_length() -> None:
    buf = ReorderBuffer(window=3, max_gap=100)
    buf.push(frame(0, 100))
    assert buf.push(frame(2, 60)) == []
    assert buf.push(frame(3, 60)) == []
    released = buf.push(frame(4, 60))  # 4 - 1 >= 3: seq 1 is lost; filled with as many bytes as seq 0
    assert [x if isinstance(x, int) else x.seq for x in released] == [100, 2, 3, 4]
    assert buf.push(frame(1)) is DUPLICATE  # too late: already filled


def test_reorder_gap_at_the_start_uses_the_first_frame_received() -> None:
    buf = ReorderBuffer(window=1, max_gap=100)
    released = buf.push(frame(2, 30))
    assert [x if isinstance(x, int) else x.seq for x in released] == [30, 30, 2]


def test_reorder_forced_release_fills_every_hole_and_refuses_wild_jumps() -> None:
    buf = ReorderBuffer(window=10, max_gap=20)
    buf.push(frame(0, 40))
    buf.push(frame(3, 40))
    buf.push(frame(5, 40))
    assert buf.push(frame(26)) is TOO_FAR
    released = buf.release(force=True)
    assert [x if isinstance(x, int) else x.seq for x in released] == [40, 40, 3, 40, 5]
    assert buf.next_seq == 6


def test_window_zero_never_waits() -> None:
    buf = ReorderBuffer(window=0, max_gap=100)
    buf.push(frame(0, 20))
    assert [x if isinstance(x, int) else x.seq for x in buf.push(frame(2, 20))] == [20, 2]


# --- cutting ------------------------------------------------------------------------------------------


def test_fixed_windows_overlap_and_concatenate() -> None:
    audio = os.urandom(RATE * 2 * 3 + 2 * 123)
    out = run_chunker(SMALL, frames_for("call-1", audio, [160], (RATE, "pcm_s16le", 1)))
    chunks = chunks_of(out)
    assert [c.span.index for c in chunks] == [0, 1, 2, 3]
    assert [c.span.start_sample for c in chunks] == [0, 7200, 14400, 21600]
    assert all(c.span.end_sample - c.span.start_sample <= RATE for c in chunks)
    assert [c.span.overlap_samples for c in chunks] == [0, 800, 800, 800]
    assert chunks[1].audio[: 800 * 2] == chunks[0].audio[-800 * 2 :]
    assert b"".join(c.new_audio for c in chunks) == audio
    assert [c.span.last for c in chunks] == [False, False, False, True]


def test_sources_name_the_offsets_of_each_chunks_frames() -> None:
    audio = bytes(RATE * 2 * 2)  # 2 s in 0.1 s frames: 1 s chunks start at 0, 0.9 and 1.8 s
    frames = frames_for("call-1", audio, [RATE // 10], (RATE, "pcm_s16le", 1), first_offset=1000)
    frames.append(AudioFrame("call-1", 20, b"", RATE, end=True, topic="calls.audio", partition=0, offset=1020))
    frames[19] = dataclasses.replace(frames[19], end=False)
    chunks = chunks_of(run_chunker(SMALL, frames))
    assert [c.source for c in chunks] == [
        (("calls.audio", 0, 1000, 1009),),
        (("calls.audio", 0, 1009, 1018),),  # 1009 holds the overlap
        (("calls.audio", 0, 1018, 1020),),  # 1020 is the empty end frame
    ]


def test_end_frame_with_nothing_new_marks_the_chunk_just_cut_as_last() -> None:
    audio = bytes(RATE * 2)  # exactly one chunk's length
    chunks = chunks_of(run_chunker(SMALL, frames_for("call-1", audio, [RATE // 10], (RATE, "pcm_s16le", 1))))
    assert [(c.span.index, c.span.last) for c in chunks] == [(0, True)]


def test_a_chunk_with_nothing_after_it_waits_for_audio_or_the_end_to_leave() -> None:
    chunker, out = CallChunker(SMALL), []
    for seq in range(10):
        chunker.push(frame(seq, RATE * 2 // 10), out)
    assert chunks_of(out) == []  # cut at 1 s, but nothing follows it yet
    chunker.push(frame(10, 0), out)  # an empty frame is not audio
    assert chunks_of(out) == []
    chunker.push(frame(11, 0, end=True), out)
    assert [(c.span.index, c.span.end_sample, c.span.last) for c in chunks_of(out)] == [(0, RATE, True)]
    again, out = CallChunker(SMALL), []
    for seq in range(11):
        again.push(frame(seq, RATE * 2 // 10), out)
    assert [(c.span.index, c.span.last) for c in chunks_of(out)] == [(0, False)]  # released by seq 10's audio


def test_a_call_without_audio_still_ends_with_a_zero_length_last_chunk() -> None:
    chunker, out = CallChunker(SMALL), []
    chunker.push(frame(0, 0, end=True), out)
    ((chunk),) = chunks_of(out)
    assert (chunk.span.index, chunk.span.start_sample, chunk.span.end_sample, chunk.audio, chunk.span.last) == (
        0, 0, 0, b"", True)


def test_gaps_are_silence_and_counted_on_the_chunk() -> None:
    for encoding, quiet_byte in (("pcm_s16le", 0), ("mulaw", 0xFF)):
        frames = [AudioFrame("c", s, b"\x05" * 80, RATE, encoding, end=s == 9) for s in range(10) if s != 4]
        cfg = dataclasses.replace(SMALL, reorder_window_frames=2)
        tally = Tally()
        chunker, out = CallChunker(cfg, tally=tally), []
        for f in frames:
            chunker.push(f, out)
        (chunk,) = chunks_of(out)
        width = 2 if encoding == "pcm_s16le" else 1
        assert chunk.audio == b"\x05" * 320 + bytes([quiet_byte]) * 80 + b"\x05" * 400
        assert chunk.span.gaps_filled == 1 and tally.gaps == 1
        assert chunk.span.end_sample == 800 // width
    assert silence("mulaw", 2) == b"\xff\xff" and silence("pcm_s16le", 2) == b"\0\0"


def test_format_change_and_frames_after_end_are_dead_letters_and_the_call_goes_on() -> None:
    chunker, out = CallChunker(SMALL), []
    chunker.push(frame(0), out)
    chunker.push(AudioFrame("call-1", 1, b"\0" * 320, 16000, topic="t", partition=3, offset=77), out)
    chunker.push(frame(1, end=True), out)
    chunker.push(frame(1), out)  # a replay of the end: a duplicate, dropped
    chunker.push(frame(2), out)  # beyond the end: refused
    dead = [o for o in out if isinstance(o, DeadLetter)]
    assert len(dead) == 2
    assert "format changed" in dead[0].reason and "seq 1" in dead[0].reason and dead[0].stage == "chunker"
    assert ("dlq.source.offset", "77") in dead[0].context and ("dlq.source.partition", "3") in dead[0].context
    assert dead[0].key == b"call-1" and dead[0].value == b"\0" * 320
    assert "after the call ended at seq 1" in dead[1].reason
    assert [c.span.end_sample for c in chunks_of(out)] == [320]
    assert chunker.tally.duplicates == 1 and chunker.tally.dead == 2


def test_idle_flush_then_revival_continues_indices_and_audio() -> None:
    chunker, out = CallChunker(SMALL), []
    chunker.push(frame(0, fill=1), out)
    chunker.push(frame(1, fill=2), out)
    chunker.flush_idle(out)
    chunker.flush_idle(out)  # nothing new: nothing to flush
    assert [(c.span.index, c.span.last, c.span.end_sample) for c in chunks_of(out)] == [(0, True, 320)]
    chunker.push(frame(1), out)  # a replay: still a duplicate after the flush
    chunker.push(frame(2, fill=3), out)
    chunker.push(frame(3, fill=4, end=True), out)
    chunks = chunks_of(out)
    assert [(c.span.index, c.span.start_sample, c.span.overlap_samples, c.span.last) for c in chunks] == [
        (0, 0, 0, True), (1, 320, 0, True)]
    assert chunks[1].audio == b"\x03" * 320 + b"\x04" * 320


def test_snapshot_is_plain_data_and_resuming_changes_nothing() -> None:
    audio = os.urandom(RATE * 2 * 5)
    frames = frames_for("call-1", audio, [160, 77], (RATE, "pcm_s16le", 1))
    once = [strip_clock(c) for c in chunks_of(run_chunker(SMALL, frames))]
    resumed = [strip_clock(c) for c in chunks_of(run_chunker(SMALL, frames, restore_at=range(1, len(frames), 13)))]
    assert resumed == once
    chunker, out = CallChunker(SMALL), []
    for f in frames[:200]:
        chunker.push(f, out)
    snap = chunker.snapshot()
    held = sum(len(b) for b in snap.audio)
    # blocks of sealed frames, not one object per frame; the pickle is the audio plus small change
    assert all(isinstance(b, bytes) for b in snap.audio) and 1 < len(snap.audio) <= 200 // SEAL_PARTS + 1
    assert held > 0 and len(pickle.dumps(snap)) < held + 4096 + 20 * len(snap.markers.begins)
    again = chunker.snapshot()  # a second snapshot shares the blocks: nothing held is joined again
    assert all(a is b for a, b in zip(snap.audio, again.audio, strict=True))


def test_an_older_snapshot_with_one_audio_block_and_marker_tuples_still_resumes() -> None:
    audio = os.urandom(RATE * 2 * 3)
    frames = frames_for("call-1", audio, [160], (RATE, "pcm_s16le", 1))
    chunker, out = CallChunker(SMALL), []
    for f in frames[:40]:
        chunker.push(f, out)
    snap = chunker.snapshot()
    marks = snap.markers
    old_markers = tuple((b, None if o < 0 else (*marks.sources[o], off))
                        for b, o, off in zip(marks.begins, marks.origins, marks.offsets, strict=True))
    old = replace(snap, audio=b"".join(snap.audio), markers=old_markers)
    a, b = CallChunker(SMALL, snap), CallChunker(SMALL, old)
    out_a, out_b = list(out), list(out)
    for f in frames[40:]:
        a.push(f, out_a)
        b.push(f, out_b)
    assert [strip_clock(c) for c in chunks_of(out_a)] == [strip_clock(c) for c in chunks_of(out_b)]


# --- VAD ----------------------------------------------------------------------------------------------


def test_mulaw_table_matches_the_standard_library_decoder() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    assert MULAW_TO_PCM16.tobytes() == audioop.ulaw2lin(bytes(range(256)), 2)


def test_to_mono_mixes_stereo_and_leaves_the_input_alone() -> None:
    stereo = np.array([100, 300, -200, -400], dtype="<i2").tobytes()
    assert np.frombuffer(to_mono_pcm16(stereo, "pcm_s16le", 2), "<i2").tolist() == [200, -300]
    mono = b"\x01\x02\x03\x04"
    assert to_mono_pcm16(mono, "pcm_s16le", 1) is mono


@pytest.mark.parametrize("rate, encoding, channels",
                         [(8000, "mulaw", 1), (16000, "pcm_s16le", 2), (48000, "pcm_s16le", 1)])
def test_detector_tells_speech_from_silence_in_every_format(rate: int, encoding: str, channels: int) -> None:
    rng = np.random.default_rng(3)
    audio = encode_call(np.concatenate([speech_like(rate, rate, rng), quiet(rate, rng, 0)]), encoding, channels)
    flags = SpeechDetector(rate, encoding, channels, 2, 30).classify(audio)
    assert len(flags) == 66
    assert all(flags[:33]) and not any(flags[45:])


def test_vad_policy_cuts_in_the_pause_without_overlap_and_forces_with_overlap() -> None:
    rng = np.random.default_rng(5)
    cfg = ChunkConfig(policy="vad", vad_min_seconds=2, vad_max_seconds=3, vad_min_silence_seconds=0.3,
                      overlap_seconds=0.2)
    pcm = np.concatenate([speech_like(int(2.2 * RATE), RATE, rng), quiet(RATE // 2, rng, 0),
                          speech_like(5 * RATE, RATE, rng)])
    audio = pcm.astype("<i2").tobytes()
    chunks = chunks_of(run_chunker(cfg, frames_for("c", audio, [160], (RATE, "pcm_s16le", 1))))
    first, second = chunks[0].span, chunks[1].span
    assert int(2.2 * RATE) < first.end_sample < int(2.7 * RATE)  # inside the pause
    assert second.overlap_samples == 0 and second.start_sample == first.end_sample
    assert chunks[2].span.overlap_samples == int(0.2 * RATE)  # chunk 1 had no pause: forced at 3 s
    assert second.end_sample - second.start_sample == 3 * RATE
    assert b"".join(c.new_audio for c in chunks) == audio


def test_a_wild_seq_jump_is_refused_and_the_call_goes_on() -> None:
    cfg = dataclasses.replace(SMALL, max_gap_frames=100)
    chunker, out = CallChunker(cfg), []
    chunker.push(frame(0), out)
    chunker.push(frame(10**9, offset=8), out)
    chunker.push(frame(1, end=True), out)
    (dead,) = [o for o in out if isinstance(o, DeadLetter)]
    assert "seq 1000000000 is more than 100 frames ahead of the next expected seq 1" in dead.reason
    assert [(c.span.end_sample, c.span.last) for c in chunks_of(out)] == [(320, True)]
