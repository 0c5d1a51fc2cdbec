"""The command line's user errors are one stderr line naming the file, broker or setting, with a non-zero exit; `run`
stops on SIGINT/SIGTERM with one "run: stopped" line and exit 0.

Every check runs the real command in its own process, as a user would.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import assume, given, settings
from hypothesis import strategies as st

CLI = [sys.executable, "-m", "bytewax.speechmatics.connectors.cli"]
# An unreachable broker must be reported, not waited for forever: the CLI gives up after 5 s; the bound here leaves
# room for four interpreters starting at once on a loaded 2-core machine.
BROKER_DEADLINE_S = 30.0


def unused_port() -> int:
    """A loopback port nothing listens on (bound and released at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env(bootstrap: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "BWSM_", "BYTEWAX_"))}
    return {**env, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, **extra}


def stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def wav(path: Path, rate: int = 16000, seconds: float = 0.5) -> Path:
    sf.write(str(path), np.zeros(int(rate * seconds), dtype=np.int16), rate, subtype="PCM_16")
    return path


# ---------------------------------------------------------------- publish: files that are not calls


def _not_audio(tmp: Path) -> tuple[Path, str]:
    path = tmp / "notes.txt"
    path.write_text("this is not audio\n")
    return path, "not an audio file"


def _truncated_wav(tmp: Path) -> tuple[Path, str]:
    path = tmp / "cut.wav"
    path.write_bytes(wav(tmp / "whole.wav").read_bytes()[:30])
    return path, "not an audio file"


def _missing(tmp: Path) -> tuple[Path, str]:
    return tmp / "nowhere.wav", "no such file"


def _directory(tmp: Path) -> tuple[Path, str]:
    return tmp, "is a directory"


def _text_named_mp3(tmp: Path) -> tuple[Path, str]:
    # mpg123 (inside libsndfile) writes its own notes to stderr while it looks for MPEG frames: silenced
    path = tmp / "song.mp3"
    path.write_text("this is not audio either\n" * 40)
    return path, "not an audio file libsndfile can read (WAV, FLAC, OGG, MP3, AIFF, ...): no decoder recognises"


def _three_channels(tmp: Path) -> tuple[Path, str]:
    path = tmp / "surround.wav"
    sf.write(str(path), np.zeros((800, 3), dtype=np.int16), 16000, subtype="PCM_16")
    return path, "3 channels; the frame contract allows 1 or 2"


@pytest.mark.parametrize("make", [_not_audio, _truncated_wav, _missing, _directory, _text_named_mp3, _three_channels])
def test_publish_of_a_file_that_is_not_a_call_is_one_line_naming_it(
    tmp_path: Path, make: Callable[[Path], tuple[Path, str]],
) -> None:
    path, reason = make(tmp_path)
    # No broker is contacted: the files are checked first (a broker here would not answer anyway).
    proc = subprocess.run([*CLI, "publish", str(path)], env=cli_env(f"127.0.0.1:{unused_port()}"),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = stderr_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"publish: {path}") and reason in lines[0], lines[0]
    assert proc.stdout == ""


# ---------------------------------------------------------------- every Kafka command: an unreachable broker


def test_publish_tail_and_run_name_an_unreachable_broker_within_the_deadline(tmp_path: Path) -> None:
    broker = f"127.0.0.1:{unused_port()}"
    audio = wav(tmp_path / "call.wav")
    commands = {
        "publish": [*CLI, "publish", str(audio), "--speed", "max"],
        "tail": [*CLI, "tail"],
        "run": [*CLI, "run", "--recovery-dir", str(tmp_path / "recovery")],
        "tail -v": [*CLI, "-v", "tail"],
    }
    started = time.monotonic()
    procs = {name: subprocess.Popen(cmd, env=cli_env(broker), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True) for name, cmd in commands.items()}
    results: dict[str, tuple[int, str, str]] = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=max(0.1, started + BROKER_DEADLINE_S - time.monotonic()))
            results[name] = (proc.returncode, out, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name in ("publish", "tail", "run"):
        code, out, err = results[name]
        assert code == 2, (name, err)
        lines = stderr_lines(err)
        assert len(lines) == 1, (name, err)  # no librdkafka log lines, no traceback
        assert lines[0].startswith(f"{name}: Kafka at {broker} ") and "did not answer" in lines[0], lines[0]
        assert out == "", (name, out)
    assert not (tmp_path / "recovery").exists()  # nothing was prepared for a flow that cannot run
    code, _, err = results["tail -v"]  # -v lets librdkafka's own reasons through, then the same last line
    lines = stderr_lines(err)
    assert code == 2 and len(lines) > 1 and "librdkafka" in err and f"{broker}" in lines[-1], err


def test_a_bad_setting_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    cases = {
        "BWSM_WORKERS": ([*CLI, "tail"], "x"),  # read while the command line is parsed
        "BWSM_TOPIC_PARTITIONS": ([*CLI, "run"], "many"),  # read by the command
        "KAFKA_CONF_NO_SUCH_PROPERTY": ([*CLI, "tail"], "1"),  # refused by librdkafka
    }
    for variable, (cmd, value) in cases.items():
        proc = subprocess.run(cmd, env=cli_env(f"127.0.0.1:{unused_port()}", **{variable: value}),
                              capture_output=True, text=True, timeout=60)
        lines = stderr_lines(proc.stderr)
        assert proc.returncode == 2 and len(lines) == 1, (variable, proc.stderr)
        expected = "no.such.property" if variable.startswith("KAFKA_CONF_") else variable
        assert expected in lines[0], lines[0]


# ---------------------------------------------------------------- run: stopped by a signal


def _wait_for(condition: Callable[[], bool], deadline_s: float, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"`run` exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {deadline_s:.0f} s")
        time.sleep(0.1)  # polling interval of a condition with a deadline, not a wait for time to pass


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_stops_on_a_signal_with_one_line_and_exit_zero(
    sig: signal.Signals, kafka_bootstrap: str, make_topic: Callable[..., str], tmp_path: Path,
) -> None:
    api_port = unused_port()
    env = cli_env(
        kafka_bootstrap,
        BWSM_AUDIO_TOPIC=make_topic("audio"), BWSM_RT_TOPIC=make_topic("rt"),
        BWSM_TRANSCRIPT_TOPIC=make_topic("transcripts"), BWSM_DLQ_TOPIC=make_topic("dlq"),
        # No audio is published, so the Speechmatics endpoint is never called; no embedded worker to load.
        BWSM_EMBEDDED_WORKER="0", SPEECHMATICS_API_KEY="unused",
        SPEECHMATICS_BATCH_URL=f"http://127.0.0.1:{unused_port()}/v2",
        BYTEWAX_DATAFLOW_API_ENABLED="1", BYTEWAX_DATAFLOW_API_PORT=str(api_port),
    )
    metrics = f"http://127.0.0.1:{api_port}/metrics"
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen([*CLI, "run", "--recovery-dir", str(tmp_path / "recovery"), "--snapshot-interval",
                                 "1"], env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _answers(metrics), 120, proc, "running flow (its dataflow API)")
        proc.send_signal(sig)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stdout, stderr = out_path.read_text(), err_path.read_text()
    assert code == 0, (stdout, stderr)
    assert [line for line in stdout.splitlines() if "stopped" in line] == ["run: stopped"], stdout
    assert stdout.rstrip().endswith("run: stopped")
    assert "Traceback" not in stderr and "panicked" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert not _answers(metrics)  # the flow process is gone, not orphaned
    assert len(list((tmp_path / "recovery").glob("part-*.sqlite3"))) == 4  # recovery stays for the next start


# ---------------------------------------------------------------- option values: said in words


@pytest.mark.parametrize(("argv", "says"), [
    (["publish", "x.wav", "--speed", "fast"],
     "argument --speed: must be realtime, max, or a positive number (times real time), got 'fast'"),
    (["publish", "x.wav", "--frame-ms", "twenty"],
     "argument --frame-ms: must be a whole number of milliseconds, at least 1, got 'twenty'"),
    (["publish", "x.wav", "--sample-rate", "44100"],
     "argument --sample-rate: must be 8000, 16000, 32000 or 48000 (Hz), got '44100'"),
    (["dlq", "--last", "0"], "argument --last: must be a whole number, at least 1, got '0'"),
])
def test_a_bad_option_value_says_what_is_allowed_in_words(argv: list[str], says: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from bytewax.speechmatics.connectors.cli import build_parser

    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.strip().splitlines()[-1] == f"bytewax-speechmatics {argv[0]}: error: {says}"
    assert "invalid" not in err and "parse_" not in err and "_count" not in err


# ---------------------------------------------------------------- every numeric option: refused in words

#: (command, option, a value it refuses, the allowed values its refusal names): one row per typed option of every
#: command (the test below checks the list is complete).
NUMERIC_OPTIONS = [
    ("run", "--workers", "0", "a whole number, at least 1"),
    ("run", "--process-id", "-1", "a whole number, at least 0"),
    ("run", "--recovery-partitions", "0", "a whole number, at least 1"),
    ("run", "--snapshot-interval", "0", "a whole number of seconds, at least 1"),
    ("run", "--backup-interval", "-1", "a whole number of seconds, at least 0"),
    ("tail", "--idle-timeout", "nan", "a number of seconds, at least 0"),
    ("dlq", "--last", "0", "a whole number, at least 1"),
    ("publish", "--frame-ms", "1.5", "a whole number of milliseconds, at least 1"),
    ("publish", "--sample-rate", "44100", "8000, 16000, 32000 or 48000 (Hz)"),
    ("publish", "--speed", "-1", "realtime, max, or a positive number (times real time)"),
    ("worker", "--port", "65536", "a port number from 0 to 65535"),
    ("worker", "--parallel", "0", "a whole number, at least 1"),
    ("worker", "--processing-factor", "-1", "a number of seconds per second of audio, at least 0"),
    ("worker", "--webhook-deadline", "0", "a number of seconds, more than 0"),
    ("worker", "--threads", "0", "a whole number, at least 1"),
    *(("worker", f"--fault-{name}", "1.5", "a fraction from 0 to 1")
      for name in ("post-429", "get-429", "503", "500", "drop", "reject")),
    *(("worker", f"--fault-{name}", "2:1",
       "a number of seconds, at least 0, or MIN:MAX (two such numbers, MIN at most MAX)")
      for name in ("latency", "job-duration", "webhook-delay")),
    ("worker", "--fault-seed", "1.5", "a whole number"),
    ("demo", "--speed", "1e999", "a number of times real time, more than 0"),
    ("demo", "--deadline", "0", "a number of seconds, more than 0"),
    ("demo", "--parallel", "0", "a whole number, at least 1"),
    ("ingress", "--port", "-1", "a port number from 0 to 65535"),
    ("ingress", "--start-timeout", "0", "a number of seconds, more than 0"),
    ("ingress", "--max-in-flight-bytes", "0", "a whole number, at least 1"),
    ("ingress", "--frame-seconds", "-0.5", "a number of seconds, more than 0"),
    ("ingress replay", "--speed", "0", "realtime, max, or a positive number (times real time)"),
    ("realtime", "--metrics-port", "x", "a port number from 0 to 65535"),
]
#: The positional arguments a command needs before its options are read.
POSITIONALS = {"ingress replay": ["session.jsonl", "--url", "ws://127.0.0.1:1/twilio"]}
#: How argparse names an option that has a short form too.
SHORT_FORMS = {("run", "--workers"): "-w/--workers", ("run", "--process-id"): "-i/--process-id"}
#: What a refusal must never show: argparse's words for a type it cannot name, our functions' names, a traceback.
INTERNALS = ("invalid", "_positive", "_port", "_engine", "_count", "_from_env", "parse_", "Traceback", "ValueError")


def _typed_options() -> set[tuple[str, str]]:
    """(command, its long option) for every option of every command whose value is converted by a type."""
    from bytewax.speechmatics.connectors.cli import build_parser

    found: set[tuple[str, str]] = set()

    def walk(parser: argparse.ArgumentParser, command: str) -> None:
        for action in parser._actions:  # noqa: SLF001 - argparse lists its options nowhere else
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                for name, sub in action.choices.items():
                    walk(sub, f"{command} {name}".strip())
            elif action.type is not None and action.option_strings:
                found.add((command, action.option_strings[-1]))

    walk(build_parser(), "")
    return found


def _refusal(command: str, option: str, value: str) -> tuple[int | str | None, str]:
    """Parse `command option=value` in this process as the command line does: (exit code, stderr)."""
    from bytewax.speechmatics.connectors.cli import build_parser

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as info:
        build_parser().parse_args([*command.split(), *POSITIONALS.get(command, []), f"{option}={value}"])
    return info.value.code, err.getvalue()


def test_every_typed_option_of_every_command_is_in_the_list() -> None:
    assert _typed_options() == {(command, option) for command, option, _, _ in NUMERIC_OPTIONS}


@pytest.mark.parametrize(("command", "option", "value", "allowed"), NUMERIC_OPTIONS,
                         ids=[f"{c} {o}" for c, o, _, _ in NUMERIC_OPTIONS])
def test_a_bad_number_is_one_line_naming_the_option_and_the_allowed_values(
    command: str, option: str, value: str, allowed: str,
) -> None:
    for bad in (value, "x"):
        code, err = _refusal(command, option, bad)
        assert code == 2, err
        errors = [line for line in stderr_lines(err) if "error:" in line]
        shown = SHORT_FORMS.get((command, option), option)
        assert errors == [f"bytewax-speechmatics {command}: error: argument {shown}: must be {allowed}, "
                          f"got {bad!r}"], err
        assert all(line.startswith(("usage:", " ")) for line in stderr_lines(err) if "error:" not in line), err
        assert not any(word in err for word in INTERNALS), err


@given(st.sampled_from(NUMERIC_OPTIONS), st.text(max_size=50))
@settings(max_examples=60, deadline=None)
def test_no_refusal_of_any_value_shows_internals(case: tuple[str, str, str, str], value: str) -> None:
    command, option, _, allowed = case
    assume("\x00" not in value)
    try:
        code, err = _refusal(command, option, value)
    except pytest.fail.Exception:  # no SystemExit: the value was accepted
        return
    assert code == 2
    errors = [line for line in stderr_lines(err) if "error:" in line]
    assert len(errors) == 1 and f"must be {allowed}, got " in errors[0], err
    assert not any(word in err.replace(repr(value[:40]), "") for word in INTERNALS), err


@pytest.mark.parametrize(("variable", "value", "allowed"), [
    ("BWSM_INGRESS_PORT", "x", "a port number from 0 to 65535"),
    ("BWSM_INGRESS_MAX_IN_FLIGHT_BYTES", "0", "a whole number, at least 1"),
    ("BWSM_DEMO_SPEED", "x", "a number of times real time, more than 0"),
    ("BWSM_DEMO_SPEED", "nan", "a number of times real time, more than 0"),
    ("BWSM_WORKER_PORT", "x", "a port number from 0 to 65535"),
    # (BWSM_WORKER_PARALLEL is the flow's setting too, refused by Settings.from_env first: tests/connectors/worker)
    ("BWSM_WORKER_PROCESSING_FACTOR", "-1", "a number of seconds per second of audio, at least 0"),
    ("BWSM_WORKER_WEBHOOK_DEADLINE", "1e999", "a number of seconds, more than 0"),
    ("BWSM_WORKER_ENGINE", "kaldi", "whisper or reference"),
    ("BWSM_WHISPER_THREADS", "-1", "a whole number, at least 1"),
])
def test_a_bad_default_from_a_variable_is_one_line_naming_it(
    variable: str, value: str, allowed: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    from bytewax.speechmatics.connectors.cli import main

    monkeypatch.setenv(variable, value)
    try:  # every command's defaults are read while the command line is built, before --help
        code = main(["tail", "--help"])
    except SystemExit as exc:  # the command line was built: the variable was not refused
        code = exc.code
    assert code == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"bytewax-speechmatics: {variable} must be {allowed}, got {value!r}\n")


def test_the_commands_name_a_bad_variable_in_one_line(tmp_path: Path) -> None:
    """As a user runs them: a process each, all at once."""
    broker = f"127.0.0.1:{unused_port()}"
    runs = {
        "BWSM_INGRESS_PORT": ([*CLI, "ingress"], "bytewax-speechmatics: BWSM_INGRESS_PORT must be a port number "
                                                 "from 0 to 65535, got 'x'"),
        "BWSM_DEMO_SPEED": ([*CLI, "demo"], "bytewax-speechmatics: BWSM_DEMO_SPEED must be a number of times real "
                                            "time, more than 0, got 'x'"),
        "BWSM_WORKER_PORT": ([sys.executable, "-m", "bytewax.speechmatics.connectors.cli.worker"],
                             "worker: BWSM_WORKER_PORT must be a port number from 0 to 65535, got 'x'"),
        "BWSM_KAFKA_PORT": ([*CLI, "kafka", "status"], "kafka: BWSM_KAFKA_PORT must be a TCP port from 1 to 65535, "
                                                       "got 'x'"),
    }
    procs = {variable: subprocess.Popen(cmd, env=cli_env(broker, **{variable: "x"}), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, cwd=tmp_path)
             for variable, (cmd, _) in runs.items()}
    try:
        for variable, proc in procs.items():
            out, err = proc.communicate(timeout=60)
            assert (proc.returncode, out, err) == (2, "", runs[variable][1] + "\n"), variable
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
