"""The public stages composed in one in-process dataflow (no Kafka): Kafka-like messages in, events and dead letters
out, as the README's compose example wires them."""

from __future__ import annotations

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings
from bytewax.speechmatics.flows import ChunkConfig, chunk_calls, decode_frames, stitch_calls, transcribe_chunks


def run_stages(messages: list[KafkaSourceMessage], settings: SubmitSettings, chunking: ChunkConfig,
               name: str = "stages") -> tuple[list[dict], list]:
    """decode -> chunk -> transcribe -> stitch, run to the end: (the events, the dead letters of every stage)."""
    flow = Dataflow(name)
    decoded = decode_frames("decode", op.input("in", flow, TestingSource(messages)))
    chunks = chunk_calls("chunk", decoded.oks, chunking)
    results = transcribe_chunks("transcribe", chunks.oks, settings)
    events = stitch_calls("stitch", results.oks)
    out: list[dict] = []
    letters: list = []
    op.output("events", op.map("event", events.oks, lambda kv: kv[1].event), TestingSink(out))
    op.output("dlq", op.merge("errs", decoded.errs, chunks.errs, results.errs, events.errs), TestingSink(letters))
    run_main(flow)
    return out, letters
