"""AudioHook request signatures (RFC 9421, HMAC-SHA256): Genesys's published example is accepted; a request signed
here by a signer written from the spec (not from the module) is accepted, and any change to what it covers, its key
id, its times beyond the skew, or its signature bytes is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ingress_harness import audiohook_signed as sign
from multidict import CIMultiDict

from bytewax.speechmatics.connectors.ingress.signatures import (
    MAX_AGE,
    SKEW,
    NonceCache,
    Refused,
    authority,
    decode_secret,
    parse_dictionary,
    verify,
)

# The AudioHook protocol documentation's example request (also the reference implementation's test vector):
# wss://audiohook.example.com/api/v1/voicebiometrics/ws, API key and client secret as below.
EXAMPLE_KEY = "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh"
EXAMPLE_SECRET = "TXlTdXBlclNlY3JldEtleVRlbGxOby0xITJAMyM0JDU="
EXAMPLE = {
    "Host": "audiohook.example.com",
    "Audiohook-Organization-Id": "d7934305-0972-4844-938e-9060eef73d05",
    "Audiohook-Correlation-Id": "e160e428-53e2-487c-977d-96989bf5c99d",
    "Audiohook-Session-Id": "30b0e395-84d3-4570-ac13-9a62d8f514c0",
    "X-API-KEY": EXAMPLE_KEY,
    "Signature": "sig1=:NZBwyBHRRyRoeLqy1IzOa9VYBuI8TgMFt2GRDkDuJh4=:",
    "Signature-Input": 'sig1=("@request-target" "@authority" "audiohook-organization-id" "audiohook-session-id" '
                       '"audiohook-correlation-id" "x-api-key");keyid="SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh";'
                       'nonce="VGhpc0lzQVVuaXF1ZU5vbmNl";alg="hmac-sha256";created=1641013200;expires=3282026430',
}
EXAMPLE_PATH = "/api/v1/voicebiometrics/ws"
EXAMPLE_CREATED = 1641013200


def check(headers: dict, path: str, host: str, *, api_key: str, secret: bytes, now: float,
          nonces: NonceCache | None = None) -> str | None:
    """verify() as the ingress calls it, over a real case-insensitive multi-dict: the reason, or None."""
    multi = CIMultiDict(headers)
    try:
        verify(lambda name: multi.getall(name, []), path, host, api_key=api_key, secret=secret, now=now,
               nonces=nonces)
    except Refused as exc:
        return str(exc)
    return None


def test_the_protocol_documentation_example_is_accepted() -> None:
    secret = decode_secret(EXAMPLE_SECRET)
    assert check(EXAMPLE, EXAMPLE_PATH, "audiohook.example.com", api_key=EXAMPLE_KEY, secret=secret,
                 now=EXAMPLE_CREATED + 1) is None
    assert check(EXAMPLE, EXAMPLE_PATH + "?x=1", "audiohook.example.com", api_key=EXAMPLE_KEY, secret=secret,
                 now=EXAMPLE_CREATED + 1) == "bad signature"
    assert check(EXAMPLE, EXAMPLE_PATH, "audiohook.example.com", api_key=EXAMPLE_KEY, secret=secret,
                 now=EXAMPLE_CREATED + MAX_AGE + SKEW + 1) == "signature too old"
    # the test's own signer makes the documented signature from the documented request
    ours = sign(path=EXAMPLE_PATH, host="audiohook.example.com", org=EXAMPLE["Audiohook-Organization-Id"],
                session=EXAMPLE["Audiohook-Session-Id"], correlation=EXAMPLE["Audiohook-Correlation-Id"],
                key=EXAMPLE_KEY, secret=secret, created=EXAMPLE_CREATED, expires=3282026430,
                nonce="VGhpc0lzQVVuaXF1ZU5vbmNl")
    assert (ours["Signature"], ours["Signature-Input"]) == (EXAMPLE["Signature"], EXAMPLE["Signature-Input"])


# -- signed by an independent signer (ingress_harness.audiohook_signed, written from the spec) ----------------------

_ID = st.uuids().map(str)
_KEY = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=8, max_size=40)
_PATH = st.lists(st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=12), min_size=1,
                 max_size=4).map(lambda parts: "/" + "/".join(parts))
NOW = 1_800_000_000


@st.composite
def requests(draw: st.DrawFn) -> dict:
    return {"path": draw(_PATH), "host": draw(st.sampled_from(["audiohook.example.com", "127.0.0.1:8080"])),
            "org": draw(_ID), "session": draw(_ID), "correlation": draw(_ID), "key": draw(_KEY),
            "secret": draw(st.binary(min_size=16, max_size=64)),
            "created": NOW - draw(st.integers(0, int(MAX_AGE))), "expires": NOW + 30,
            "nonce": base64.b64encode(draw(st.binary(min_size=18, max_size=18))).decode()}


def changed(value: str) -> str:
    return value[:-1] + ("x" if value[-1] != "x" else "y")


@settings(max_examples=300, deadline=None)
@given(requests(), st.sampled_from(["none", "path", "host", "org", "session", "correlation", "key header", "keyid",
                                    "keyid resigned", "created future", "created old", "expired", "signature",
                                    "secret"]))
def test_a_correct_signature_passes_and_any_change_is_refused(req: dict, change: str) -> None:
    path, host, key, secret = req["path"], req["host"], req["key"], req["secret"]
    headers = sign(**req)
    if change in ("path", "host"):
        path, host = (changed(path), host) if change == "path" else (path, changed(host))
    elif change in ("org", "session", "correlation", "key header"):
        name = {"org": "Audiohook-Organization-Id", "session": "Audiohook-Session-Id",
                "correlation": "Audiohook-Correlation-Id", "key header": "X-API-KEY"}[change]
        headers[name] = changed(headers[name])
    elif change == "keyid":  # the key id in Signature-Input edited after signing
        headers["Signature-Input"] = headers["Signature-Input"].replace(f'keyid="{key}"', f'keyid="{changed(key)}"')
    elif change == "keyid resigned":  # signed with our secret, but for another key id
        headers = sign(**req, keyid=changed(key))
    elif change == "created future":
        headers = sign(**{**req, "created": NOW + int(SKEW) + 1})
    elif change == "created old":
        headers = sign(**{**req, "created": NOW - int(MAX_AGE + SKEW) - 1})
    elif change == "expired":
        headers = sign(**{**req, "expires": NOW - int(SKEW) - 1})
    elif change == "signature":
        mac = bytearray(base64.b64decode(headers["Signature"][6:-1]))
        mac[len(mac) // 2] ^= 1
        headers["Signature"] = "sig1=:" + base64.b64encode(bytes(mac)).decode() + ":"
    elif change == "secret":
        secret = secret + b"!"
    reason = check(headers, path, host, api_key=key if change != "key header" else headers["X-API-KEY"],
                   secret=secret, now=NOW)
    if change == "none":
        assert reason is None
    else:
        assert reason is not None, change


def test_a_signature_over_fewer_components_is_refused() -> None:
    req = {"path": "/audiohook", "host": "h", "org": "o", "session": "s", "correlation": "c", "key": "k",
           "secret": b"s" * 32, "created": NOW, "expires": NOW + 30, "nonce": "n" * 24}
    headers = sign(**req)
    params = headers["Signature-Input"][5:].replace(' "x-api-key"', "")  # the same values, without the key
    base = "".join(f'"{n}": {v}\n' for n, v in [("@request-target", "/audiohook"), ("@authority", "h"),
                                                ("audiohook-organization-id", "o"), ("audiohook-session-id", "s"),
                                                ("audiohook-correlation-id", "c")]) + f'"@signature-params": {params}'
    mac = base64.b64encode(hmac.new(b"s" * 32, base.encode(), hashlib.sha256).digest()).decode()
    headers |= {"Signature-Input": f"sig1={params}", "Signature": f"sig1=:{mac}:"}
    assert check(headers, "/audiohook", "h", api_key="k", secret=b"s" * 32,
                 now=NOW) == "signature does not cover x-api-key"


@pytest.mark.parametrize(("edit", "reason"), [
    ({"Signature-Input": None, "Signature": None}, "no signature"),
    ({"Signature": None}, "incomplete signature"),
    ({"Signature": "sig1=:not base64!:"}, "malformed signature"),
    ({"Signature": "other=:AAAA:"}, "malformed signature"),
    ({"Signature-Input": 'sig1=("@request-target" "@authority"'}, "malformed signature"),
    ({"Signature-Input": 'sig1=("@method" "@request-target" "@authority" "audiohook-organization-id" '
                         '"audiohook-session-id" "audiohook-correlation-id" "x-api-key");keyid="k";created=1'},
     "unsupported signature component"),
    ({"Signature-Input": 'sig1=("@request-target" "@request-target");keyid="k"'}, "repeated signature component"),
    ({"Signature-Input": 'sig1=("x-api-key";sf);keyid="k"'}, "unsupported signature component"),
    ({"Signature-Input": 'sig1=("x-api-key");keyid="k";tag="x"'}, "unsupported signature parameter"),
    ({"Signature-Input": 'sig1=("x-api-key");keyid="k";created="1"'}, "unsupported signature parameter"),
    ({"Signature-Input": 'sig1=("x-api-key");keyid="k";alg="hmac-sha512"'}, "unsupported signature algorithm"),
])
def test_malformed_or_unsupported_signatures_are_refused_with_their_reason(edit: dict, reason: str) -> None:
    req = {"path": "/audiohook", "host": "h", "org": "o", "session": "s", "correlation": "c", "key": "k",
           "secret": b"s" * 32, "created": NOW, "expires": NOW + 30, "nonce": "n" * 24}
    headers = {name: value for name, value in (sign(**req) | edit).items() if value is not None}
    assert check(headers, "/audiohook", "h", api_key="k", secret=b"s" * 32, now=NOW) == reason


def test_a_short_nonce_a_missing_header_and_a_replayed_nonce_are_refused() -> None:
    req = {"path": "/audiohook", "host": "h", "org": "o", "session": "s", "correlation": "c", "key": "k",
           "secret": b"s" * 32, "created": NOW, "expires": NOW + 30, "nonce": "n" * 24}
    assert check(sign(**req | {"nonce": "n" * 21}), "/audiohook", "h", api_key="k", secret=b"s" * 32,
                 now=NOW) == "no signature nonce"
    headers = sign(**req)
    del headers["Audiohook-Session-Id"]
    assert check(headers, "/audiohook", "h", api_key="k", secret=b"s" * 32, now=NOW) == "covered header missing"
    nonces = NonceCache()
    assert check(sign(**req), "/audiohook", "h", api_key="k", secret=b"s" * 32, now=NOW, nonces=nonces) is None
    assert check(sign(**req), "/audiohook", "h", api_key="k", secret=b"s" * 32, now=NOW + 1,
                 nonces=nonces) == "replayed signature nonce"
    fresh = sign(**req | {"nonce": "m" * 24})
    assert check(fresh, "/audiohook", "h", api_key="k", secret=b"s" * 32, now=NOW + 1, nonces=nonces) is None


def test_a_header_sent_on_several_lines_is_one_value_joined_with_comma_space() -> None:
    req = {"path": "/audiohook", "host": "h", "org": "o1, o2", "session": "s", "correlation": "c", "key": "k",
           "secret": b"s" * 32, "created": NOW, "expires": NOW + 30, "nonce": "n" * 24}
    headers = CIMultiDict(sign(**req))
    headers.popall("Audiohook-Organization-Id")
    headers.add("Audiohook-Organization-Id", " o1 ")
    headers.add("Audiohook-Organization-Id", "o2")
    assert check(headers, "/audiohook", "h", api_key="k", secret=b"s" * 32, now=NOW) is None


def test_the_nonce_cache_forgets_by_time_and_stays_bounded() -> None:
    cache = NonceCache(ttl=10, size=3)
    assert cache.first_use("a", 0) and not cache.first_use("a", 5)
    assert cache.first_use("a", 11)  # older than the ttl: forgotten
    for n, nonce in enumerate("bcdef"):
        assert cache.first_use(nonce, 12 + n)
    assert len(cache._seen) == 3


def test_authority_and_secret_decoding() -> None:
    assert authority("Example.COM:443", "wss") == "example.com"
    assert authority("example.com:443", "http") == "example.com:443"
    assert authority("127.0.0.1:8080", "http") == "127.0.0.1:8080"
    assert decode_secret(EXAMPLE_SECRET) == b"MySuperSecretKeyTellNo-1!2@3#4$5"
    with pytest.raises(ValueError, match="not base64"):
        decode_secret("not base64!")


def test_the_structured_field_subset_parses_as_rfc_8941_says() -> None:
    parsed = parse_dictionary('a=("x" "y";p=1);k="v\\"w";n=-5;b=?0;t=tok/1, b=:AAE=:, c')
    assert parsed["a"] == ([("x", {}), ("y", {"p": 1})], {"k": 'v"w', "n": -5, "b": False,
                                                          "t": parsed["a"][1]["t"]})
    assert parsed["a"][1]["t"].value == "tok/1"
    assert parsed["b"] == (b"\x00\x01", {}) and parsed["c"] == (True, {})
    for bad in ('a=("x"', "a=1,", "A=1", 'a="\x01"', "a=1 b=2", "a=1234567890123456"):
        with pytest.raises(Refused):
            parse_dictionary(bad)
