"""The audio frame contract of `calls.audio`: key = call id, value = audio bytes, metadata in headers."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import ContractError

_DIGITS = re.compile(r"[0-9]+")

#: Bytes per sample per channel for each encoding the contract allows.
BYTES_PER_SAMPLE = {"pcm_s16le": 2, "mulaw": 1}
#: Sample rates the contract allows (the rates webrtcvad and telephony use).
SAMPLE_RATES = (8000, 16000, 32000, 48000)
CHANNELS = (1, 2)
DEFAULT_SAMPLE_RATE = 16000
DEFAULT_ENCODING = "pcm_s16le"

Headers = Sequence[tuple[str, bytes | str | None]]


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


def _headers_dict(headers: Iterable[tuple[str, bytes | str | None]] | None, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers or ():
        try:
            out[name] = _text(value)
        except UnicodeDecodeError as exc:
            raise ContractError(f"header {name!r} is not UTF-8", where) from exc
    return out


def _int_header(headers: dict[str, str], name: str, default: int | None, allowed: Sequence[int], where: str) -> int:
    raw = headers.get(name)
    if raw is None:
        if default is None:
            raise ContractError(f"header {name!r} is missing", where)
        return default
    if not _DIGITS.fullmatch(raw):
        raise ContractError(f"header {name!r} must be a non-negative decimal integer, got {raw[:40]!r}", where)
    value = int(raw)
    if allowed and value not in allowed:
        raise ContractError(f"header {name!r} must be one of {list(allowed)}, got {value}", where)
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


def decode_frame(
    key: bytes | str | None,
    value: bytes | None,
    headers: Headers | None,
    *,
    topic: str = "",
    partition: int = -1,
    offset: int = -1,
) -> AudioFrame:
    """Decode and validate one Kafka message of `calls.audio`; raise ContractError saying what and where."""
    where = f"{topic or 'frame'}[{partition}]@{offset}"
    if key is None or key in (b"", ""):
        raise ContractError("message has no key (the key must be the call id)", where)
    try:
        call_id = _text(key)
    except UnicodeDecodeError as exc:
        raise ContractError("key is not UTF-8 (the key must be the call id)", where) from exc
    where = f"{where} call {call_id!r}"
    h = _headers_dict(headers, where)
    seq = _int_header(h, "seq", None, (), where)
    sample_rate = _int_header(h, "sample_rate", DEFAULT_SAMPLE_RATE, SAMPLE_RATES, where)
    channels = _int_header(h, "channels", 1, CHANNELS, where)
    encoding = h.get("encoding", DEFAULT_ENCODING)
    if encoding not in BYTES_PER_SAMPLE:
        raise ContractError(f"header 'encoding' must be one of {list(BYTES_PER_SAMPLE)}, got {encoding[:40]!r}", where)
    audio = bytes(value or b"")
    width = BYTES_PER_SAMPLE[encoding] * channels
    if len(audio) % width:
        raise ContractError(
            f"frame seq {seq} has {len(audio)} bytes, not a whole number of {width}-byte samples "
            f"({encoding}, {channels} channel(s))",
            where,
        )
    return AudioFrame(
        call_id=call_id, seq=seq, audio=audio, sample_rate=sample_rate, encoding=encoding,
        channels=channels, end=_end_header(h, where), topic=topic, partition=partition, offset=offset,
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
