"""The endpoint a flow submits to, settled when the flow is built, before Bytewax runs it.

A misconfiguration found inside a running dataflow surfaces as a Rust panic and its backtrace, with the real error
at the end; found while the flow is built, it is one exception at the line that built it. So `transcribe_chunks`
settles the endpoint first:
- a key: the one given, else the SDK's own SPEECHMATICS_API_KEY; a self-hosted endpoint (any host but the
  Speechmatics SaaS: the local worker, an on-prem container) needs none, and the SDK, which insists on one, is given
  a placeholder; the SaaS without a key is a SettingsError saying both ways out;
- the key and the URL: one `GET /jobs?limit=1` through the SDK's own client (the SaaS and an on-prem worker both
  list jobs there); a refusal (401/403) or a 404 (the URL names no batch API) is a SettingsError. Any other answer,
  or none (the API or the network down while the flow is built), leaves the running flow to find out as it always
  does (retries, then FatalSubmitError on a refusal or on repeated 404s);
- what the engine behind a self-hosted endpoint can do: read once from its feature discovery document
  (`GET /v1/discovery/features`); a local worker's declares its engine (capabilities.py), anything else's (or none)
  means the real API's, which honours every option.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

from speechmatics.batch import Client, ConnectionConfig, StaticKeyAuth

from bytewax.speechmatics.connectors.speechmatics.capabilities import DISCOVERY_PATH, EngineCapabilities
from bytewax.speechmatics.connectors.speechmatics.retry import NOT_A_BATCH_API, ErrorClass, classify
from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings
from bytewax.speechmatics.schemas.errors import SettingsError

log = logging.getLogger(__name__)

SAAS_DOMAIN = "speechmatics.com"
#: The key the SDK is given for a self-hosted endpoint without one (the SDK requires a key; such endpoints ignore it).
PLACEHOLDER_KEY = "self-hosted-no-key"
NO_KEY = ("no Speechmatics API key: set SPEECHMATICS_API_KEY, or set SPEECHMATICS_BATCH_URL to a self-hosted worker "
          "(`bytewax-speechmatics worker`, an on-prem container), which needs no key")
DISCOVERY_TIMEOUT = 5.0
KEY_CHECK_TIMEOUT = 10.0


def is_self_hosted(url: str | None) -> bool:
    """Whether `url` names an endpoint other than the Speechmatics SaaS (None: the SDK's default, the SaaS)."""
    host = urlsplit(url).hostname if url else None
    return bool(host) and host != SAAS_DOMAIN and not str(host).endswith("." + SAAS_DOMAIN)


def with_key(settings: SubmitSettings) -> SubmitSettings:
    """`settings` with a key the SDK accepts; SettingsError when the SaaS would be called without one."""
    if settings.api_key:
        return settings
    try:
        StaticKeyAuth(None)  # the SDK's own fallback (SPEECHMATICS_API_KEY): it will find the key itself
        return settings
    except ValueError:
        if is_self_hosted(settings.batch_url):
            return replace(settings, api_key=PLACEHOLDER_KEY)
        raise SettingsError(NO_KEY) from None


def discover(batch_url: str, timeout: float = DISCOVERY_TIMEOUT) -> EngineCapabilities | None:
    """The local engine behind `batch_url` by its discovery document; None for any other endpoint or no answer."""
    parts = urlsplit(batch_url)
    url = urlunsplit((parts.scheme, parts.netloc, DISCOVERY_PATH, "", ""))
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http(s) checked by settings
            doc = json.load(response)
    except (OSError, ValueError) as exc:
        log.info("no feature discovery at %s (%s): the engine is taken to honour every option",
                 parts.netloc, type(exc).__name__)
        return None
    caps = EngineCapabilities.from_discovery(doc) if isinstance(doc, dict) else None
    if caps is not None:
        log.info("endpoint %s runs the local %s engine", parts.netloc, caps.engine)
    return caps


def check_endpoint(settings: SubmitSettings, timeout: float = KEY_CHECK_TIMEOUT) -> None:
    """SettingsError when the endpoint refuses the key (401/403) or has no batch API at that URL (404); nothing
    for any other answer or none at all."""
    where = urlsplit(settings.batch_url).netloc if settings.batch_url else "the Speechmatics batch API"
    try:
        with Client(api_key=settings.api_key, url=settings.batch_url,
                    conn_config=ConnectionConfig(connect_timeout=timeout, operation_timeout=timeout)) as client:
            client.list_jobs(limit=1)
    except Exception as exc:  # noqa: BLE001 - classified: only a refusal or a wrong URL is settled here
        classified = classify(exc, posting=False)
        if classified.kind is ErrorClass.FATAL and settings.api_key == PLACEHOLDER_KEY:
            raise SettingsError(f"{where} requires an API key ({classified.description.split(':')[0]}): set "
                                "SPEECHMATICS_API_KEY to the key it was started with") from None
        if classified.kind is ErrorClass.FATAL:
            raise SettingsError(f"{where} refused the API key: {classified.description}") from None
        if classified.status == 404:
            raise SettingsError(f"GET /jobs at {where} answered 404: {NOT_A_BATCH_API}") from None
        log.info("endpoint check at %s got no verdict (%s): the running flow will retry", where,
                 classified.description)


def settle(settings: SubmitSettings) -> SubmitSettings:
    """The settings a flow submits with: a key where one is needed (and not refused), and the engine's capabilities
    when local."""
    settings = with_key(settings)
    check_endpoint(settings)
    if settings.capabilities is None and is_self_hosted(settings.batch_url):
        assert settings.batch_url is not None
        caps = discover(settings.batch_url)
        if caps is not None:
            settings = replace(settings, capabilities=caps)
    return settings
