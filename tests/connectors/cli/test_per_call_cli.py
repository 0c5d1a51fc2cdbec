"""The command line's side of per-call settings: `publish --config/--metadata` sends a start message before each
call's frames (and refuses a bad one as a user error), `tail` shows a call's start with its language and metadata."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import orjson
import pytest
import soundfile as sf

from bytewax.speechmatics.connectors.cli.publish import start_message
from bytewax.speechmatics.connectors.cli.tail import render
from bytewax.speechmatics.flows.segments import call_started, realtime_completed, utterance_end
from bytewax.speechmatics.schemas.call_start import CallConfig, CallSettings, decode_start, message_kind
from bytewax.speechmatics.schemas.chunks import CallStarted
from bytewax.speechmatics.schemas.errors import ContractError
from bytewax.speechmatics.schemas.frames import decode_frame

CLI = [sys.executable, "-m", "bytewax.speechmatics.connectors.cli"]


def test_the_start_message_of_the_options_is_checked_before_anything_is_sent() -> None:
    assert start_message(None, None) is None
    value = start_message('{"language": "de", "channel_labels": ["agent", "caller"]}', '{"tenant": "acme"}')
    assert orjson.loads(value) == {"config": {"language": "de", "channel_labels": ["agent", "caller"]},
                                   "metadata": {"tenant": "acme"}}
    assert orjson.loads(start_message(None, '{"crm": 1}')) == {"metadata": {"crm": 1}}
    for config, metadata, says in [('{"langauge": "de"}', None, "field config: unknown field 'langauge' (allowed: "),
                                   ("{nope", None, "--config is not JSON"),
                                   (None, "[1]", "--metadata must be a JSON object"),
                                   (None, '{"x": "' + "y" * 9000 + '"}', "field metadata")]:
        with pytest.raises(ContractError) as info:
            start_message(config, metadata)
        assert says in str(info.value)


def test_a_bad_config_option_is_one_line_and_exit_2(tmp_path: Path) -> None:
    wav = tmp_path / "call.wav"
    sf.write(str(wav), np.zeros(1600, dtype=np.int16), 16000)
    done = subprocess.run([*CLI, "publish", str(wav), "--config", '{"diarization": "both"}'], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("publish: ") and "config.diarization" in line


@pytest.mark.kafka
def test_publish_sends_each_calls_start_message_before_its_frames(kafka_bootstrap: str, make_topic,
                                                                   tmp_path: Path) -> None:  # noqa: ANN001
    from confluent_kafka import Consumer

    topic = make_topic("audio", 2)
    files = []
    for i in range(2):
        files.append(tmp_path / f"c{i}.wav")
        sf.write(str(files[-1]), np.random.default_rng(i).integers(-900, 900, (8000, 2)).astype(np.int16), 16000)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    subprocess.run([*CLI, "publish", *map(str, files), "--topic", topic, "--speed", "max", "--call-id", "pc",
                    "--config", '{"language": "fr", "diarization": "channel"}', "--metadata", '{"queue": "q1"}'],
                   env=env, capture_output=True, text=True, timeout=120, check=True)
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": uuid.uuid4().hex,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    seen: dict[str, list[str]] = {}
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and sum(k.count("end") for k in seen.values()) < 2:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            call = msg.key().decode()
            if message_kind(msg.headers()) == "start":
                start = decode_start(msg.key(), msg.value(), msg.headers())
                assert start.settings.config == CallConfig(language="fr", diarization="channel")
                assert start.settings.metadata == {"queue": "q1"}
                seen.setdefault(call, []).append("start")
            else:
                frame = decode_frame(msg.key(), msg.value(), msg.headers())
                seen.setdefault(call, []).append("end" if frame.end else "frame")
    finally:
        consumer.close()
    assert sorted(seen) == ["pc-0", "pc-1"]
    for kinds in seen.values():
        assert kinds[0] == "start" and kinds.count("start") == 1 and kinds[-1] == "end"


def test_tail_shows_a_calls_start_with_its_language_settings_and_metadata() -> None:
    settings = CallSettings(CallConfig(language="de", diarization="channel", channel_labels=("agent", "caller")),
                            b'{"tenant":"acme","agent":"a-17"}')
    text = render(call_started(CallStarted("c-1", settings, ("start message refused (x)",))))
    lines = text.splitlines()
    assert lines[0] == "[c-1] 00:00.0-00:00.0 call started (batch): language de, diarization channel (agent, caller)"
    assert lines[1] == '    metadata: {"tenant":"acme","agent":"a-17"}'
    assert lines[2] == "    warning: start message refused (x)"
    assert "utterance end (agent)" in render(utterance_end("c", "s/u/0", start=1.0, end=1.2, language="en",
                                                           channel="agent"))
    done = render(realtime_completed("c", "s", words=3, audio_seconds=2.0, speakers=[], language="en", error="boom"))
    assert "real-time session completed: 3 words" in done and "boom" in done
