"""`bytewax-speechmatics status`: which calls each flow process holds, from the processes' admin endpoints.

Per process: open calls and jobs in flight; per call: audio seconds received, chunks cut, jobs in flight and the
age of its oldest pending job (oldest first). Ids and counts only (connectors/status.py). `--json` prints one JSON
object with every process's answer. The processes are given by `--url` (repeatable, e.g. one per pod), by default
the local process on BWSM_ADMIN_PORT.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request

from bytewax.speechmatics.flows.settings import Settings

#: Calls shown per process without --all.
DEFAULT_CALLS = 20


def fetch(url: str, timeout: float = 5.0) -> dict:
    """One process's /status (raises OSError with a readable message when it does not answer)."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/status", timeout=timeout) as answer:  # noqa: S310 - http only
            return json.loads(answer.read())
    except (urllib.error.URLError, TimeoutError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise OSError(f"{url} did not answer /status: {reason}") from None


def render(url: str, status: dict, limit: int | None) -> list[str]:
    """A header line per process, then one line per call."""
    calls = status.get("calls", [])
    lines = [f"process {status.get('process_id', '?')} ({url}): {status.get('open_calls', 0)} open calls, "
             f"{status.get('jobs_in_flight', 0)} jobs in flight"]
    shown = calls if limit is None else calls[:limit]
    for call in shown:
        age = call.get("oldest_pending_seconds")
        oldest = "-" if age is None else f"{age:.1f} s"
        lines.append(f"  {call['call_id']}: {call['audio_seconds']:.1f} s audio, {call['chunks_cut']} chunks cut, "
                     f"{call['jobs_in_flight']} jobs in flight, oldest pending {oldest}")
    if len(shown) < len(calls):
        lines.append(f"  ... {len(calls) - len(shown)} more (--all)")
    return lines


def command(args: argparse.Namespace) -> int:
    urls = args.url or [f"http://127.0.0.1:{Settings.from_env().run.admin_port}"]
    if not args.url and urls[0].endswith(":0"):
        print("status: no admin endpoint: give --url http://HOST:PORT or set BWSM_ADMIN_PORT", file=sys.stderr)
        return 2
    answers, failed = {}, 0
    for url in urls:
        try:
            answers[url] = fetch(url)
        except OSError as exc:
            print(f"status: {exc}", file=sys.stderr)
            failed += 1
    if args.json:
        print(json.dumps({"processes": [{"url": url, **status} for url, status in answers.items()]}))
    else:
        for url, status in answers.items():
            print("\n".join(render(url, status, None if args.all else DEFAULT_CALLS)))
    return 1 if failed else 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("status", help="open calls and jobs in flight of running flow processes")
    parser.add_argument("--url", action="append", help="a flow process's admin endpoint, http://HOST:PORT "
                                                       "(repeat per process; default: 127.0.0.1:BWSM_ADMIN_PORT)")
    parser.add_argument("--json", action="store_true", help="one JSON object with every process's answer")
    parser.add_argument("--all", action="store_true", help=f"every call (default: the {DEFAULT_CALLS} oldest)")
    parser.set_defaults(func=command)
