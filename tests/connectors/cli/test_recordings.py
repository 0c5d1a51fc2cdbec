"""The benchmark's recordings: references cleaned of corpus markup, long calls built deterministically."""

from __future__ import annotations

import numpy as np

from bytewax.speechmatics.connectors.cli.recordings import GAP_SECONDS, RATE, Piece, build_mix, clean_reference


def test_corpus_markup_is_not_part_of_the_reference() -> None:
    assert clean_reference("<s> he was not an ill disposed young man </s> (sense-0880)") == \
        "he was not an ill disposed young man"
    assert clean_reference("i'm also saying [adif] bunch um <VOCNOISE> yeah") == "i'm also saying bunch um yeah"


def test_a_mix_is_every_piece_once_per_pass_in_a_seeded_order_with_its_words_in_step() -> None:
    pieces = [Piece(f"p{n}", np.full(RATE // 4 * (n + 1), n + 1, dtype=np.int16), f"word{n}") for n in range(5)]
    audio, text = build_mix(pieces, (1, 2))
    again = build_mix(pieces, (1, 2))
    assert np.array_equal(audio, again[0]) and text == again[1]
    words = text.split()
    assert sorted(words[:5]) == sorted(words[5:]) == [p.text for p in pieces] and words[:5] != words[5:]
    gap = int(GAP_SECONDS * RATE)
    assert len(audio) == 2 * (5 * gap + sum(len(p.audio) for p in pieces))
    # the audio follows the reference: after each gap comes the piece the reference names next
    at, order = 0, []
    for _ in range(10):
        at += gap
        value = int(audio[at])
        order.append(f"word{value - 1}")
        at += RATE // 4 * value
    assert order == words
