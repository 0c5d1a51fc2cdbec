"""The public API of bytewax-speechmatics: the flow's stages as Bytewax operators, its settings, the whole flow.

    import bytewax.speechmatics.flows as smf

    settings = smf.Settings.from_env()          # or Settings() and your own values
    frames = smf.audio_input("audio_in", flow, brokers=settings.kafka.brokers, topics=[settings.topics.audio],
                             config=settings.decoding)   # or decode_frames(...) on your own Kafka messages
    chunks = smf.chunk_calls("chunk", frames.oks, settings.chunking)
    results = smf.transcribe_chunks("transcribe", chunks.oks, settings.submission)
    events = smf.stitch_calls("stitch", results.oks, settings.stitching)
    # events.oks: (call_id, Produced) with .event the transcript event; every stage's .errs: DeadLetters

Every stage is an `@operator` taking `(step_id, up, config)` and returning `StageOut(oks, errs)`: `oks` keyed by
call id, `errs` the dead letters of what it refused. Nothing here reads the environment except
`Settings.from_env`; importing starts nothing.
"""

from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings
from bytewax.speechmatics.flows.chunker import chunk_calls
from bytewax.speechmatics.flows.chunking import ChunkConfig
from bytewax.speechmatics.flows.collector import CollectSettings, collect_transcripts
from bytewax.speechmatics.flows.decode import DecodeSettings, audio_input, decode_frames
from bytewax.speechmatics.flows.microbatch import build_flow
from bytewax.speechmatics.flows.realtime import RealtimeSettings, normalize_realtime
from bytewax.speechmatics.flows.segments import Produced
from bytewax.speechmatics.flows.settings import Settings
from bytewax.speechmatics.flows.stages import StageOut
from bytewax.speechmatics.flows.stitcher import stitch_calls
from bytewax.speechmatics.flows.stitching import StitchSettings
from bytewax.speechmatics.flows.submitter import transcribe_chunks
from bytewax.speechmatics.schemas.dead_letters import DeadLetter
from bytewax.speechmatics.schemas.errors import BytewaxSpeechmaticsError, SettingsError

__all__ = [
    "BytewaxSpeechmaticsError",
    "ChunkConfig",
    "CollectSettings",
    "DeadLetter",
    "DecodeSettings",
    "Produced",
    "RealtimeSettings",
    "Settings",
    "SettingsError",
    "StageOut",
    "StitchSettings",
    "SubmitSettings",
    "audio_input",
    "build_flow",
    "chunk_calls",
    "collect_transcripts",
    "decode_frames",
    "normalize_realtime",
    "stitch_calls",
    "transcribe_chunks",
]
