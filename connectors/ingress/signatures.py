"""Genesys AudioHook request signatures: HTTP Message Signatures (RFC 9421) made with HMAC-SHA256, checked on the
websocket upgrade. An `X-API-KEY` alone can be replayed by anyone who saw one request; the signature also needs the
integration's client secret, covers this request's path, host and session ids, and lives seconds.

What Genesys sends (the AudioHook protocol's connection section, and its reference implementation's client and
server): `Signature-Input: sig1=("@request-target" "@authority" "audiohook-organization-id" "audiohook-session-id"
"audiohook-correlation-id" "x-api-key");keyid="<API key>";nonce="<random>";alg="hmac-sha256";created=<unix
s>;expires=<unix s>` and `Signature: sig1=:<base64 HMAC>:`. The HMAC key is the client secret, which the
integration shows base64-encoded: the key is the decoded bytes.

What is checked, and why each rule:
- Both fields parse as RFC 8941 dictionaries; the first `Signature-Input` member is the signature, its label names
  its value in `Signature`. Only what AudioHook uses is accepted: plain component names (no `;sf`/`;key` component
  parameters), the parameters `keyid nonce alg created expires`, algorithm `hmac-sha256`.
- The six components above are all covered (a signature over less would let the rest be changed), each once.
- `keyid` is the request's `X-API-KEY` (one secret per key), `nonce` is present and at least 22 characters (the
  reference server's rule: Genesys sends 18 random bytes in base64), `created` is present.
- Time: `created` at most `skew` seconds ahead of this clock and at most `max_age + skew` behind it (the reference
  server allows 10 s of age and 3 s of clock skew); `expires`, when given, not more than `skew` in the past.
- The signature base is rebuilt from this request (RFC 9421 section 2.5): one line per covered component,
  `"<name>": <value>`, then `"@signature-params": <the Signature-Input member re-serialised>`, joined by LF.
  `@request-target` is the path and query of the request line; `@authority` the Host (lower case, the scheme's
  default port dropped), or the host of BWSM_INGRESS_PUBLIC_URL behind a proxy that rewrites it; a header's value
  is its lines, trimmed, joined with ", ".
- The HMAC is compared in constant time (`hmac.compare_digest`).
- A nonce seen within the signature's lifetime is a replay (`NonceCache`, bounded in entries and time; per
  process, so with several ingress processes a replay that reaches another process within ~13 s is not seen).

The structured-field parser below handles only the grammar AudioHook's two fields use (dictionary members that are
inner lists of strings or byte sequences, with string/integer/token/boolean parameters); everything else is
refused. The signature covers the re-serialised form, so a lenient parse could not make a forged request pass.
Refusal reasons are a fixed set of short strings (they become a metric label), and never hold a header's value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

#: The components Genesys covers, in the order it sends them.
REQUIRED = ("@request-target", "@authority", "audiohook-organization-id", "audiohook-session-id",
            "audiohook-correlation-id", "x-api-key")
DERIVED = frozenset(("@request-target", "@authority"))
PARAMETERS = {"keyid": str, "nonce": str, "alg": str, "created": int, "expires": int}
ALGORITHM = "hmac-sha256"
MAX_AGE = 10.0
SKEW = 3.0
MIN_NONCE = 22


class Refused(Exception):
    """Why a signature is not accepted: a short fixed reason (no header values, no secrets)."""


# -- RFC 8941, the part AudioHook's fields use --------------------------------------------------------------------

_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_INTEGER = re.compile(r"-?[0-9]{1,15}")
_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
_BYTES = re.compile(r":([A-Za-z0-9+/=]*):")


@dataclass(frozen=True)
class Token:
    value: str


@dataclass
class _Cursor:
    text: str
    at: int = 0

    def peek(self) -> str:
        return self.text[self.at:self.at + 1]

    def take(self, pattern: re.Pattern) -> re.Match:
        match = pattern.match(self.text, self.at)
        if match is None:
            raise Refused("malformed")
        self.at = match.end()
        return match

    def skip(self, chars: str) -> None:
        while self.peek() and self.peek() in chars:
            self.at += 1


def _bare(cur: _Cursor) -> str | int | bool | bytes | Token:
    ch = cur.peek()
    if ch == '"':
        return re.sub(r"\\(.)", r"\1", cur.take(_STRING).group(1))
    if ch == ":":
        try:
            return base64.b64decode(cur.take(_BYTES).group(1), validate=True)
        except binascii.Error:
            raise Refused("malformed") from None
    if ch == "?":
        return cur.take(re.compile(r"\?[01]")).group(0) == "?1"
    if ch == "-" or ch.isdigit():
        return int(cur.take(_INTEGER).group(0))
    return Token(cur.take(_TOKEN).group(0))


def _params(cur: _Cursor) -> dict:
    out: dict = {}
    while cur.peek() == ";":
        cur.at += 1
        cur.skip(" ")
        key = cur.take(_KEY).group(0)
        if cur.peek() == "=":
            cur.at += 1
            out[key] = _bare(cur)
        else:
            out[key] = True
    return out


def _member(cur: _Cursor) -> tuple:
    if cur.peek() == "(":
        cur.at += 1
        items = []
        while True:
            cur.skip(" ")
            if cur.peek() == ")":
                cur.at += 1
                break
            items.append((_bare(cur), _params(cur)))
            if cur.peek() not in (" ", ")"):
                raise Refused("malformed")
        return items, _params(cur)
    return _bare(cur), _params(cur)


def parse_dictionary(text: str) -> dict[str, tuple]:
    """An RFC 8941 dictionary: key -> (bare item or [(item, params), ...], params). Raises Refused."""
    cur, out = _Cursor(text.strip(" \t")), {}
    while cur.peek():
        key = cur.take(_KEY).group(0)
        if cur.peek() == "=":
            cur.at += 1
            out[key] = _member(cur)
        else:
            out[key] = (True, _params(cur))
        cur.skip(" \t")
        if not cur.peek():
            break
        if cur.peek() != ",":
            raise Refused("malformed")
        cur.at += 1
        cur.skip(" \t")
        if not cur.peek():
            raise Refused("malformed")  # a trailing comma
    return out


def _serialize_bare(value: str | int | bool | bytes | Token) -> str:
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return ":" + base64.b64encode(value).decode() + ":"
    if isinstance(value, Token):
        return value.value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _serialize_params(params: dict) -> str:
    return "".join(f";{k}" if v is True else f";{k}={_serialize_bare(v)}" for k, v in params.items())


def serialize_inner_list(items: Iterable[tuple], params: dict) -> str:
    """`("a" "b");k=v`: how `@signature-params` is written into the signature base (RFC 8941 section 4.1.1.1)."""
    return "(" + " ".join(_serialize_bare(v) + _serialize_params(p) for v, p in items) + ")" + _serialize_params(
        params)


# -- the request's side -------------------------------------------------------------------------------------------

def decode_secret(value: str) -> bytes:
    """The HMAC key from BWSM_AUDIOHOOK_CLIENT_SECRET: Genesys shows the client secret base64-encoded."""
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except binascii.Error:
        raise ValueError("is not base64 (paste the client secret as Genesys shows it)") from None
    if not key:
        raise ValueError("is empty")
    return key


def authority(host: str, scheme: str) -> str:
    """`@authority`: the host in lower case without the scheme's default port (RFC 9421 section 2.2.3)."""
    host = host.strip().lower()
    default = ":443" if scheme in ("https", "wss") else ":80"
    return host[:-len(default)] if host.endswith(default) else host


def field_value(lines: list[str]) -> str:
    """An HTTP field's component value: each line trimmed, obsolete folds as one space, joined with ", "."""
    return ", ".join(re.sub(r"[ \t]*\r\n[ \t]+", " ", line).strip(" \t") for line in lines)


@dataclass
class NonceCache:
    """Nonces of accepted signatures, each kept `ttl` seconds (longer than a signature can be accepted), at most
    `size` of them (the oldest go first: a flood of valid connections can push a nonce out early, never grow
    memory)."""

    ttl: float = MAX_AGE + 2 * SKEW
    size: int = 100_000
    _seen: OrderedDict[str, float] = field(default_factory=OrderedDict, repr=False)

    def first_use(self, nonce: str, now: float) -> bool:
        while self._seen and (next(iter(self._seen.values())) < now - self.ttl or len(self._seen) >= self.size):
            self._seen.popitem(last=False)
        if nonce in self._seen:
            return False
        self._seen[nonce] = now
        return True


def verify(header: Callable[[str], list[str]], request_target: str, host: str, *, api_key: str, secret: bytes,
           now: float | None = None, max_age: float = MAX_AGE, skew: float = SKEW,
           nonces: NonceCache | None = None) -> None:
    """Check the request's AudioHook signature; raise Refused with the reason when it is not good.

    Args:
        header: the values of a request header by (lower-case) name, one per line it came in ([] when absent).
        request_target: `@request-target`, the path and query of the request line.
        host: `@authority`, already normalised (see `authority`).
        api_key: BWSM_AUDIOHOOK_API_KEY, which must be the signature's keyid.
        secret: the decoded client secret.
        now: Unix seconds (the clock to check `created`/`expires` against); `nonces`: the replay memory.
    """
    inputs, values = header("signature-input"), header("signature")
    if not inputs and not values:
        raise Refused("no signature")
    if not inputs or not values:
        raise Refused("incomplete signature")
    try:
        signature_input, signature = parse_dictionary(", ".join(inputs)), parse_dictionary(", ".join(values))
    except Refused:
        raise Refused("malformed signature") from None
    if not signature_input:
        raise Refused("malformed signature")
    label, (components, params) = next(iter(signature_input.items()))
    signed = signature.get(label, (None, {}))[0]
    if not isinstance(components, list) or not isinstance(signed, bytes):
        raise Refused("malformed signature")
    names = [name for name, _ in components]
    if not all(isinstance(name, str) for name in names) or any(p for _, p in components):
        raise Refused("unsupported signature component")
    if len(set(names)) != len(names):
        raise Refused("repeated signature component")
    if any(name.startswith("@") and name not in DERIVED for name in names) or any(
            name != name.lower() for name in names):
        raise Refused("unsupported signature component")
    for key, value in params.items():
        kind = PARAMETERS.get(key)
        if kind is None or type(value) is not kind:
            raise Refused("unsupported signature parameter")
    if params.get("alg", ALGORITHM) != ALGORITHM:
        raise Refused("unsupported signature algorithm")
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        raise Refused(f"signature does not cover {missing[0]}")
    if not hmac.compare_digest(str(params.get("keyid", "")).encode(), api_key.encode()):
        raise Refused("signature keyid is not the API key")
    nonce = params.get("nonce")
    if nonce is None or len(nonce) < MIN_NONCE:
        raise Refused("no signature nonce")
    created, expires = params.get("created"), params.get("expires")
    now = time.time() if now is None else now
    if created is None:
        raise Refused("no signature created time")
    if created > now + skew:
        raise Refused("signature created in the future")
    if created < now - max_age - skew:
        raise Refused("signature too old")
    if expires is not None and expires < now - skew:
        raise Refused("signature expired")
    lines = []
    for name in names:
        if name == "@request-target":
            value = request_target
        elif name == "@authority":
            value = host
        else:
            found = header(name)
            if not found:
                raise Refused("covered header missing")
            value = field_value(found)
        if "\n" in value or "\r" in value:
            raise Refused("malformed signature")
        lines.append(f'"{name}": {value}')
    lines.append('"@signature-params": ' + serialize_inner_list(components, params))
    expected = hmac.new(secret, "\n".join(lines).encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signed):
        raise Refused("bad signature")
    if nonces is not None and not nonces.first_use(nonce, now):
        raise Refused("replayed signature nonce")
