"""Job notifications of the local worker: `notification_config` callbacks, at least once, like the SaaS API.

Each configured URL gets `<method> url?id=<job>&status=success|error` with the configured `auth_headers`
("Name: value" strings). With one `contents` item the body is that item; with several, a multipart form
with one part per item; with none, an empty body. A delivery is retried with backoff until the receiver
answers 2xx or the deadline passes (the worker's `--webhook-deadline`, default 60 s; the caller passes it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

#: (body, content type) for a contents item such as "transcript.json-v2"; None when not available.
Renderer = Callable[[str], "tuple[bytes, str] | None"]


#: Seconds a notification is retried for, like the SaaS API's patience with a receiver that is down.
DEFAULT_WEBHOOK_DEADLINE = 60.0


def parse_auth_headers(lines: list[str] | None) -> dict[str, str]:
    """["Authorization: Bearer x"] -> {"Authorization": "Bearer x"}; lines without a colon are skipped."""
    out: dict[str, str] = {}
    for line in lines or []:
        name, sep, value = str(line).partition(":")
        if sep and name.strip():
            out[name.strip()] = value.strip()
    return out


def _body(contents: list[str], render: Renderer) -> tuple[Any, dict[str, str]]:
    parts = [(item, render(item)) for item in contents]
    parts = [(item, part) for item, part in parts if part is not None]
    if not parts:
        return None, {}
    if len(parts) == 1:
        payload, ctype = parts[0][1]
        return payload, {"Content-Type": ctype}
    form = aiohttp.FormData()
    for item, (payload, ctype) in parts:
        form.add_field(item, payload, content_type=ctype, filename=item)
    return form, {}


async def deliver(
    session: aiohttp.ClientSession,
    notification: dict[str, Any],
    job_id: str,
    status: str,
    render: Renderer,
    delay: Callable[[], float],
    record: Callable[[str, str], None],
    deadline: float = DEFAULT_WEBHOOK_DEADLINE,
) -> bool:
    """Deliver one notification until a 2xx or the deadline; True when the receiver accepted it.

    `delay()` gives the injected slowness before each attempt; `record(url, outcome)` counts attempts.
    """
    url = notification.get("url")
    if not url:
        return False
    method = str(notification.get("method") or "post").upper()
    headers = parse_auth_headers(notification.get("auth_headers"))
    contents = [str(c) for c in notification.get("contents") or []]
    give_up = time.monotonic() + deadline
    backoff = 0.25
    attempt = 0
    while True:
        attempt += 1
        pause = delay()
        if pause > 0:
            await asyncio.sleep(pause)
        body, extra = _body(contents, render)
        try:
            async with session.request(
                method, url, params={"id": job_id, "status": status}, data=body, headers={**headers, **extra}
            ) as resp:
                await resp.read()
                outcome = str(resp.status)
                if 200 <= resp.status < 300:
                    record(url, outcome)
                    log.info("webhook delivered job=%s attempts=%d", job_id, attempt)
                    return True
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            outcome = type(exc).__name__
        record(url, outcome)
        if time.monotonic() + backoff > give_up:
            log.warning("webhook abandoned job=%s attempts=%d last=%s", job_id, attempt, outcome)
            return False
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 5.0)
