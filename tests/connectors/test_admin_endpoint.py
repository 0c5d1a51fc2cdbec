"""The admin endpoint over real HTTP: /live, /ready (503 until every check passes, and after a fatal submit
error), /status, /metrics; and the `status` command reading it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from bytewax.speechmatics.connectors.admin import serve
from bytewax.speechmatics.connectors.cli import main
from bytewax.speechmatics.connectors.health import Check, Health, api_address, directory_bytes
from bytewax.speechmatics.connectors.status import CallBoard


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_probes_status_and_metrics(capsys) -> None:  # noqa: ANN001
    health, board = Health(), CallBoard()
    server = serve(0, host="127.0.0.1", process={"process_id": 1, "processes": 2}, health=health, board=board)
    port = server.server_address[1]
    try:
        assert get(port, "/live")[0] == 200
        code, body = get(port, "/ready")
        assert code == 503 and json.loads(body)["recovery"]["ok"] is False
        health.partitions_built()
        health.broker = Check(True, "answered")
        health.api = Check(True, "reachable")
        assert get(port, "/ready")[0] == 200
        health.submit_failed("401 Unauthorized")
        code, body = get(port, "/ready")
        assert code == 503 and json.loads(body)["submit"] == {"ok": False, "detail": "fatal submit error"}

        board.chunker("call-a", 4.0, 0, True)
        code, body = get(port, "/status")
        assert code == 200 and json.loads(body)["calls"][0]["call_id"] == "call-a"
        assert json.loads(body)["process_id"] == 1
        assert b"bwsm_open_calls" in get(port, "/metrics")[1]
        assert get(port, "/nope")[0] == 404

        assert main(["status", "--url", f"http://127.0.0.1:{port}"]) == 0
        out = capsys.readouterr().out
        assert "process 1" in out and "call-a: 4.0 s audio, 0 chunks cut" in out
        assert main(["status", "--json", "--url", f"http://127.0.0.1:{port}"]) == 0
        assert json.loads(capsys.readouterr().out)["processes"][0]["open_calls"] == 1
    finally:
        server.shutdown()
    assert main(["status", "--url", f"http://127.0.0.1:{port}"]) == 1
    assert "did not answer /status" in capsys.readouterr().err


def test_api_address_and_journal_size(tmp_path) -> None:  # noqa: ANN001
    assert api_address(None) == ("asr.api.speechmatics.com", 443)
    assert api_address("http://127.0.0.1:18000/v2") == ("127.0.0.1", 18000)
    (tmp_path / "journal-0.jsonl").write_bytes(b"x" * 10)
    (tmp_path / "journal-1.jsonl").write_bytes(b"x" * 5)
    assert directory_bytes(str(tmp_path)) == 15
    assert directory_bytes(str(tmp_path / "missing")) == 0
