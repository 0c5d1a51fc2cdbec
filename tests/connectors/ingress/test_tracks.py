"""The track mixer: packets placed by position, whatever order they arrive in within the window; gaps silent."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bytewax.speechmatics.connectors.ingress.tracks import TimestampJump, TrackMixer

P = 160  # 20 ms at 8 kHz


def packets(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, P, dtype=np.uint8).tobytes() for _ in range(n)]


def stereo(left: bytes, right: bytes) -> bytes:
    out = np.empty((len(left), 2), dtype=np.uint8)
    out[:, 0], out[:, 1] = np.frombuffer(left, np.uint8), np.frombuffer(right, np.uint8)
    return out.tobytes()


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 60), seed=st.integers(0, 1000), data=st.data(), min_release=st.sampled_from([0, 800]))
def test_packets_out_of_order_within_the_window_give_the_in_order_call(n: int, seed: int, data: st.DataObject,
                                                                      min_release: int) -> None:
    caller, agent = packets(n, seed), packets(n, seed + 1)
    arrivals = [(t, i) for i in range(n) for t in ("inbound", "outbound")]
    # each message may arrive up to 20 places late (200 ms of a two-track stream): well inside a 1 s window
    keys = [pos + data.draw(st.integers(0, 20)) for pos in range(len(arrivals))]
    shuffled = [a for _, a in sorted(zip(keys, arrivals, strict=True), key=lambda pair: pair[0])]
    mixer = TrackMixer(("inbound", "outbound"), min_release=min_release)
    out = b"".join(mixer.add(t, i * P, (caller if t == "inbound" else agent)[i]) for t, i in shuffled)
    out += mixer.finish()
    assert out == stereo(b"".join(caller), b"".join(agent))
    assert mixer.late_samples == 0 and mixer.buffered == 0


def test_a_silent_track_does_not_hold_the_call_back_and_its_gap_is_silence() -> None:
    caller = packets(100, 1)  # 2 s; the agent says nothing at all
    mixer = TrackMixer(("inbound", "outbound"), window=8000)
    released = [mixer.add("inbound", i * P, p) for i, p in enumerate(caller)]
    assert sum(map(len, released)) == 2 * (100 * P - 8000)  # all but the last window's worth is out already
    out = b"".join(released) + mixer.finish()
    assert out == stereo(b"".join(caller), b"\xff" * 100 * P)


def test_a_hole_waits_for_its_packet_within_the_window_then_becomes_silence() -> None:
    mixer = TrackMixer(("inbound",), window=4 * P)
    assert mixer.add("inbound", 0, b"\x01" * P) == b"\x01" * P  # one track, no hole: released at once
    assert mixer.add("inbound", 3 * P, b"\x04" * P) == b""  # a hole at 1-2: held, its packets may still come
    assert mixer.add("inbound", P, b"\x02" * P) == b"\x02" * P  # the hole shrinks; the rest waits for packet 2
    # packet 2 never comes: once the track is a window past it, the hole goes out as silence
    assert mixer.add("inbound", 7 * P, b"\x08" * P) == b"\xff" * P + b"\x04" * P
    assert mixer.add("inbound", 2 * P, b"\x03" * P) == b""  # too late now: dropped, counted
    assert mixer.late_samples == P
    assert mixer.finish() == b"\xff" * 3 * P + b"\x08" * P


def test_a_jump_beyond_max_gap_is_refused_and_unknown_tracks_raise() -> None:
    mixer = TrackMixer(("inbound", "outbound"), window=8000, max_gap=8000 * 60)
    with pytest.raises(TimestampJump):
        mixer.add("inbound", 8000 * 62, b"\x00" * P)
    with pytest.raises(ValueError):
        mixer.add("sideways", 0, b"\x00" * P)
