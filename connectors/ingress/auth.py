"""Who may open a session, checked on the websocket upgrade (before any audio is read).

- `/twilio` with a Twilio auth token: the request signature Twilio adds to the stream request (`X-Twilio-Signature`,
  HMAC of the URL it requested; checked by the `twilio` package's RequestValidator: `pip install
  bytewax-speechmatics[ingress]`). Twilio cannot add headers, so this is its only credential. Behind a proxy that
  rewrites the URL, `public_url` says what Twilio requested (scheme and host; the path and query are the request's).
- `/audiohook` with an API key: Genesys sends it in `X-API-KEY`. With the integration's client secret as well, the
  request's HTTP message signature must be good too (`signatures.py`: covers the path, host, session ids and key,
  lives seconds, each nonce once), so a key seen once cannot be replayed.
- Otherwise, when a token is set: `Authorization: Bearer <token>` (or `?token=<token>` for platforms that cannot set
  headers, such as Telnyx).
- With none of these set the endpoint is open (the server says so at start).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web

from bytewax.speechmatics.connectors.ingress import signatures


@dataclass(frozen=True)
class AuthSettings:
    #: BWSM_INGRESS_TOKEN: the bearer token of every endpoint without its own credential.
    token: str | None = field(default=None, repr=False)
    #: TWILIO_AUTH_TOKEN: verify Twilio's request signature on /twilio.
    twilio_auth_token: str | None = field(default=None, repr=False)
    #: BWSM_AUDIOHOOK_API_KEY: the X-API-KEY Genesys sends on /audiohook.
    audiohook_api_key: str | None = field(default=None, repr=False)
    #: BWSM_AUDIOHOOK_CLIENT_SECRET (base64-decoded): verify the HTTP message signature Genesys adds on /audiohook.
    audiohook_client_secret: bytes | None = field(default=None, repr=False)
    #: BWSM_INGRESS_PUBLIC_URL: scheme://host[:port] as the platform sees this server (for the signatures).
    public_url: str | None = None
    #: The nonces of the AudioHook signatures this process accepted (a second use is a replay).
    nonces: signatures.NonceCache = field(default_factory=signatures.NonceCache, repr=False, compare=False)

    def open_endpoints(self) -> list[str]:
        """The endpoints anyone may use (for the warning at start)."""
        out = []
        if not (self.twilio_auth_token or self.token):
            out.append("/twilio")
        if not (self.audiohook_api_key or self.token):
            out.append("/audiohook")
        return out


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _bearer(request: web.Request, token: str) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return None if _same(header[7:].strip(), token) else "bad bearer token"
    if "token" in request.query:
        return None if _same(request.query["token"], token) else "bad token"
    return "no bearer token"


def _twilio(request: web.Request, auth: AuthSettings) -> str | None:
    from twilio.request_validator import RequestValidator  # the [ingress] extra; checked at start

    signature = request.headers.get("X-Twilio-Signature")
    if not signature:
        return "no X-Twilio-Signature"
    if auth.public_url:
        url = auth.public_url.rstrip("/") + request.path_qs
    else:
        scheme = "wss" if request.secure else "ws"
        url = f"{scheme}://{request.host}{request.path_qs}"
    ok = RequestValidator(auth.twilio_auth_token).validate(url, {}, signature)
    return None if ok else "bad X-Twilio-Signature"


def _audiohook_signature(request: web.Request, auth: AuthSettings) -> str | None:
    assert auth.audiohook_api_key and auth.audiohook_client_secret
    if auth.public_url:
        public = urlsplit(auth.public_url)
        host = signatures.authority(public.netloc, public.scheme)
    else:
        host = signatures.authority(request.host, "https" if request.secure else "http")
    try:
        signatures.verify(lambda name: request.headers.getall(name, []), request.raw_path, host,
                          api_key=auth.audiohook_api_key, secret=auth.audiohook_client_secret, nonces=auth.nonces)
    except signatures.Refused as exc:
        return str(exc)
    return None


def refusal(protocol: str, request: web.Request, auth: AuthSettings) -> str | None:
    """Why this upgrade request is refused, or None when it may go on."""
    if protocol == "twilio" and auth.twilio_auth_token:
        return _twilio(request, auth)
    if protocol == "audiohook" and auth.audiohook_api_key:
        if not _same(request.headers.get("X-API-KEY"), auth.audiohook_api_key):
            return "bad X-API-KEY"
        return _audiohook_signature(request, auth) if auth.audiohook_client_secret else None
    if auth.token:
        return _bearer(request, auth.token)
    return None


def twilio_validator_available() -> bool:
    try:
        import twilio.request_validator  # noqa: F401
    except ImportError:
        return False
    return True
