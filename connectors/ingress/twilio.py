"""`/twilio`: Twilio Media Streams (and the close variants Telnyx, SignalWire, Exotel, Fonoster speak).

The protocol, as Twilio documents it (text frames only, server never needs to answer):
`connected{protocol, version}`; `start{sequenceNumber, streamSid, start{accountSid, streamSid, callSid, tracks,
customParameters, mediaFormat{encoding: audio/x-mulaw, sampleRate: 8000, channels: 1}}}`; `media{media{track,
chunk, timestamp, payload}}` (base64 mu-law, 20 ms, `timestamp` in ms since the stream started); `dtmf`; `mark`;
`stop{stop{accountSid, callSid}}`.

What becomes of it: the call id is `customParameters.call_id` or else `callSid` (Telnyx: `call_control_id`);
`customParameters` (minus `config` and `call_id`) are the call's metadata, `customParameters.config` (a JSON string)
its per-call config. Two tracks make one 2-channel call, inbound (the caller) on channel 1 and outbound (the agent)
on channel 2, labelled for channel diarization; a single track makes a 1-channel call. Tracks are aligned by
`timestamp` (tracks.TrackMixer): gaps become silence, packets out of order are reordered within the window.
"""

from __future__ import annotations

import binascii
import contextlib
import time
from typing import Any

import orjson

from bytewax.speechmatics.connectors.ingress.session import Session, SessionRefused
from bytewax.speechmatics.connectors.ingress.tracks import TimestampJump, TrackMixer
from bytewax.speechmatics.connectors.metrics import INGRESS_LATE_SECONDS

RATE = 8000
#: Inbound first: the caller is channel 1, the agent channel 2.
TRACK_ORDER = ("inbound", "outbound")
MULAW_NAMES = ("audio/x-mulaw", "pcmu", "mulaw", "audio/pcmu")
#: Close code for input the ingress cannot use (RFC 6455 1008, "policy violation"); the reason says which.
CLOSE_REFUSED = 1008
_ABSENT = object()


def _track(name: Any) -> str:
    """'inbound_track' (as dtmf/media use it in places) and 'inbound' are one track."""
    return str(name).removesuffix("_track")


def _int(value: Any, what: str) -> int:
    """Twilio sends numbers as strings ("chunk": "3"); either is fine, anything else is refused."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise SessionRefused("bad_media", f"{what} is not an integer")
    try:
        number = int(value)
    except ValueError:
        raise SessionRefused("bad_media", f"{what} is not an integer") from None
    if number < 0:
        raise SessionRefused("bad_media", f"{what} is negative")
    return number


class TwilioSession(Session):
    protocol = "twilio"
    known_types = frozenset(("connected", "start", "media", "dtmf", "mark", "stop"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mixer: TrackMixer | None = None
        self._tracks: dict[str, str] = {}  # the tracks announced, by the name media messages use
        self._held_since: float | None = None  # when the oldest audio the mixer holds was read

    async def on_text(self, doc: dict[str, Any]) -> bool:
        event = doc.get("event")
        if event == "media" and self.call is not None:  # 100 a second per stream: the short way
            self.count(event)
            ready = self._media(doc.get("media"))
            if ready:
                since, self._held_since = self._held_since, (time.monotonic() if self.mixer.buffered else None)
                await self.call.send(ready, received_at=since)
            return False
        if not isinstance(event, str) or event not in self.known_types:
            raise SessionRefused("unknown_event", f"event {str(event)[:40]!r} is not a Media Streams event")
        self.count(event)
        if event == "start":
            if self.started:
                raise SessionRefused("repeated_start", "a second start in one stream")
            await self._start(doc.get("start"), doc.get("streamSid") or doc.get("stream_id"))
        elif event in ("media", "stop") and not self.started:
            raise SessionRefused("media_before_start", f"{event} before start")
        elif event == "stop":
            return True
        return False  # connected, dtmf, mark: nothing to transcribe

    async def _start(self, start: Any, stream_sid: Any) -> None:
        if not isinstance(start, dict):
            raise SessionRefused("bad_start", "start has no `start` object")
        custom = start.get("customParameters") or start.get("custom_parameters") or {}
        if not isinstance(custom, dict):
            raise SessionRefused("bad_start", "customParameters is not an object")
        call_id = custom.get("call_id") or start.get("callSid") or start.get("call_control_id")
        if not isinstance(call_id, str) or not call_id:
            raise SessionRefused("bad_start", "start has no callSid (nor customParameters.call_id)")
        self.session_id = str(stream_sid or start.get("streamSid") or call_id)[:64]
        fmt = start.get("mediaFormat") or start.get("media_format") or {}
        encoding = str(fmt.get("encoding", "audio/x-mulaw")).lower()
        rate = fmt.get("sampleRate", fmt.get("sample_rate", RATE))
        if encoding not in MULAW_NAMES or str(rate) != str(RATE):
            raise SessionRefused("bad_media_format", f"media format {encoding[:40]!r} at {str(rate)[:10]} Hz; "
                                 "the ingress takes mu-law at 8000 Hz")
        declared = start.get("tracks")
        if declared is None:  # Telnyx does not list them: take both
            declared = list(TRACK_ORDER)
        if not isinstance(declared, list) or not declared:
            raise SessionRefused("bad_start", "tracks is not a non-empty list")
        tracks = [t for t in TRACK_ORDER if t in {_track(d) for d in declared}]
        if len(tracks) != len(declared):
            raise SessionRefused("bad_start", f"tracks {[str(t)[:20] for t in declared]} are not inbound/outbound")
        config: Any = custom.get("config")
        if isinstance(config, str):
            with contextlib.suppress(orjson.JSONDecodeError):  # else refused (and counted) when the call starts
                config = orjson.loads(config)
        metadata = {k: v for k, v in custom.items() if k not in ("config", "call_id")} or None
        base = None
        if len(tracks) == 2:
            base = {"diarization": "channel", "channel_labels": list(self.settings.channel_labels)}
        window = int(self.settings.reorder_window * RATE)
        self._tracks = {name: name for name in tracks}
        self.mixer = TrackMixer(tracks, window=window, max_gap=int(self.settings.max_gap * RATE),
                                min_release=int(self.settings.publisher.frame_seconds * RATE))
        await self.start_call(call_id, config, metadata, len(tracks), base)

    def _media(self, media: Any) -> bytes:
        """Place one media message's audio; the interleaved audio it releases (often none: the mixer holds audio
        for a whole frame)."""
        assert self.mixer is not None
        if not isinstance(media, dict):
            raise SessionRefused("bad_media", "media has no `media` object")
        track = media.get("track", "inbound")
        if track not in self._tracks:  # the usual names take one dict look-up
            track = _track(track)
            if track not in self.mixer.tracks:
                raise SessionRefused("unknown_track", f"track {track[:20]!r} was not announced in start")
        payload = media.get("payload")
        if not isinstance(payload, str):
            raise SessionRefused("bad_base64", "media payload is not a string")
        try:
            audio = binascii.a2b_base64(payload, strict_mode=True)  # base64.b64decode(validate=True), less overhead
        except (binascii.Error, ValueError):
            raise SessionRefused("bad_base64", "media payload is not base64") from None
        stamp = media.get("timestamp", _ABSENT)
        if stamp.__class__ is str and stamp.isdigit() and stamp.isascii():  # as Twilio sends it: "1234"
            position = int(stamp) * (RATE // 1000)
        elif stamp is not _ABSENT:
            position = _int(stamp, "media.timestamp") * RATE // 1000
        else:
            position = (max(1, _int(media.get("chunk", 1), "media.chunk")) - 1) * 160
        late = self.mixer.late_samples
        if self._held_since is None:
            self._held_since = time.monotonic()
        try:
            ready = self.mixer.add(track, position, audio)
        except TimestampJump as exc:
            raise SessionRefused("timestamp_jump", str(exc)) from None
        if self.mixer.late_samples != late:
            INGRESS_LATE_SECONDS.labels(self.protocol).inc((self.mixer.late_samples - late) / RATE)
        return ready

    async def flush(self) -> None:
        if self.mixer is not None and self.call is not None:
            rest = self.mixer.finish()
            if rest:
                await self.call.send(rest)

    async def refuse(self, refused: SessionRefused) -> None:
        await self.ws.close(code=CLOSE_REFUSED, message=f"{refused.reason}: {refused.detail}"[:120].encode())
