"""Run the ingress as users do (`bytewax-speechmatics ingress`, its own OS process) and talk to it over real
websockets; read what it produced from the real broker."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer
from e2e_harness import free_port

from bytewax.speechmatics.schemas.call_start import decode_start, message_kind
from bytewax.speechmatics.schemas.frames import decode_frame


@dataclass
class IngressRun:
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def metrics(self) -> str:
        with urllib.request.urlopen(self.base + "/metrics", timeout=5) as response:
            return response.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of the ingress's /metrics (0 when absent)."""
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        for line in self.metrics().splitlines():
            if line.startswith(name + ("{" + want + "}" if want else " ")):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def kill(self) -> None:
        """SIGKILL (a stalled producer would otherwise spend its shutdown flushing into the void)."""
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_ingress(bootstrap: str, topic: str, log_path: Path, **env: str) -> IngressRun:
    port = free_port()
    args = env.pop("_ARGS", "").split()
    full = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "PYTHONUNBUFFERED": "1", **env}
    for name in ("BWSM_INGRESS_TOKEN", "TWILIO_AUTH_TOKEN", "BWSM_AUDIOHOOK_API_KEY", "BWSM_AUDIOHOOK_CLIENT_SECRET"):
        if name not in env:
            full.pop(name, None)
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen([sys.executable, "-m", "bytewax.speechmatics.connectors.cli", "ingress", "--host",
                             "127.0.0.1", "--port", str(port), "--topic", topic, *args],
                            env=full, stdout=log, stderr=subprocess.STDOUT)
    run = IngressRun(proc, port, log_path)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"ingress exited: {run.log()}")
        try:
            with urllib.request.urlopen(run.base + "/health", timeout=2):
                return run
        except OSError:
            if time.monotonic() > deadline:
                run.stop()
                raise TimeoutError(f"ingress not healthy within 60 s: {run.log()}") from None
            time.sleep(0.1)


def read_calls(bootstrap: str, topic: str, done, deadline_s: float = 60.0) -> dict[str, list]:  # noqa: ANN001
    """call id -> [start (CallStart) and frames (AudioFrame)] in topic order, until `done(calls)`."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    calls: dict[str, list] = defaultdict(list)
    deadline = time.monotonic() + deadline_s
    try:
        while not done(calls):
            assert time.monotonic() < deadline, f"not done within {deadline_s} s: {dict(calls).keys()}"
            for m in consumer.consume(500, 0.2):
                if m.error():
                    continue
                if message_kind(m.headers()) == "start":
                    calls[m.key().decode()].append(decode_start(m.key(), m.value(), m.headers()))
                else:
                    calls[m.key().decode()].append(decode_frame(m.key(), m.value(), m.headers()))
    finally:
        consumer.close()
    return calls


def ended(call_ids) -> object:  # noqa: ANN001
    return lambda calls: all(calls.get(c) and getattr(calls[c][-1], "end", False) for c in call_ids)


def mulaw_noise(seconds: float, seed: int, silent: float = 0.0) -> bytes:
    audio = np.random.default_rng(seed).integers(0, 255, int(seconds * 8000), dtype=np.uint8)
    audio[: int(silent * 8000)] = 0xFF
    return audio.tobytes()


def audio_of(frames: list) -> bytes:
    return b"".join(f.audio for f in frames if hasattr(f, "audio"))


#: What Genesys covers in an AudioHook request signature, in its order.
AUDIOHOOK_COVERED = ("@request-target", "@authority", "audiohook-organization-id", "audiohook-session-id",
                     "audiohook-correlation-id", "x-api-key")


def audiohook_signed(*, path: str, host: str, org: str, session: str, correlation: str, key: str, secret: bytes,
                     created: int, expires: int, nonce: str, keyid: str | None = None) -> dict:
    """An AudioHook upgrade's headers signed as Genesys signs them. Written from RFC 9421 section 2.5 and the
    protocol's example, apart from the ingress's verifier (so a test with it can catch the verifier's mistakes): one
    `"name": value` line per covered component, then `"@signature-params": ` and the Signature-Input member, joined
    by LF; HMAC-SHA256 keyed by the secret; the label sig1."""
    values = {"@request-target": path, "@authority": host, "audiohook-organization-id": org,
              "audiohook-session-id": session, "audiohook-correlation-id": correlation, "x-api-key": key}
    params = ("(" + " ".join(f'"{name}"' for name in AUDIOHOOK_COVERED) + ")"
              f';keyid="{keyid or key}";nonce="{nonce}";alg="hmac-sha256";created={created};expires={expires}')
    base = "".join(f'"{name}": {values[name]}\n' for name in AUDIOHOOK_COVERED) + f'"@signature-params": {params}'
    mac = base64.b64encode(hmac.new(secret, base.encode("ascii"), hashlib.sha256).digest()).decode()
    return {"Host": host, "Audiohook-Organization-Id": org, "Audiohook-Session-Id": session,
            "Audiohook-Correlation-Id": correlation, "X-API-KEY": key,
            "Signature-Input": f"sig1={params}", "Signature": f"sig1=:{mac}:"}
