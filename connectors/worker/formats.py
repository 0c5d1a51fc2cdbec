"""Transcript documents the local worker serves: json-v2, txt and srt, all rendered from json-v2 results."""

from __future__ import annotations

from typing import Any

from bytewax.speechmatics.connectors.worker.jobs import Job, iso_now

JSON_V2_FORMAT = "2.9"
UNKNOWN_SPEAKER = "UU"
#: An srt cue ends at a sentence end, after this many seconds, or before a pause this long.
SRT_MAX_CUE_SECONDS = 6.0
SRT_MAX_PAUSE_SECONDS = 1.0


def json_v2(job: Job, results: list[dict[str, Any]], speakers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The json-v2 document of a finished job (tracking echoed exactly as the client sent it)."""
    job_info: dict[str, Any] = {
        "id": job.id,
        "created_at": job.created_at,
        "data_name": job.data_name,
        "duration": round(job.duration),
    }
    if "tracking" in job.config:
        job_info["tracking"] = job.config["tracking"]
    doc: dict[str, Any] = {
        "format": JSON_V2_FORMAT,
        "job": job_info,
        "metadata": {
            "created_at": iso_now(),
            "type": job.config.get("type", "transcription"),
            "transcription_config": job.config.get("transcription_config", {}),
            "language_pack_info": {"word_delimiter": " ", "writing_direction": "left-to-right"},
        },
        "results": results,
    }
    if speakers is not None:
        doc["speakers"] = speakers
    return doc


def _content(result: dict[str, Any]) -> tuple[str, str]:
    alt = (result.get("alternatives") or [{}])[0]
    return str(alt.get("content", "")), str(alt.get("speaker") or UNKNOWN_SPEAKER)


def _join(results: list[dict[str, Any]]) -> str:
    """Words separated by spaces, punctuation glued to the word it attaches to."""
    text = ""
    for result in results:
        content, _ = _content(result)
        if not content:
            continue
        glue = result.get("type") == "punctuation" and result.get("attaches_to", "previous") in ("previous", "both")
        text += content if glue or not text else " " + content
    return text


def to_txt(doc: dict[str, Any]) -> str:
    """Plain text; a `SPEAKER S1:` line opens each speaker turn when speakers are labelled."""
    turns: list[tuple[str, list[dict[str, Any]]]] = []
    for result in doc.get("results", []):
        _, speaker = _content(result)
        if result.get("type") == "punctuation" and turns:
            speaker = turns[-1][0]
        if not turns or turns[-1][0] != speaker:
            turns.append((speaker, []))
        turns[-1][1].append(result)
    lines = []
    for speaker, items in turns:
        text = _join(items)
        lines.append(text if speaker == UNKNOWN_SPEAKER else f"SPEAKER {speaker}: {text}")
    return "\n".join(lines) + ("\n" if lines else "")


def _srt_time(seconds: float) -> str:
    millis = round(max(0.0, seconds) * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{millis:03d}"


def to_srt(doc: dict[str, Any]) -> str:
    """SubRip cues: sentences, split at long pauses or after SRT_MAX_CUE_SECONDS."""
    cues: list[list[dict[str, Any]]] = []
    for result in doc.get("results", []):
        current = cues[-1] if cues else None
        is_word = result.get("type") != "punctuation"
        new_cue = current is None or (
            is_word
            and (
                current[-1].get("is_eos")
                or result["start_time"] - current[-1]["end_time"] > SRT_MAX_PAUSE_SECONDS
                or result["end_time"] - current[0]["start_time"] > SRT_MAX_CUE_SECONDS
            )
        )
        if new_cue:
            cues.append([result])
        else:
            current.append(result)
    blocks = []
    for n, cue in enumerate(cues, 1):
        start, end = cue[0]["start_time"], max(r["end_time"] for r in cue)
        blocks.append(f"{n}\n{_srt_time(start)} --> {_srt_time(end)}\n{_join(cue)}\n")
    return "\n".join(blocks)
