"""Stream a call's audio to `calls.audio` from your own code: start (config, metadata), send audio of any length, end.

The public home of the producer API (it lives in `connectors/kafka/producer.py`, beside the other Kafka clients);
see that module for what it guarantees.
"""

from bytewax.speechmatics.connectors.kafka.frame_cutter import DEFAULT_FRAME_SECONDS, AudioFormat
from bytewax.speechmatics.connectors.kafka.producer import (
    DEFAULT_MAX_IN_FLIGHT_BYTES,
    DEFAULT_TOPIC,
    AsyncCall,
    AsyncCallPublisher,
    Call,
    CallPublisher,
    DeliveryError,
    PublisherClosed,
)
from bytewax.speechmatics.schemas.errors import ContractError
from bytewax.speechmatics.schemas.frames import DEFAULT_MAX_FRAME_SECONDS

__all__ = [
    "DEFAULT_FRAME_SECONDS",
    "DEFAULT_MAX_FRAME_SECONDS",
    "DEFAULT_MAX_IN_FLIGHT_BYTES",
    "DEFAULT_TOPIC",
    "AsyncCall",
    "AsyncCallPublisher",
    "AudioFormat",
    "Call",
    "CallPublisher",
    "ContractError",
    "DeliveryError",
    "PublisherClosed",
]
