"""The lag alert with a real Prometheus server (built from the Go module proxy) scraping a real flow on the real
broker: audio keeps arriving; the flow is stopped and the alert fires; the flow is restarted and it resolves.
On the way, the flow process answers /ready (200: every check passed) and /status on its admin port.

The rule is the production rule of deploy/prometheus/alerts.yml with a 4 s threshold and a 2 s `for` instead of
2 and 5 minutes (same expression otherwise); Prometheus scrapes and evaluates every second.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from e2e_harness import free_port, make_topics
from ops_tools import build

from bytewax.speechmatics.connectors.cli.publish import CallAudio, publish_calls
from bytewax.speechmatics.connectors.worker.control import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.tools]
ALERT = "BwsmConsumerLagHigh"
RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"


def fast_rules() -> dict:
    """The lag rule as shipped, with seconds instead of minutes."""
    rule = next(r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if r.get("alert") == ALERT)
    assert "> 120" in rule["expr"] and rule["for"] == "5m"
    return {"groups": [{"name": "test", "rules": [{**rule, "expr": rule["expr"].replace("> 120", "> 4"),
                                                   "for": "2s"}]}]}


def api(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:  # noqa: S310
        return json.loads(answer.read())


def wait_for(what: str, check: Callable[[], bool], timeout: float, proc_logs: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}\n{proc_logs()}")


def alert_states(port: int) -> set[str]:
    return {a["state"] for a in api(port, "/api/v1/alerts")["data"]["alerts"] if a["labels"]["alertname"] == ALERT}


class Publisher(threading.Thread):
    """Calls of 2 s at real time, one after another, until stopped."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.stopped = bootstrap, topic, threading.Event()
        self.pcm = (np.sin(np.arange(32000) / 16000 * 2 * np.pi * 300) * 6000).astype("<i2").tobytes()

    def run(self) -> None:
        n = 0
        while not self.stopped.is_set():
            publish_calls([CallAudio(f"lag-{n}", self.pcm, 16000, 1)], self.topic, speed=1.0,
                          producer_config={"bootstrap.servers": self.bootstrap})
            n += 1


def test_the_lag_alert_fires_while_the_flow_is_stopped_and_resolves_after_restart(
        kafka_bootstrap: str, make_topic: Callable[..., str],
        reference_worker: WorkerProcess, tmp_path: Path) -> None:
    prometheus = build("prometheus")
    topics = make_topics(make_topic, audio_partitions=1)
    admin_port, prom_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BWSM_", "SPEECHMATICS_", "BYTEWAX_"))}
    env.update(topics.env(), KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, BWSM_ADMIN_PORT=str(admin_port),
               BWSM_LIMITER_TOPIC=make_topic("limiter"), SPEECHMATICS_BATCH_URL=reference_worker.url,
               SPEECHMATICS_API_KEY="test-key", BWSM_CHUNK_POLICY="fixed", BWSM_CHUNK_SECONDS="2",
               PYTHONUNBUFFERED="1")
    flow_log = tmp_path / "flow.log"

    def start_flow() -> subprocess.Popen:
        with open(flow_log, "ab") as log:
            return subprocess.Popen([sys.executable, "-m", "bytewax.speechmatics.connectors.cli", "run",
                                     "--recovery-dir", str(tmp_path / "recovery"), "--snapshot-interval", "1"],
                                    env=env, stdout=log, stderr=subprocess.STDOUT)

    (tmp_path / "rules.yml").write_text(yaml.safe_dump(fast_rules()))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
        "rule_files": ["rules.yml"],
        "scrape_configs": [{"job_name": "flow", "static_configs": [{"targets": [f"127.0.0.1:{admin_port}"]}]}],
    }))
    prom_log = tmp_path / "prometheus.log"

    def logs() -> str:
        return (flow_log.read_text(errors="replace")[-3000:] + "\n--- prometheus ---\n"
                + prom_log.read_text(errors="replace")[-2000:])

    publisher = Publisher(kafka_bootstrap, topics.audio)
    flow = start_flow()
    with open(prom_log, "wb") as out:
        prom = subprocess.Popen([str(prometheus), f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        publisher.start()
        # Reading: Prometheus has the flow's lag in seconds, and no alert.
        wait_for("the flow's lag in Prometheus", lambda: bool(api(
            prom_port, "/api/v1/query?query=bwsm_source_lag_seconds")["data"]["result"]), 90, logs)
        assert alert_states(prom_port) == set()
        wait_for("the flow to be ready", lambda: api(admin_port, "/ready")["broker"]["ok"], 30, logs)
        assert api(admin_port, "/status")["process_id"] == 0

        flow.send_signal(signal.SIGINT)  # stopped as a user stops it, while audio keeps arriving
        assert flow.wait(60) == 0, logs()
        wait_for("the lag alert to fire", lambda: alert_states(prom_port) == {"firing"}, 60, logs)

        flow = start_flow()  # resumes from the recovery store and catches up
        wait_for("the lag alert to resolve", lambda: alert_states(prom_port) == set(), 90, logs)
    finally:
        publisher.stopped.set()
        if flow.poll() is None:
            flow.send_signal(signal.SIGINT)
            flow.wait(60)
        prom.terminate()
        prom.wait(30)
        publisher.join(10)
