"""`export CALL_ID`: read the transcript topic from its beginning and write that call's whole transcript (txt, srt,
vtt or json) to stdout or a file."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from bytewax.speechmatics.connectors.cli.transcripts import FORMATS, ReadError, formatted, read_call
from bytewax.speechmatics.connectors.kafka.topics import KafkaUnavailable, probe_brokers
from bytewax.speechmatics.flows.settings import Settings
from bytewax.speechmatics.schemas.call_transcript import CallTranscript
from bytewax.speechmatics.schemas.errors import ContractError

#: Exit codes: 1 = the call is not on the topic; 2 = a user error (brokers, topic, output file, settings).
NOT_FOUND, USER_ERROR = 1, 2


def _format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    suffix = Path(args.output).suffix.lstrip(".").lower() if args.output else ""
    return suffix if suffix in FORMATS else "txt"


def _write(path: Path, text: str) -> None:
    """Write `text` to `path` whole or not at all (a temporary file beside it, then renamed)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _command(args: argparse.Namespace) -> int:
    fmt = _format(args)
    output = Path(args.output) if args.output else None
    if output is not None and (output.is_dir() or not output.parent.is_dir()):
        what = "is a directory" if output.is_dir() else "its directory does not exist"
        print(f"export: cannot write {output}: {what}", file=sys.stderr)
        return USER_ERROR
    try:
        probe_brokers(args.kafka.client_config())
        events, not_json = read_call(args.topic, args.call_id, args.kafka)
    except (KafkaUnavailable, ReadError) as exc:
        print(f"export: {exc}", file=sys.stderr)
        return USER_ERROR
    transcript = CallTranscript()
    refused = not_json
    for event in events:
        try:
            transcript.apply(event)
        except ContractError:
            refused += 1
    if len(transcript) == 0:
        print(f"export: call {args.call_id} is not on topic {args.topic}", file=sys.stderr)
        return NOT_FOUND
    text = formatted(transcript, fmt)
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        try:
            _write(output, text)
        except OSError as exc:
            print(f"export: cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
            return USER_ERROR
    if refused:
        print(f"export: skipped {refused} message(s) of call {args.call_id} that are not transcript events",
              file=sys.stderr)
    if not transcript.completed:
        print(f"export: call {args.call_id} is not complete yet (no batch call_completed, or words still missing): "
              "wrote what the topic has", file=sys.stderr)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="write one call's whole transcript (txt, srt, vtt, json)")
    parser.add_argument("call_id", metavar="CALL_ID", help="the call id (the transcript topic's message key)")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="output format (default: from the -o file's extension, else txt)")
    parser.add_argument("-o", "--output", default=None, help="write to this file (default: stdout)")
    settings = Settings.from_env()
    parser.add_argument("--topic", default=settings.topics.transcripts,
                        help="the transcript topic (BWSM_TRANSCRIPT_TOPIC)")
    parser.set_defaults(func=_command, kafka=settings.kafka)
