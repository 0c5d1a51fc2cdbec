"""The audio frame contract of `calls.audio`: key = call id, value = audio bytes, metadata in headers."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bytewax.speechmatics.schemas.call_start import FRAME, KIND_HEADER, START
from bytewax.speechmatics.schemas.errors import ContractError, in_words
from bytewax.speechmatics.schemas.snapshots import evolvable

#: At most 18 digits: every seq fits a signed 64-bit integer (and Python never parses a megabyte of digits).
_DIGITS = re.compile(r"[0-9]{1,18}")

#: Bytes per sample per channel for each encoding the contract allows.
BYTES_PER_SAMPLE = {"pcm_s16le": 2, "mulaw": 1}
#: Sample rates the contract allows (the rates webrtcvad and telephony use).
SAMPLE_RATES = (8000, 16000, 32000, 48000)
CHANNELS = (1, 2)
DEFAULT_SAMPLE_RATE = 16000
DEFAULT_ENCODING = "pcm_s16le"
#: The most audio one frame may carry (BWSM_MAX_FRAME_SECONDS). Platforms send 20 ms to 1 s; a bigger value is
#: a producer bug (a whole file in one message, a wrong header) and would otherwise be billed as minutes of audio.
DEFAULT_MAX_FRAME_SECONDS = 2.0
#: Call ids are quoted in error messages up to this many characters (a key may be a megabyte long).
_QUOTED_ID_CHARS = 120

Headers = Sequence[tuple[str, bytes | str | None]]


@evolvable
@dataclass(frozen=True, slots=True)
class AudioFrame:
    """One decoded frame of one call, with where it came from (for dead-lettering and replay)."""

    call_id: str
    seq: int
    audio: bytes
    sample_rate: int = DEFAULT_SAMPLE_RATE
    encoding: str = DEFAULT_ENCODING
    channels: int = 1
    end: bool = False
    topic: str = ""
    partition: int = -1
    offset: int = -1

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample across all channels."""
        return BYTES_PER_SAMPLE[self.encoding] * self.channels

    @property
    def samples(self) -> int:
        return len(self.audio) // self.frame_bytes

    @property
    def audio_format(self) -> tuple[int, str, int]:
        return (self.sample_rate, self.encoding, self.channels)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value


def _quoted(text: str) -> str:
    """`text` quoted for an error message, cut at _QUOTED_ID_CHARS (a key or header name may be huge)."""
    return repr(text[:_QUOTED_ID_CHARS]) + ("..." if len(text) > _QUOTED_ID_CHARS else "")


def _headers_dict(headers: Iterable[tuple[str, bytes | str | None]] | None, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers or ():
        try:
            out[name] = _text(value)
        except UnicodeDecodeError as exc:
            raise ContractError(f"header {_quoted(str(name))} is not UTF-8", where) from exc
    return out


def _int_header(headers: dict[str, str], name: str, default: int | None, allowed: Sequence[int], where: str) -> int:
    raw = headers.get(name)
    if raw is None:
        if default is None:
            raise ContractError(f"header {name!r} is missing", where)
        return default
    if not _DIGITS.fullmatch(raw):
        raise ContractError(
            f"header {name!r} must be a non-negative decimal integer of at most 18 digits, got {raw[:40]!r}", where)
    value = int(raw)
    if allowed and value not in allowed:
        raise ContractError(f"header {name!r} must be {in_words(allowed)}, got {value}", where)
    return value


def _end_header(headers: dict[str, str], where: str) -> bool:
    if "end" not in headers:
        return False
    raw = headers["end"]
    if raw in ("", "1", "true"):
        return True
    if raw in ("0", "false"):
        return False
    raise ContractError(f"header 'end' must be '1', '0' or empty, got {raw[:40]!r}", where)


#: The header values a producer normally sends, pre-parsed for the fast path of decode_frame.
_FAST_RATES = {str(r).encode(): r for r in SAMPLE_RATES}
_FAST_CHANNELS = {str(c).encode(): c for c in CHANNELS}
_FAST_ENCODINGS = {e.encode(): e for e in BYTES_PER_SAMPLE}
_FAST_END = {b"": True, b"1": True, b"true": True, b"0": False, b"false": False}
_FAST_NAMES = frozenset(("seq", "sample_rate", "channels", "encoding", "end", KIND_HEADER))
_FAST_FRAME_KIND = FRAME.encode()


def max_frame_bytes(max_seconds: float, sample_rate: int, encoding: str, channels: int) -> int:
    """The largest frame value allowed for this format: whole samples worth at most `max_seconds` of audio."""
    return int(max_seconds * sample_rate) * BYTES_PER_SAMPLE[encoding] * channels


def frame_samples(frame_ms: float, sample_rate: int, max_seconds: float = DEFAULT_MAX_FRAME_SECONDS) -> int:
    """Samples per channel in a frame of `frame_ms` milliseconds at `sample_rate` (at least one): the framing every
    producer here uses (`publish`, the producer API's FrameCutter) so that the flow accepts every frame.

    Raises:
        ContractError: `frame_ms` is not positive, or a frame that long carries more than `max_seconds` of audio
            (the flow would dead-letter every frame; BWSM_MAX_FRAME_SECONDS).
    """
    if not frame_ms > 0:
        raise ContractError(f"a frame must last more than 0 ms, got {frame_ms:g} ms")
    # whole milliseconds give exactly rate * ms // 1000; the 1e-6 absorbs float noise of a length given in seconds
    # (1.001 s is 1000.9999999999999 ms, still 8008 samples at 8 kHz)
    samples = max(1, int(sample_rate * frame_ms / 1000 + 1e-6))
    if samples > int(max_seconds * sample_rate):
        raise ContractError(f"frames of {frame_ms:g} ms are longer than the flow accepts: at most "
                            f"{max_seconds * 1000:g} ms (BWSM_MAX_FRAME_SECONDS={max_seconds:g}); platforms send "
                            f"20 to 1000 ms")
    return samples


def decode_usual(key: object, value: object, headers: Headers | None, topic: str, partition: int,
                  offset: int, max_seconds: float) -> AudioFrame | None:
    """The frame when the message is the usual well-formed one (bytes everywhere, known headers, valid values);
    None for anything else, which the full path then decodes or refuses with its precise error.

    Why: decoding runs once per frame (hundreds of thousands per second per process); this avoids building a
    header dict of decoded strings and a regex match per integer for the messages that need none of it.
    """
    if key.__class__ is not bytes or not key or value.__class__ is not bytes or headers is None:
        return None
    h = dict(headers)  # the last of repeated names wins, as in the full path
    if not h.keys() <= _FAST_NAMES:
        return None
    kind = h.get(KIND_HEADER)
    if kind is not None and kind != _FAST_FRAME_KIND:
        return None
    raw_seq = h.get("seq")
    # bytes.isdigit: ASCII digits only, like the full path's [0-9]+; the tables below hold bytes keys only,
    # so a str or None value misses them and goes to the full path
    if raw_seq.__class__ is not bytes or not raw_seq.isdigit() or len(raw_seq) > 18:
        return None
    seq = int(raw_seq)
    rate = _FAST_RATES.get(h.get("sample_rate", b"16000"), 0)
    channels = _FAST_CHANNELS.get(h.get("channels", b"1"), 0)
    encoding = _FAST_ENCODINGS.get(h.get("encoding", b"pcm_s16le"), "")
    end = _FAST_END.get(h.get("end", b"0"))
    if not rate or not channels or not encoding or end is None:
        return None
    width = BYTES_PER_SAMPLE[encoding] * channels
    if len(value) % width or len(value) > max_seconds * rate * width or (not value and not end):
        return None
    try:
        call_id = key.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return AudioFrame(call_id, seq, value, rate, encoding, channels, end, topic, partition, offset)


def decode_frame(
    key: bytes | str | None,
    value: bytes | None,
    headers: Headers | None,
    *,
    topic: str = "",
    partition: int = -1,
    offset: int = -1,
    max_frame_seconds: float = DEFAULT_MAX_FRAME_SECONDS,
) -> AudioFrame:
    """Decode and validate one Kafka message of `calls.audio`; raise ContractError saying what and where.

    Refused besides malformed headers: a null value (a tombstone is not a frame), an empty value that is not the
    call's `end` frame, a value longer than `max_frame_seconds` of audio, and a start message (header
    `kind: start`, see schemas.call_start: the decode stage reads those with `decode_start`) or any other `kind`.
    """
    frame = decode_usual(key, value, headers, topic, partition, offset, max_frame_seconds)
    if frame is not None:
        return frame
    where = f"{topic or 'frame'}[{partition}]@{offset}"
    if key is None or key in (b"", ""):
        raise ContractError("message has no key (the key must be the call id)", where)
    try:
        call_id = _text(key)
    except UnicodeDecodeError as exc:
        raise ContractError("key is not UTF-8 (the key must be the call id)", where) from exc
    where = f"{where} call {_quoted(call_id)}"
    h = _headers_dict(headers, where)
    kind = h.get(KIND_HEADER, FRAME)
    if kind == START:
        raise ContractError("a start message (header 'kind' is 'start') is not a frame", where)
    if kind != FRAME:
        raise ContractError(f"header 'kind' must be 'start' (a start message) or 'frame' (or absent: a frame), "
                            f"got {kind[:40]!r}", where)
    seq = _int_header(h, "seq", None, (), where)
    sample_rate = _int_header(h, "sample_rate", DEFAULT_SAMPLE_RATE, SAMPLE_RATES, where)
    channels = _int_header(h, "channels", 1, CHANNELS, where)
    encoding = h.get("encoding", DEFAULT_ENCODING)
    if encoding not in BYTES_PER_SAMPLE:
        raise ContractError(f"header 'encoding' must be {in_words(BYTES_PER_SAMPLE)}, got {encoding[:40]!r}", where)
    end = _end_header(h, where)
    if value is None:
        raise ContractError(f"frame seq {seq} has a null value (a tombstone is not a frame)", where)
    audio = bytes(value)
    if not audio and not end:
        raise ContractError(f"frame seq {seq} is empty but not the call's end frame (only `end` may be empty)", where)
    width = BYTES_PER_SAMPLE[encoding] * channels
    if len(audio) % width:
        raise ContractError(
            f"frame seq {seq} has {len(audio)} bytes, not a whole number of {width}-byte samples "
            f"({encoding}, {channels} channel(s))",
            where,
        )
    limit = max_frame_bytes(max_frame_seconds, sample_rate, encoding, channels)
    if len(audio) > limit:
        raise ContractError(
            f"frame seq {seq} has {len(audio)} bytes ({len(audio) / (width * sample_rate):.3f} s of audio), more than "
            f"the {max_frame_seconds:g} s limit ({limit} bytes at {sample_rate} Hz {encoding}, {channels} "
            f"channel(s); BWSM_MAX_FRAME_SECONDS)",
            where,
        )
    return AudioFrame(
        call_id=call_id, seq=seq, audio=audio, sample_rate=sample_rate, encoding=encoding,
        channels=channels, end=end, topic=topic, partition=partition, offset=offset,
    )


def encode_frame(frame: AudioFrame) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """The Kafka key, value and headers of a frame, as a producer sends them."""
    headers = [
        ("seq", str(frame.seq).encode()),
        ("sample_rate", str(frame.sample_rate).encode()),
        ("encoding", frame.encoding.encode()),
        ("channels", str(frame.channels).encode()),
    ]
    if frame.end:
        headers.append(("end", b"1"))
    return frame.call_id.encode("utf-8"), frame.audio, headers
