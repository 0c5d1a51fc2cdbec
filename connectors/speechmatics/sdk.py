"""The one place that reaches into the `speechmatics-batch` SDK's private internals (tested against 1.1).

Why each is needed, and what happens without it:
- `TrackingConfig` (`speechmatics.batch._models`): the SDK does not export it, and the job's tracking reference and
  audio-hash tag are what lets a crashed POST be found again instead of paid twice. Required.
- The client's transport (`AsyncClient._transport`) and its `get`: the transcript as the API's json-v2 dict (the
  SDK's Transcript object cannot give the dict back). Required.
- The transport's lazily created session (`_session`, `_conn_config`): we create it first, with a trace hook that
  tells the limiters when a request really left, and a connection pool sized to the jobs in flight (aiohttp's
  default of 100 connections queues requests when 256 jobs are in flight). Without it: grant-time spacing.
- `_prepare_headers` of THIS client's transport (`_auth`, `_request_id`): the SDK reads its own version from the
  package metadata on every request (a scan of sys.path, about 6 % of a busy flow's CPU); our instance builds the
  same headers with the version read once. The SDK module itself is left untouched for everyone else.

`missing_internals` lists what a given SDK no longer has; tests/connectors/speechmatics/test_sdk.py fails on such a
version, and pyproject.toml pins the range these were checked on.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import aiohttp
from speechmatics.batch import AsyncClient
from speechmatics.batch._helpers import get_version
from speechmatics.batch._models import TrackingConfig

__all__ = ["TrackingConfig", "instrument", "missing_internals", "raw_get"]

log = logging.getLogger(__name__)

#: Connections beyond the jobs in flight (lookups and transcript fetches of jobs that hold no other request).
POOL_HEADROOM = 16
_TRANSPORT_ATTRIBUTES = ("_session", "_conn_config", "_auth", "_request_id", "get", "_prepare_headers")


def missing_internals(client: AsyncClient) -> list[str]:
    """The private names this module uses that `client` (a fresh one, before any request) does not have."""
    transport = getattr(client, "_transport", None)
    if transport is None:
        return ["AsyncClient._transport"]
    missing = [f"Transport.{name}" for name in _TRANSPORT_ATTRIBUTES if not hasattr(transport, name)]
    conn = getattr(transport, "_conn_config", None)
    missing += [f"ConnectionConfig.{name}" for name in ("operation_timeout", "connect_timeout")
                if conn is not None and not hasattr(conn, name)]
    if {"reference", "tags"} - set(getattr(TrackingConfig, "__dataclass_fields__", {})):
        missing.append("TrackingConfig.reference/tags")
    return missing


async def raw_get(client: AsyncClient, path: str, params: dict[str, Any]) -> dict[str, Any]:
    """GET a path of the API through the SDK's transport, the JSON body as a dict."""
    return await client._transport.get(path, params=params)  # noqa: SLF001


def instrument(client: AsyncClient, trace: aiohttp.TraceConfig, pool_size: int) -> bool:
    """Give the client's transport a session with `trace` (the limiters' send clock), a pool of `pool_size` +
    POOL_HEADROOM connections, and cached User-Agent headers. False (and nothing changed) when the SDK's internals
    are not as expected or its session exists already: the caller then spaces requests from grant time."""
    transport = getattr(client, "_transport", None)
    if missing_internals(client) or transport._session is not None:  # noqa: SLF001
        log.info("SDK transport not instrumentable: POSTs are spaced from grant time only, no share lending")
        return False

    conn = transport._conn_config  # noqa: SLF001
    timeout = aiohttp.ClientTimeout(total=conn.operation_timeout, connect=conn.connect_timeout)
    transport._session = aiohttp.ClientSession(  # noqa: SLF001
        timeout=timeout, trace_configs=[trace], connector=aiohttp.TCPConnector(limit=pool_size + POOL_HEADROOM))
    user_agent = f"speechmatics-batch-v{get_version()} python/{sys.version_info.major}.{sys.version_info.minor}"

    async def prepare_headers() -> dict[str, str]:  # the SDK's headers, its version read once
        headers = await transport._auth.get_auth_headers()  # noqa: SLF001
        headers["User-Agent"] = user_agent
        if transport._request_id:  # noqa: SLF001
            headers["X-Request-Id"] = transport._request_id  # noqa: SLF001
        return headers

    transport._prepare_headers = prepare_headers  # noqa: SLF001 - this client's transport only
    return True
