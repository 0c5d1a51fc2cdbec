"""docker-compose.yml gives Docker users the same pipeline: check what it must contain (no Docker needed)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).parents[3]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_kafka_is_single_node_kraft_apache_kafka() -> None:
    kafka = compose()["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:4.")
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "9092:9092" in kafka["ports"]
    assert "PLAINTEXT://localhost:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert "healthcheck" in kafka


def test_pipeline_services_reach_kafka_and_the_worker() -> None:
    services = compose()["services"]
    assert {"kafka", "worker", "flow", "publisher"} <= set(services)
    for name in ("flow", "publisher", "worker"):
        env = services[name]["environment"]
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"
        assert env["SPEECHMATICS_BATCH_URL"] == "http://worker:18000/v2"
    assert "18000:18000" in services["worker"]["ports"]
    assert services["worker"]["command"][:2] == ["bytewax-speechmatics", "worker"]
    assert services["flow"]["depends_on"]["worker"]["condition"] == "service_healthy"
    assert services["publisher"]["restart"] == "no"


def test_every_service_builds_from_the_project_dockerfile() -> None:
    services = compose()["services"]
    assert (ROOT / "Dockerfile").exists()
    assert all(services[name]["build"] == "." for name in ("worker", "flow", "publisher", "tail"))


def test_every_service_command_is_a_valid_cli_invocation() -> None:
    from bytewax.speechmatics.connectors.cli import build_parser

    parser = build_parser()
    for name, service in compose()["services"].items():
        command = service.get("command")
        if command and command[0] == "bytewax-speechmatics":
            args = parser.parse_args([part.replace("${SPEECHMATICS_API_KEY:-local}", "local") for part in command[1:]])
            assert callable(args.func), name
