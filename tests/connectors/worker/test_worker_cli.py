"""The worker command is where the worker's variables are read; it hands them on as explicit configuration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bytewax.speechmatics.connectors.cli.worker import build_parser, make_engine
from bytewax.speechmatics.connectors.worker.engines.whisper import (
    ModelResolutionError,
    WhisperBackend,
    WhisperConfig,
    default_threads,
    resolve_model,
)
from bytewax.speechmatics.connectors.worker.webhooks import DEFAULT_WEBHOOK_DEADLINE
from bytewax.speechmatics.schemas.errors import SettingsError


def test_defaults_without_variables() -> None:
    args = build_parser({"UNRELATED": "x"}).parse_args([])
    assert (args.host, args.port, args.parallel, args.engine) == ("127.0.0.1", 18000, 1, "whisper")
    assert (args.api_key, args.faults, args.model_dir, args.model, args.threads) == (None, None, None, "base", None)
    assert args.webhook_deadline == DEFAULT_WEBHOOK_DEADLINE
    assert args.cache_dir == str(Path.home() / ".cache" / "bytewax-speechmatics")


def test_variables_become_flag_defaults_and_flags_win(tmp_path: Path) -> None:
    env = {"BWSM_WORKER_PORT": "0", "BWSM_WORKER_PARALLEL": "3", "BWSM_WORKER_ENGINE": "reference",
           "BWSM_WHISPER_MODEL_DIR": str(tmp_path), "BWSM_WHISPER_MODEL": "tiny", "BWSM_WHISPER_THREADS": "2",
           "BWSM_CACHE_DIR": str(tmp_path / "cache"), "BWSM_WORKER_WEBHOOK_DEADLINE": "2.5"}
    args = build_parser(env).parse_args([])
    assert (args.port, args.parallel, args.engine, args.model, args.threads) == (0, 3, "reference", "tiny", 2)
    assert (args.model_dir, args.cache_dir, args.webhook_deadline) == (str(tmp_path), str(tmp_path / "cache"), 2.5)
    flags = build_parser(env).parse_args(["--parallel", "5", "--threads", "1", "--webhook-deadline", "9"])
    assert (flags.parallel, flags.threads, flags.webhook_deadline) == (5, 1, 9.0)


@pytest.mark.parametrize(("variable", "value"), [
    ("BWSM_WORKER_PORT", "eighty"), ("BWSM_WORKER_PORT", "70000"), ("BWSM_WORKER_PARALLEL", "0"),
    ("BWSM_WORKER_ENGINE", "kaldi"), ("BWSM_WHISPER_THREADS", "-1"), ("BWSM_WORKER_WEBHOOK_DEADLINE", "nan"),
])
def test_a_bad_variable_is_a_settings_error_naming_it(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        build_parser({variable: value})


def test_the_whisper_engine_gets_its_configuration_from_the_command(tmp_path: Path) -> None:
    env = {"BWSM_WHISPER_MODEL_DIR": str(tmp_path), "BWSM_WHISPER_MODEL": "tiny", "BWSM_WHISPER_THREADS": "3",
           "BWSM_CACHE_DIR": str(tmp_path / "cache")}
    engine = make_engine(build_parser(env).parse_args(["--engine", "whisper", "--parallel", "2"]))
    assert isinstance(engine, WhisperBackend) and engine.parallel == 2
    assert engine.config == WhisperConfig(cache_dir=tmp_path / "cache", model_dir=str(tmp_path), model_name="tiny",
                                          threads=3)


def test_model_resolution_and_threads_follow_the_config_only(tmp_path: Path) -> None:
    with pytest.raises(ModelResolutionError, match="has no model.bin"):
        resolve_model(WhisperConfig(cache_dir=tmp_path, model_dir=str(tmp_path)))
    (tmp_path / "model.bin").write_bytes(b"")
    assert resolve_model(WhisperConfig(cache_dir=tmp_path, model_dir=str(tmp_path))) == str(tmp_path)
    assert default_threads(4, 3) == 3
    assert default_threads(10**6) == 1


def test_the_standalone_command_reports_a_bad_variable_in_one_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "bytewax.speechmatics.connectors.cli.worker"],
                          env={"PATH": "/usr/bin:/bin", "BWSM_WORKER_PARALLEL": "many"},
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr == "worker: BWSM_WORKER_PARALLEL must be a whole number, at least 1, got 'many'\n"
