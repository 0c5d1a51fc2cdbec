"""The ingress as a process, driven by a real websocket client (aiohttp) with sessions built from the documented
message formats, into the real broker: what each session becomes on the audio topic, how bad input closes one
session with a reason (counted) while others go on, and who may connect."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import aiohttp
import numpy as np
import orjson
import pytest
from ingress_harness import (
    IngressRun,
    audio_of,
    audiohook_signed,
    ended,
    mulaw_noise,
    read_calls,
    start_ingress,
)

from bytewax.speechmatics.connectors.ingress.replay import audiohook_session, play, text_line, twilio_session

pytestmark = pytest.mark.kafka


def stereo(left: bytes, right: bytes) -> bytes:
    out = np.empty((len(left), 2), dtype=np.uint8)
    out[:, 0], out[:, 1] = np.frombuffer(left, np.uint8), np.frombuffer(right, np.uint8)
    return out.tobytes()


@pytest.fixture(scope="module")
def topic(kafka_bootstrap: str):  # noqa: ANN201
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    name = f"ingress-{np.random.default_rng().integers(1 << 40):x}"
    for future in admin.create_topics([NewTopic(name, 2, 1)]).values():
        future.result(timeout=30)
    yield name
    admin.delete_topics([name])


@pytest.fixture(scope="module")
def ingress(kafka_bootstrap: str, topic: str, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    run = start_ingress(kafka_bootstrap, topic, tmp_path_factory.mktemp("ingress") / "ingress.log",
                        _ARGS="--start-timeout 1.5")
    yield run
    run.stop()


def test_a_twilio_session_with_both_tracks_becomes_one_labelled_two_channel_call(
        kafka_bootstrap: str, topic: str, ingress: IngressRun) -> None:
    caller, agent = mulaw_noise(3.0, 1), mulaw_noise(3.0, 2)
    custom = {"tenant": "acme", "agent_id": "a-7", "config": orjson.dumps({"language": "de"}).decode()}
    lines = twilio_session("CA-twilio-1", caller, agent, custom=custom, swap_every=7)  # some media out of order
    played = asyncio.run(play(ingress.url("/twilio"), lines, speed=0))
    assert played.close_code == 1000
    call = read_calls(kafka_bootstrap, topic, ended(["CA-twilio-1"]))["CA-twilio-1"]
    start, *frames = call
    assert start.settings.metadata == {"tenant": "acme", "agent_id": "a-7"}
    config = start.settings.config
    assert (config.language, config.diarization, config.channel_labels) == ("de", "channel", ("caller", "agent"))
    assert all(f.sample_rate == 8000 and f.encoding == "mulaw" and f.channels == 2 for f in frames)
    assert [f.seq for f in frames] == list(range(len(frames))) and frames[-1].end
    assert audio_of(frames) == stereo(caller, agent)  # aligned by timestamp, reordered, nothing lost
    assert ingress.metric("bwsm_ingress_sessions_ended_total", protocol="twilio", reason="completed") >= 1
    # sessions add their message counts in batches of 100: the last few (here the stop) once the session is over
    events = [orjson.loads(line["text"])["event"] for line in lines]
    assert events.count("media") == 300 and events[-1] == "stop"
    assert ingress.metric("bwsm_ingress_messages_total", protocol="twilio", type="media") >= 300
    assert ingress.metric("bwsm_ingress_messages_total", protocol="twilio", type="stop") >= 1


def test_an_audiohook_session_is_negotiated_and_acknowledged_as_the_protocol_requires(
        kafka_bootstrap: str, topic: str, ingress: IngressRun) -> None:
    external, internal = mulaw_noise(3.0, 3), mulaw_noise(3.0, 4)
    session = "7f3e1b9c-0000-4000-8000-000000000001"
    lines = audiohook_session(session, external, internal, custom={"tenant": "globex"}, ping_every=5)
    played = asyncio.run(play(ingress.url("/audiohook"), lines, speed=0))
    kinds = [m["type"] for m in played.received]
    assert kinds == ["opened", "pong", "pong", "pong", "closed"]
    assert [m["seq"] for m in played.received] == [1, 2, 3, 4, 5]  # the server's own seq
    assert [m["clientseq"] for m in played.received] == [1, 2, 3, 4, 5]  # the last client message read
    assert all(m["version"] == "2" and m["id"] == session for m in played.received)
    opened = played.received[0]["parameters"]
    assert opened["media"] == [{"type": "audio", "format": "PCMU", "channels": ["external", "internal"],
                                "rate": 8000}] and opened["startPaused"] is False
    start, *frames = read_calls(kafka_bootstrap, topic, ended([session]))[session]
    assert start.settings.metadata["tenant"] == "globex"
    assert start.settings.metadata["participant"]["ani"] == "+15550100"
    assert start.settings.config.channel_labels == ("caller", "agent")
    assert audio_of(frames) == stereo(external, internal) and frames[-1].end


def twilio_start(call_sid: str) -> dict:
    return {"event": "start", "sequenceNumber": "1", "streamSid": "MZ1", "start": {
        "streamSid": "MZ1", "callSid": call_sid, "tracks": ["inbound"], "customParameters": {},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}


def media(payload: str, chunk: int = 1) -> dict:
    return {"event": "media", "media": {"track": "inbound", "chunk": str(chunk), "timestamp": str((chunk - 1) * 20),
                                        "payload": payload}}


GOOD = base64.b64encode(b"\x10" * 160).decode()
TWILIO_BAD = {
    "bad_json": [{"t": 0, "text": '{"event": "start", '}],
    "bad_base64": [text_line(0, twilio_start("CA-bad-b64")), text_line(0, media(GOOD)),
                   text_line(0, media("%%% not base64 %%%", 2))],
    "unknown_event": [text_line(0, {"event": "teleport"})],
    "media_before_start": [text_line(0, media(GOOD))],
    "start_timeout": [text_line(0, {"event": "connected", "protocol": "Call", "version": "1.0.0"})],
}


@pytest.mark.parametrize("reason", list(TWILIO_BAD))
def test_bad_twilio_input_closes_that_session_with_its_reason(reason: str, ingress: IngressRun) -> None:
    before = ingress.metric("bwsm_ingress_sessions_ended_total", protocol="twilio", reason=reason)
    lines = TWILIO_BAD[reason]
    if reason == "start_timeout":  # connected, then nothing: the server gives up after --start-timeout
        lines = [*lines, {"t": 5.0, "text": orjson.dumps(twilio_start("CA-late")).decode()}]
    played = asyncio.run(play(ingress.url("/twilio"), lines, speed=1.0))
    assert played.close_code == 1008 and played.close_reason.startswith(reason), played
    assert ingress.metric("bwsm_ingress_sessions_ended_total", protocol="twilio", reason=reason) == before + 1


def test_a_refused_session_ends_its_call_and_other_sessions_go_on(kafka_bootstrap: str, topic: str,
                                                                   ingress: IngressRun) -> None:
    good = twilio_session("CA-alongside", mulaw_noise(2.0, 5), custom={"n": "1"})
    refused = [text_line(0, twilio_start("CA-bad-b64-2")), *TWILIO_BAD["bad_base64"][1:]]

    async def both() -> tuple:
        return await asyncio.gather(play(ingress.url("/twilio"), refused, speed=0),
                                    play(ingress.url("/twilio"), good, speed=4))

    bad, fine = asyncio.run(both())
    assert bad.close_code == 1008 and fine.close_code == 1000
    calls = read_calls(kafka_bootstrap, topic, ended(["CA-bad-b64-2", "CA-alongside"]))
    assert audio_of(calls["CA-bad-b64-2"]) == b"\x10" * 160  # the audio before the bad message, then its end


AH = "7f3e1b9c-0000-4000-8000-0000000000"


def audiohook_open(session: str, seq: int = 1) -> dict:
    return orjson.loads(audiohook_session(session, b"", b"")[0]["text"]) | {"seq": seq}


@pytest.mark.parametrize(("reason", "lines"), [
    ("bad_json", [{"t": 0, "text": "{nope"}]),
    ("media_before_start", [{"t": 0, "binary": base64.b64encode(b"\xff" * 320).decode()}]),
    ("bad_seq", [text_line(0, audiohook_open(AH + "02", seq=2))]),
    ("unknown_event", [text_line(0, audiohook_open(AH + "03") | {"type": "teleport"})]),
])
def test_bad_audiohook_input_is_answered_with_disconnect_then_closed(reason: str, lines: list,
                                                                       ingress: IngressRun) -> None:
    before = ingress.metric("bwsm_ingress_sessions_ended_total", protocol="audiohook", reason=reason)
    played = asyncio.run(play(ingress.url("/audiohook"), lines, speed=0))
    (disconnect,) = [m for m in played.received if m["type"] == "disconnect"]
    assert disconnect["parameters"]["reason"] == "error" and disconnect["parameters"]["info"].startswith(reason)
    assert ingress.metric("bwsm_ingress_sessions_ended_total", protocol="audiohook", reason=reason) == before + 1


def test_an_audiohook_open_for_another_organization_than_the_connection_is_refused(ingress: IngressRun) -> None:
    """The upgrade request's audiohook-organization-id (signed, with a client secret) is the session's organization:
    an open naming another one is refused before any audio is taken."""
    opened = audiohook_open(AH + "05")
    org = opened["parameters"]["organizationId"]
    other = asyncio.run(play(ingress.url("/audiohook"), [text_line(0, opened)], speed=0,
                             headers={"audiohook-organization-id": "f" + org[1:]}))
    (disconnect,) = [m for m in other.received if m["type"] == "disconnect"]
    assert disconnect["parameters"]["info"].startswith("bad_message: organizationId is not the audiohook-organization")
    same = asyncio.run(play(ingress.url("/audiohook"), [text_line(0, audiohook_open(AH + "06"))], speed=0,
                            headers={"audiohook-organization-id": org}))
    assert [m["type"] for m in same.received][:1] == ["opened"]


def test_a_socket_that_drops_sends_its_audio_without_an_end_frame(kafka_bootstrap: str, topic: str,
                                                                   ingress: IngressRun) -> None:
    lines = twilio_session("CA-dropped", mulaw_noise(1.0, 6))[:-1]  # no stop: the socket just closes
    asyncio.run(play(ingress.url("/twilio"), lines, speed=0))
    whole = 8000
    calls = read_calls(kafka_bootstrap, topic, lambda c: len(audio_of(c.get("CA-dropped", []))) >= whole)
    frames = calls["CA-dropped"]
    assert audio_of(frames) == mulaw_noise(1.0, 6) and not any(f.end for f in frames)
    assert ingress.metric("bwsm_ingress_sessions_ended_total", protocol="twilio", reason="dropped") >= 1


async def upgrade_status(url: str, headers: dict) -> int:
    """101 when the websocket upgrade is accepted, else the server's HTTP status."""
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(url, headers=headers) as ws:
                await ws.close()
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


def test_credentials_are_checked_on_the_upgrade(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    from twilio.request_validator import RequestValidator

    async def upgrade(path: str, headers: dict) -> int:
        return await upgrade_status(run.url(path), headers)

    run = start_ingress(kafka_bootstrap, topic, tmp_path / "auth.log", BWSM_INGRESS_TOKEN="tok-1",
                        TWILIO_AUTH_TOKEN="twilio-secret", BWSM_AUDIOHOOK_API_KEY="ah-key")
    try:
        url = run.url("/twilio?x=1")
        signature = RequestValidator("twilio-secret").compute_signature(url, {})
        assert asyncio.run(upgrade("/twilio?x=1", {"X-Twilio-Signature": signature})) == 101
        assert asyncio.run(upgrade("/twilio?x=2", {"X-Twilio-Signature": signature})) == 401  # signed another URL
        assert asyncio.run(upgrade("/twilio", {"Authorization": "Bearer tok-1"})) == 401  # Twilio's own check wins
        assert asyncio.run(upgrade("/audiohook", {"X-API-KEY": "ah-key"})) == 101
        assert asyncio.run(upgrade("/audiohook", {"X-API-KEY": "nope"})) == 401
        assert run.metric("bwsm_ingress_refused_upgrades_total", protocol="twilio",
                          reason="bad X-Twilio-Signature") == 1
        assert run.metric("bwsm_ingress_refused_upgrades_total", protocol="twilio",
                          reason="no X-Twilio-Signature") == 1
        assert run.metric("bwsm_ingress_refused_upgrades_total", protocol="audiohook", reason="bad X-API-KEY") == 1
        assert "refused twilio upgrade from 127.0.0.1: bad X-Twilio-Signature" in run.log()
    finally:
        run.stop()
    run = start_ingress(kafka_bootstrap, topic, tmp_path / "bearer.log", BWSM_INGRESS_TOKEN="tok-1")
    try:
        assert asyncio.run(upgrade("/twilio", {"Authorization": "Bearer tok-1"})) == 101
        assert asyncio.run(upgrade("/twilio?token=tok-1", {})) == 101
        assert asyncio.run(upgrade("/audiohook", {})) == 401
    finally:
        run.stop()


def test_audiohook_upgrades_need_a_good_signature_when_the_client_secret_is_set(kafka_bootstrap: str, topic: str,
                                                                                 tmp_path: Path) -> None:
    import secrets
    import time

    with pytest.raises(RuntimeError, match="BWSM_AUDIOHOOK_CLIENT_SECRET is not base64"):
        start_ingress(kafka_bootstrap, topic, tmp_path / "bad.log", BWSM_AUDIOHOOK_API_KEY="k",
                      BWSM_AUDIOHOOK_CLIENT_SECRET="not base64!")
    secret, key = secrets.token_bytes(32), "ah-key-" + secrets.token_hex(8)
    run = start_ingress(kafka_bootstrap, topic, tmp_path / "signed.log", BWSM_AUDIOHOOK_API_KEY=key,
                        BWSM_AUDIOHOOK_CLIENT_SECRET=base64.b64encode(secret).decode())

    def signed(**change: object) -> dict:
        now = int(time.time())
        return audiohook_signed(**{"path": "/audiohook", "host": f"127.0.0.1:{run.port}", "org": AH + "a0",
                                   "session": AH + "a1", "correlation": AH + "a2", "key": key, "secret": secret,
                                   "created": now, "expires": now + 30,
                                   "nonce": base64.b64encode(secrets.token_bytes(18)).decode(), **change})

    async def upgrade(headers: dict, path: str = "/audiohook") -> int:
        return await upgrade_status(run.url(path), headers)

    try:
        query = "/audiohook?tenant=acme%20corp"  # signed as sent: the path and query, still percent-encoded
        assert asyncio.run(upgrade(signed(path=query), query)) == 101
        good = signed()
        assert asyncio.run(upgrade(good)) == 101
        assert asyncio.run(upgrade(good)) == 401  # the same request again: its nonce was used
        assert asyncio.run(upgrade({"X-API-KEY": key})) == 401  # the key alone is not enough any more
        assert asyncio.run(upgrade(signed(secret=b"another secret"))) == 401
        assert asyncio.run(upgrade(signed(path="/audiohook?other=1"))) == 401  # signed for another target
        assert asyncio.run(upgrade(signed(created=int(time.time()) - 60))) == 401
        assert asyncio.run(upgrade(signed() | {"X-API-KEY": "nope"})) == 401
        for reason, count in [("no signature", 1), ("bad signature", 2), ("replayed signature nonce", 1),
                              ("signature too old", 1), ("bad X-API-KEY", 1)]:
            assert run.metric("bwsm_ingress_refused_upgrades_total", protocol="audiohook", reason=reason) == count
        log = run.log()
        assert "refused audiohook upgrade from 127.0.0.1: bad signature" in log
        assert key not in log and base64.b64encode(secret).decode() not in log
        assert good["Signature"][6:-1] not in log
        # and a whole session over a signed upgrade goes through as before
        lines = audiohook_session(AH + "a1", mulaw_noise(0.5, 15), mulaw_noise(0.5, 16))
        organization = orjson.loads(lines[0]["text"])["parameters"]["organizationId"]  # the open's own
        played = asyncio.run(play(run.url("/audiohook"), lines, speed=0, headers=signed(org=organization)))
        assert [m["type"] for m in played.received][-1] == "closed"
    finally:
        run.stop()
    # behind a proxy that rewrites Host, @authority is the host the client asked for: BWSM_INGRESS_PUBLIC_URL's
    run = start_ingress(kafka_bootstrap, topic, tmp_path / "proxied.log", BWSM_AUDIOHOOK_API_KEY=key,
                        BWSM_AUDIOHOOK_CLIENT_SECRET=base64.b64encode(secret).decode(),
                        BWSM_INGRESS_PUBLIC_URL="wss://Ingress.Example.com:443")
    try:
        assert asyncio.run(upgrade(signed(host="ingress.example.com") | {"Host": f"127.0.0.1:{run.port}"})) == 101
        assert asyncio.run(upgrade(signed())) == 401  # signed for the address the proxy used
    finally:
        run.stop()


def test_an_unreachable_broker_stops_the_reads_instead_of_growing_memory(tmp_path: Path) -> None:
    """Nothing listens where Kafka should be: the producer's cap fills, the session stops reading, TCP pushes back,
    and the client's sends stall far short of the session, with the bytes in flight at the cap."""
    from e2e_harness import free_port

    cap = 16000  # 1 s of two-track mu-law: ten 0.1 s frames (the figures below count in those)
    run = start_ingress(f"127.0.0.1:{free_port()}", "nowhere", tmp_path / "stalled.log",
                        _ARGS=f"--max-in-flight-bytes {cap} --frame-seconds 0.1")
    lines = twilio_session("CA-stalled", mulaw_noise(600.0, 8), mulaw_noise(600.0, 9))  # 10 minutes, ~18 MB
    sent = 0

    async def client() -> None:
        nonlocal sent
        async with aiohttp.ClientSession() as http, http.ws_connect(run.url("/twilio")) as ws:
            for line in lines:
                await ws.send_str(line["text"])
                sent += 1

    async def watch() -> tuple[int, float]:
        task = asyncio.create_task(client())
        deadline = asyncio.get_running_loop().time() + 60
        in_flight = 0
        while in_flight < cap - 3200:  # until the cap is (within two frames of being) full
            assert asyncio.get_running_loop().time() < deadline and not task.done(), "the cap never filled"
            await asyncio.sleep(0.1)
            in_flight = orjson.loads(await asyncio.to_thread(_health, run))["in_flight_bytes"]
        last = -1
        while sent != last:  # then until the client's sends stall (or the deadline says they never do)
            assert asyncio.get_running_loop().time() < deadline and not task.done(), "the client was never held back"
            last = sent
            await asyncio.sleep(1.0)
        in_flight = orjson.loads(await asyncio.to_thread(_health, run))["in_flight_bytes"]
        task.cancel()
        return last, in_flight

    try:
        stalled_at, in_flight = asyncio.run(watch())
        read = run.metric("bwsm_ingress_messages_total", protocol="twilio", type="media")
        assert stalled_at < len(lines) / 2  # what the socket buffers hold, then the client waits
        assert read < 1000  # the session read about the cap (1 s = 100 media messages) and stopped
        assert cap - 3200 <= in_flight <= cap
    finally:
        run.kill()


def _health(run: IngressRun) -> bytes:
    import urllib.request

    with urllib.request.urlopen(run.base + "/health", timeout=5) as response:
        return response.read()


def test_audiohook_pause_and_discarded_audio_become_silence_and_update_is_answered(
        kafka_bootstrap: str, topic: str, ingress: IngressRun) -> None:
    external, internal = mulaw_noise(2.0, 10), mulaw_noise(2.0, 11)
    session = AH + "10"
    lines = audiohook_session(session, external, internal, ping_every=0, pause=(5, 0.5))  # paused after 1 s
    update = orjson.loads(lines[-1]["text"])  # the close, turned into an update before it
    update |= {"type": "update", "parameters": {"language": "de-DE"}}
    close = orjson.loads(lines[-1]["text"]) | {"seq": update["seq"] + 1, "serverseq": update["serverseq"] + 1}
    lines = [*lines[:-1], text_line(2.0, update), text_line(2.0, close)]
    played = asyncio.run(play(ingress.url("/audiohook"), lines, speed=0))
    assert [m["type"] for m in played.received] == ["opened", "updated", "closed"]
    start, *frames = read_calls(kafka_bootstrap, topic, ended([session]))[session]
    silence = b"\xff" * 8000  # 0.5 s of two channels
    assert audio_of(frames) == stereo(external[:8000], internal[:8000]) + silence + stereo(external[8000:],
                                                                                          internal[8000:])


def test_call_settings_that_break_the_contract_do_not_cost_the_call(kafka_bootstrap: str, topic: str,
                                                                     ingress: IngressRun) -> None:
    before = ingress.metric("bwsm_ingress_refused_call_settings_total", protocol="twilio")
    lines = twilio_session("CA-bad-config", mulaw_noise(1.0, 12), mulaw_noise(1.0, 13),
                           custom={"tenant": "acme", "config": '{"diarisation": "channel"'})
    assert asyncio.run(play(ingress.url("/twilio"), lines, speed=0)).close_code == 1000
    start, *frames = read_calls(kafka_bootstrap, topic, ended(["CA-bad-config"]))["CA-bad-config"]
    assert start.settings.metadata == {"tenant": "acme"}
    assert start.settings.config.channel_labels == ("caller", "agent") and start.settings.config.language is None
    assert len(audio_of(frames)) == 16000
    assert ingress.metric("bwsm_ingress_refused_call_settings_total", protocol="twilio") == before + 1


def test_the_replay_command_plays_a_session_file(kafka_bootstrap: str, topic: str, ingress: IngressRun,
                                                  tmp_path: Path) -> None:
    import subprocess
    import sys

    from bytewax.speechmatics.connectors.ingress.replay import write_session

    write_session(tmp_path / "call.jsonl", twilio_session("CA-replayed", mulaw_noise(1.0, 14), custom={"a": "1"}))
    done = subprocess.run([sys.executable, "-m", "bytewax.speechmatics.connectors.cli", "ingress", "replay",
                           str(tmp_path / "call.jsonl"), "--url", ingress.url("/twilio"), "--speed", "4"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and "closed with code 1000" in done.stdout, done.stdout + done.stderr
    start, *frames = read_calls(kafka_bootstrap, topic, ended(["CA-replayed"]))["CA-replayed"]
    assert audio_of(frames) == mulaw_noise(1.0, 14) and start.settings.metadata == {"a": "1"}
