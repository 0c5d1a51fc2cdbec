"""The SDK's private internals we use are where sdk.py expects them, and nothing of the SDK is patched for others."""

from __future__ import annotations

import asyncio
import importlib
from types import SimpleNamespace

import pytest
from speechmatics.batch import AsyncClient

from bytewax.speechmatics.connectors.speechmatics import sdk
from bytewax.speechmatics.connectors.speechmatics.journal import JobJournal
from bytewax.speechmatics.connectors.speechmatics.service import SubmitService
from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings
from bytewax.speechmatics.connectors.speechmatics.throttle import ClusterPlace


def client() -> AsyncClient:
    return AsyncClient(api_key="not-a-key", url="http://127.0.0.1:9/v2")


def test_the_installed_sdk_has_every_internal_we_use() -> None:
    assert sdk.missing_internals(client()) == []


def test_a_changed_sdk_is_named() -> None:
    changed = SimpleNamespace(_transport=SimpleNamespace(_session=None, get=None))  # renamed internals
    assert "Transport._conn_config" in sdk.missing_internals(changed)  # type: ignore[arg-type]
    assert sdk.missing_internals(SimpleNamespace()) == ["AsyncClient._transport"]  # type: ignore[arg-type]


def test_the_service_patches_nothing_of_the_sdk_and_sizes_its_pool_to_the_jobs_in_flight(tmp_path) -> None:  # noqa: ANN001
    transport_module = importlib.import_module("speechmatics.batch._transport")
    version_before = transport_module.get_version
    settings = SubmitSettings(api_key="not-a-key", batch_url="http://127.0.0.1:9/v2", max_in_flight=256)
    service = SubmitService(settings, place=ClusterPlace(1, 0), journal=JobJournal(tmp_path)).start()
    try:
        assert transport_module.get_version is version_before  # the module is everyone's: untouched
        transport = service._client._transport  # noqa: SLF001

        async def look() -> tuple[int, str]:
            headers = await transport._prepare_headers()  # noqa: SLF001
            return transport._session.connector.limit, headers["User-Agent"]  # noqa: SLF001

        limit, agent = asyncio.run_coroutine_threadsafe(look(), service._loop).result(10)  # noqa: SLF001
        assert limit >= 256  # aiohttp's default is 100: 256 jobs in flight would queue for connections
        assert agent.startswith("speechmatics-batch-v1.")
        fresh = client()._transport  # noqa: SLF001 - another user's client keeps the SDK's own behaviour
        assert "_prepare_headers" not in vars(fresh)
    finally:
        service.close()


@pytest.mark.parametrize("name", ["TrackingConfig"])
def test_the_private_models_we_import_are_dataclasses_with_our_fields(name: str) -> None:
    fields = getattr(sdk, name).__dataclass_fields__
    assert {"reference", "tags"} <= set(fields)
