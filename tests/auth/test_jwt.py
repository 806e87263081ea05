"""Bearer JWT verification (`ds_trio.auth.jwt`).

Keys are generated once per module with cryptography and tokens are minted by
the small signer below, so every header, claim and signature byte is under
the test's control. The clock is the fixed `NOW`. Covers every algorithm via
PEM and JWKS, each claim rule and its leeway edge, algorithm and key
confusion, tampering, the strict compact-serialization parser, key selection
by kid, JWKS/PEM loading errors, and properties: arbitrary input only ever
raises `JwtError`, and error messages never echo the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ds_trio.auth.jwt import (
    MAX_TOKEN_LENGTH,
    JwtConfigError,
    JwtError,
    JwtVerifier,
    VerifyingKey,
)

PROPERTY = settings(max_examples=200, deadline=None, database=None)
NOW = 1_700_000_000.0
AUDIENCE = "https://streams.example"
ISSUER = "https://issuer.example"
CLAIMS: dict[str, Any] = {"sub": "alice", "aud": AUDIENCE, "iss": ISSUER, "exp": NOW + 300}

ED25519 = ed25519.Ed25519PrivateKey.generate()
ED25519_OTHER = ed25519.Ed25519PrivateKey.generate()
P256 = ec.generate_private_key(ec.SECP256R1())
P384 = ec.generate_private_key(ec.SECP384R1())
RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEY_FOR_ALG = {
    "EdDSA": ED25519,
    "ES256": P256,
    "ES384": P384,
    "RS256": RSA,
    "RS384": RSA,
    "RS512": RSA,
    "PS256": RSA,
}
ALGORITHMS = sorted(KEY_FOR_ALG)
DIGESTS = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
JWK_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384"}

# --- a test-local signer and key exporters -------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: Any) -> str:
    return b64(json.dumps(value).encode())


def sign(key: Any, alg: str, data: bytes) -> bytes:
    """A JWS signature of `data` (raw r||s for ECDSA, as RFC 7518 wants)."""
    if alg == "EdDSA":
        return key.sign(data)
    digest = DIGESTS[alg[2:]]()
    if alg.startswith("ES"):
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size) + s.to_bytes(size)
    if alg.startswith("PS"):
        return key.sign(data, padding.PSS(padding.MGF1(digest), digest.digest_size), digest)
    return key.sign(data, padding.PKCS1v15(), digest)


def compact(header: str, payload: str, key: Any = ED25519, alg: str = "EdDSA") -> str:
    """A token from already-encoded segments, signed with `key`."""
    signing_input = f"{header}.{payload}"
    return f"{signing_input}.{b64(sign(key, alg, signing_input.encode()))}"


def mint(
    claims: dict[str, Any] | None = None,
    *,
    key: Any = ED25519,
    alg: str = "EdDSA",
    header: dict[str, Any] | None = None,
) -> str:
    """A signed token; `header` entries go over {alg, typ}, and a None value drops one."""
    merged = {"alg": alg, "typ": "JWT", **(header or {})}
    merged = {name: value for name, value in merged.items() if value is not None}
    return compact(segment(merged), segment(CLAIMS if claims is None else claims), key, alg)


def public_pem(private_key: Any) -> bytes:
    return private_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def unsigned_int(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8)


def jwk_of(private_key: Any, **members: Any) -> dict[str, Any]:
    public = private_key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
        jwk: dict[str, Any] = {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}
    elif isinstance(public, ec.EllipticCurvePublicKey):
        numbers, size = public.public_numbers(), (public.curve.key_size + 7) // 8
        jwk = {
            "kty": "EC",
            "crv": JWK_CURVE_NAMES[public.curve.name],
            "x": b64(numbers.x.to_bytes(size)),
            "y": b64(numbers.y.to_bytes(size)),
        }
    else:
        numbers = public.public_numbers()
        jwk = {"kty": "RSA", "n": b64(unsigned_int(numbers.n)), "e": b64(unsigned_int(numbers.e))}
    return {**jwk, **members}


def pem_verifier(private_key: Any = ED25519, **options: Any) -> JwtVerifier:
    return JwtVerifier.from_pem(public_pem(private_key), audience=AUDIENCE, **options)


def jwks_verifier(*jwks: dict[str, Any], **options: Any) -> JwtVerifier:
    return JwtVerifier.from_jwks({"keys": list(jwks)}, audience=AUDIENCE, **options)


def assert_rejected(verifier: JwtVerifier, token: str, message: str) -> None:
    with pytest.raises(JwtError) as caught:
        verifier.verify(token, NOW)
    assert str(caught.value) == message
    assert not any(len(part) >= 8 and part in str(caught.value) for part in token.split("."))


# --- every algorithm ------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_each_algorithm_verifies_with_a_pem_key(alg: str) -> None:
    key = KEY_FOR_ALG[alg]
    assert pem_verifier(key, issuer=ISSUER).verify(mint(key=key, alg=alg), NOW) == CLAIMS


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_each_algorithm_verifies_with_a_jwks_key(alg: str) -> None:
    key = KEY_FOR_ALG[alg]
    verifier = jwks_verifier(jwk_of(key, kid="k1", use="sig", alg=alg))
    assert verifier.verify(mint(key=key, alg=alg, header={"kid": "k1"}), NOW) == CLAIMS


@pytest.mark.parametrize("typ", [None, "JWT", "jwt", "at+jwt", "AT+JWT", "application/at+jwt"])
def test_typ_may_be_absent_or_a_jwt_type(typ: str | None) -> None:
    assert pem_verifier().verify(mint(header={"typ": typ}), NOW) == CLAIMS


@pytest.mark.parametrize("typ", ["JOSE", "dpop+jwt", 1, ["JWT"]])
def test_other_typ_is_rejected(typ: object) -> None:
    assert_rejected(pem_verifier(), mint(header={"typ": typ}), "unsupported token typ")


def test_null_typ_or_kid_is_not_taken_as_absent() -> None:
    for name, message in (("typ", "unsupported token typ"), ("kid", "malformed key id")):
        token = compact(segment({"alg": "EdDSA", name: None}), segment(CLAIMS))
        assert_rejected(pem_verifier(), token, message)


# --- claims ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exp", "leeway", "accepted"),
    [
        (NOW - 30, 30.0, True),
        (NOW - 30.5, 30.0, False),
        (NOW - 31, 30.0, False),
        (NOW, 0.0, True),
        (NOW - 1, 0.0, False),
        (NOW + 1, 0.0, True),
    ],
)
def test_exp_is_enforced_with_leeway(exp: float, leeway: float, accepted: bool) -> None:
    verifier, token = pem_verifier(leeway=leeway), mint(CLAIMS | {"exp": exp})
    if accepted:
        assert verifier.verify(token, NOW)["exp"] == exp
    else:
        assert_rejected(verifier, token, "token expired")


@pytest.mark.parametrize(
    ("nbf", "accepted"), [(NOW + 30, True), (NOW + 30.5, False), (NOW + 3600, False), (NOW, True)]
)
def test_nbf_is_enforced_with_leeway(nbf: float, accepted: bool) -> None:
    token = mint(CLAIMS | {"nbf": nbf})
    if accepted:
        assert pem_verifier().verify(token, NOW)["nbf"] == nbf
    else:
        assert_rejected(pem_verifier(), token, "token not yet valid")


def test_exp_is_required() -> None:
    claims = {name: value for name, value in CLAIMS.items() if name != "exp"}
    assert_rejected(pem_verifier(), mint(claims), "token has no exp")


@pytest.mark.parametrize("name", ["exp", "nbf"])
@pytest.mark.parametrize("value", ["1700000300", True, False, None, [NOW + 300], {}])
def test_time_claims_must_be_numbers(name: str, value: object) -> None:
    assert_rejected(pem_verifier(), mint(CLAIMS | {name: value}), f"{name} is not a number")


@pytest.mark.parametrize("raw_exp", ["1e400", "-1e400", "1" + "0" * 400])
def test_exp_out_of_float_range_is_rejected(raw_exp: str) -> None:
    payload = b64(f'{{"aud": "{AUDIENCE}", "exp": {raw_exp}}}'.encode())
    assert_rejected(
        pem_verifier(), compact(segment({"alg": "EdDSA"}), payload), "exp is out of range"
    )


@pytest.mark.parametrize("aud", [[AUDIENCE], ["other", AUDIENCE]])
def test_aud_list_containing_the_audience_is_accepted(aud: list[str]) -> None:
    assert pem_verifier().verify(mint(CLAIMS | {"aud": aud}), NOW)["aud"] == aud


@pytest.mark.parametrize(
    "aud", ["other", AUDIENCE + "/", [], ["other"], [[AUDIENCE]], {AUDIENCE: 1}, None, 7]
)
def test_wrong_audience_is_rejected(aud: object) -> None:
    assert_rejected(pem_verifier(), mint(CLAIMS | {"aud": aud}), "wrong audience")


def test_missing_audience_is_rejected() -> None:
    claims = {name: value for name, value in CLAIMS.items() if name != "aud"}
    assert_rejected(pem_verifier(), mint(claims), "wrong audience")


@pytest.mark.parametrize("iss", ["https://evil.example", ISSUER.upper(), None, [ISSUER]])
def test_wrong_or_missing_issuer_is_rejected_when_configured(iss: object) -> None:
    claims = CLAIMS | {"iss": iss} if iss is not None else {"aud": AUDIENCE, "exp": NOW + 1}
    assert_rejected(pem_verifier(issuer=ISSUER), mint(claims), "wrong issuer")


def test_issuer_is_not_checked_when_not_configured() -> None:
    claims = CLAIMS | {"iss": "https://anyone.example"}
    assert pem_verifier().verify(mint(claims), NOW) == claims


# --- algorithms and key confusion -------------------------------------------------------


def test_alg_none_is_rejected() -> None:
    token = f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(CLAIMS)}."
    assert_rejected(pem_verifier(), token, "unsupported alg")


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_signed_with_the_public_key_is_rejected(alg: str) -> None:
    pem = public_pem(ED25519)
    signing_input = f"{segment({'alg': alg, 'typ': 'JWT'})}.{segment(CLAIMS)}"
    mac = hmac.new(pem, signing_input.encode(), getattr(hashlib, f"sha{alg[2:]}")).digest()
    assert_rejected(pem_verifier(), f"{signing_input}.{b64(mac)}", "unsupported alg")


@pytest.mark.parametrize("alg", ["ES512", "Ed25519", "eddsa", "RS1", "PS384", "", 256, None])
def test_unknown_or_missing_alg_is_rejected(alg: object) -> None:
    header = segment({"alg": alg} if alg is not None else {"typ": "JWT"})
    token = f"{header}.{segment(CLAIMS)}.{b64(b'x' * 64)}"
    assert_rejected(pem_verifier(), token, "unsupported alg")


@pytest.mark.parametrize(
    ("signing_key", "alg", "verifier_key"),
    [
        (P256, "ES256", ED25519),
        (RSA, "RS256", P256),
        (P384, "ES384", P256),
        (P256, "ES256", P384),
        (ED25519, "EdDSA", RSA),
        (RSA, "PS256", ED25519),
    ],
)
def test_alg_that_does_not_fit_the_key_is_rejected(
    signing_key: Any, alg: str, verifier_key: Any
) -> None:
    token = mint(key=signing_key, alg=alg)
    assert_rejected(pem_verifier(verifier_key), token, "alg does not match key")


def test_jwk_alg_restricts_the_key_to_that_alg() -> None:
    verifier = jwks_verifier(jwk_of(RSA, alg="RS256"))
    assert verifier.verify(mint(key=RSA, alg="RS256"), NOW) == CLAIMS
    assert_rejected(verifier, mint(key=RSA, alg="PS256"), "alg does not match key")


# --- signatures -------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_tampered_payload_is_rejected(alg: str) -> None:
    key = KEY_FOR_ALG[alg]
    header, _, signature = mint(key=key, alg=alg).split(".")
    forged = f"{header}.{segment(CLAIMS | {'sub': 'mallory'})}.{signature}"
    assert_rejected(pem_verifier(key), forged, "bad signature")


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_tampered_signature_is_rejected(alg: str) -> None:
    key = KEY_FOR_ALG[alg]
    header, payload, signature = mint(key=key, alg=alg).split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[len(raw) // 2] ^= 0x01
    assert_rejected(pem_verifier(key), f"{header}.{payload}.{b64(bytes(raw))}", "bad signature")


def test_signature_by_another_key_is_rejected() -> None:
    assert_rejected(pem_verifier(ED25519), mint(key=ED25519_OTHER), "bad signature")


@pytest.mark.parametrize(
    "reshape",
    [
        lambda raw, der: der,  # DER, as cryptography emits, instead of raw r||s
        lambda raw, der: raw[:-1],
        lambda raw, der: raw + b"\0",
        lambda raw, der: b"\0" + raw,
        lambda raw, der: raw[:32],
        lambda raw, der: b"",
    ],
)
def test_es256_signature_of_the_wrong_shape_is_rejected(reshape: Any) -> None:
    signing_input = f"{segment({'alg': 'ES256'})}.{segment(CLAIMS)}"
    der = P256.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    raw = r.to_bytes(32) + s.to_bytes(32)
    assert pem_verifier(P256).verify(f"{signing_input}.{b64(raw)}", NOW) == CLAIMS
    token = f"{signing_input}.{b64(reshape(raw, der))}"
    assert_rejected(pem_verifier(P256), token, "bad signature")


# --- parsing --------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1, 2])
def test_base64_padding_is_rejected(index: int) -> None:
    parts = mint().split(".")
    parts[index] += "=" * (-len(parts[index]) % 4 or 4)
    assert_rejected(pem_verifier(), ".".join(parts), "malformed token")


@pytest.mark.parametrize("char", ["+", "/", " ", "\n", "é", "\0", "%"])
def test_non_base64url_characters_are_rejected(char: str) -> None:
    header, payload, signature = mint().split(".")
    token = f"{header}.{payload[:4]}{char}{payload[4:]}.{signature}"
    assert_rejected(pem_verifier(), token, "malformed token")


def test_non_canonical_base64_is_rejected() -> None:
    header, payload, signature = mint().split(".")
    assert len(signature) % 4 == 2  # 64 bytes: the last character carries 4 unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    sloppy = signature[:-1] + alphabet[alphabet.index(signature[-1]) | 1]
    assert base64.urlsafe_b64decode(sloppy + "==") == base64.urlsafe_b64decode(signature + "==")
    assert_rejected(pem_verifier(), f"{header}.{payload}.{sloppy}", "malformed token")


@pytest.mark.parametrize("count", [1, 2, 4, 5])
def test_wrong_number_of_segments_is_rejected(count: int) -> None:
    header, payload, signature = mint().split(".")
    parts = [header, payload, signature, signature, signature][:count]
    assert_rejected(pem_verifier(), ".".join(parts), "malformed token")


def test_empty_token_is_rejected() -> None:
    assert_rejected(pem_verifier(), "", "malformed token")


@pytest.mark.parametrize(
    "raw_header",
    [
        b"not json",
        b'["alg", "EdDSA"]',
        b'"EdDSA"',
        b'{"alg": "EdDSA", "alg": "none"}',
        b'{"alg": "EdDSA"',
        b'{"alg": "EdDSA", "x": NaN}',
        b'{"alg": "EdD\xffSA"}',
        b"",
    ],
)
def test_header_that_is_not_a_json_object_is_rejected(raw_header: bytes) -> None:
    token = compact(b64(raw_header), segment(CLAIMS))
    assert_rejected(pem_verifier(), token, "malformed token header")


@pytest.mark.parametrize(
    "raw_payload",
    [
        b"not json",
        json.dumps([CLAIMS]).encode(),
        b"null",
        b'{"aud": "%s", "exp": 1, "exp": 1800000000}' % AUDIENCE.encode(),
        b'{"aud": "%s", "exp": Infinity}' % AUDIENCE.encode(),
        b'{"a": ' + b"[" * 3000 + b"]" * 3000 + b"}",  # deeper than the recursion limit
    ],
)
def test_payload_that_is_not_a_json_object_is_rejected(raw_payload: bytes) -> None:
    token = compact(segment({"alg": "EdDSA"}), b64(raw_payload))
    assert len(token) <= MAX_TOKEN_LENGTH
    assert_rejected(pem_verifier(), token, "malformed token payload")


def test_token_longer_than_the_limit_is_rejected() -> None:
    tokens = (mint(CLAIMS | {"pad": "x" * size}) for size in range(5900, 6200))
    longest_allowed = max((token for token in tokens if len(token) <= MAX_TOKEN_LENGTH), key=len)
    assert len(longest_allowed) >= MAX_TOKEN_LENGTH - 1
    assert pem_verifier().verify(longest_allowed, NOW)["sub"] == "alice"
    assert_rejected(pem_verifier(), mint(CLAIMS | {"pad": "x" * 6200}), "token too long")
    assert_rejected(pem_verifier(), "a" * (MAX_TOKEN_LENGTH + 1), "token too long")


def test_crit_header_is_rejected() -> None:
    for crit in (["exp"], [], "b64"):
        token = mint(header={"crit": crit, "exp": NOW})
        assert_rejected(pem_verifier(), token, "unsupported crit header")


# --- key selection --------------------------------------------------------------------

TWO_KEYS = (jwk_of(ED25519, kid="a"), jwk_of(ED25519_OTHER, kid="b"))


def test_kid_picks_the_key() -> None:
    verifier = jwks_verifier(*TWO_KEYS)
    assert verifier.verify(mint(key=ED25519_OTHER, header={"kid": "b"}), NOW) == CLAIMS
    assert verifier.verify(mint(key=ED25519, header={"kid": "a"}), NOW) == CLAIMS
    assert_rejected(verifier, mint(key=ED25519_OTHER, header={"kid": "a"}), "bad signature")


def test_unknown_kid_is_rejected() -> None:
    assert_rejected(jwks_verifier(*TWO_KEYS), mint(header={"kid": "c"}), "unknown key id")
    one_key = jwks_verifier(jwk_of(ED25519, kid="a"))
    assert_rejected(one_key, mint(header={"kid": "b"}), "unknown key id")


def test_token_without_kid_needs_exactly_one_key() -> None:
    assert_rejected(jwks_verifier(*TWO_KEYS), mint(), "token has no key id")
    assert jwks_verifier(jwk_of(ED25519, kid="a")).verify(mint(), NOW) == CLAIMS


def test_a_lone_key_without_kid_accepts_any_kid() -> None:
    assert pem_verifier().verify(mint(header={"kid": "issuer-key-7"}), NOW) == CLAIMS
    assert jwks_verifier(jwk_of(ED25519)).verify(mint(header={"kid": "x"}), NOW) == CLAIMS


@pytest.mark.parametrize("kid", [1, ["a"], {"a": 1}, True])
def test_kid_must_be_a_string(kid: object) -> None:
    assert_rejected(jwks_verifier(*TWO_KEYS), mint(header={"kid": kid}), "malformed key id")


# --- loading keys ---------------------------------------------------------------------


def test_jwks_skips_keys_that_are_not_for_signatures() -> None:
    verifier = jwks_verifier(
        jwk_of(ED25519, kid="enc", use="enc"),
        jwk_of(ED25519, kid="wrap", key_ops=["wrapKey"]),
        jwk_of(ED25519_OTHER, kid="sig", use="sig", key_ops=["verify"]),
    )
    assert set(verifier.keys) == {"sig"}
    assert_rejected(verifier, mint(header={"kid": "enc"}), "unknown key id")
    with pytest.raises(JwtConfigError, match="no signing keys"):
        jwks_verifier(jwk_of(ED25519, use="enc"))


@pytest.mark.parametrize(
    ("jwk", "alg"), [(jwk_of(ED25519), "ES256"), (jwk_of(P256), "ES384"), (jwk_of(RSA), "HS256")]
)
def test_jwk_alg_that_does_not_fit_its_key_is_refused(jwk: dict[str, Any], alg: str) -> None:
    with pytest.raises(JwtConfigError, match="does not match its key"):
        jwks_verifier(jwk | {"alg": alg})


def _with(jwk: dict[str, Any], **members: Any) -> dict[str, Any]:
    return {name: value for name, value in (jwk | members).items() if value is not None}


P256_JWK = jwk_of(P256)
ED_JWK = jwk_of(ED25519)
OFF_CURVE_Y = b64((P256.public_key().public_numbers().y ^ 1).to_bytes(32))


@pytest.mark.parametrize(
    "jwks",
    [
        [],
        {"keys": {}},
        {"keys": "x"},
        {"keys": []},
        {"keys": [5]},
        {"keys": [_with(ED_JWK, x=None)]},
        {"keys": [_with(ED_JWK, x=ED_JWK["x"] + "=")]},
        {"keys": [_with(ED_JWK, x=b64(b"\1" * 31))]},
        {"keys": [_with(ED_JWK, x=7)]},
        {"keys": [_with(ED_JWK, crv="Ed448")]},
        {"keys": [_with(P256_JWK, y=None)]},
        {"keys": [_with(P256_JWK, y=OFF_CURVE_Y)]},
        {"keys": [_with(P256_JWK, x=P256_JWK["x"][2:])]},
        {"keys": [_with(P256_JWK, x=b64(b"\1" * 31))]},
        {"keys": [_with(P256_JWK, x=b64(b"\0" * 33))]},
        {"keys": [_with(P256_JWK, crv="P-521")]},
        {"keys": [_with(P256_JWK, crv=["P-256"])]},
        {"keys": [{"kty": "oct", "k": b64(b"secret" * 6)}]},
        {"keys": [{"kty": "RSA", "n": b64(b"\0"), "e": "AQAB"}]},
        {"keys": [{"kty": "RSA", "e": "AQAB"}]},
        {"keys": [{"crv": "Ed25519", "x": ED_JWK["x"]}]},
        {"keys": [ED_JWK | {"kid": "a"}, jwk_of(ED25519_OTHER, kid="a")]},
        {"keys": [ED_JWK, jwk_of(ED25519_OTHER)]},
        {"keys": [ED_JWK | {"kid": 1}]},
        {"keys": [ED_JWK | {"alg": ["EdDSA"]}]},
    ],
)
def test_malformed_jwks_is_refused(jwks: Any) -> None:
    with pytest.raises(JwtConfigError):
        JwtVerifier.from_jwks(jwks, audience=AUDIENCE)


def test_small_rsa_key_is_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(JwtConfigError, match="2048"):
        pem_verifier(small)
    with pytest.raises(JwtConfigError, match="2048"):
        jwks_verifier(jwk_of(small))


def test_private_key_pem_is_refused() -> None:
    for key in (ED25519, P256, RSA):
        pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        with pytest.raises(JwtConfigError, match="private key"):
            JwtVerifier.from_pem(pem, audience=AUDIENCE)


@pytest.mark.parametrize(
    ("private_key", "message"),
    [
        (ec.generate_private_key(ec.SECP521R1()), "unsupported EC curve"),
        (ec.generate_private_key(ec.SECP256K1()), "unsupported EC curve"),
        (ed448.Ed448PrivateKey.generate(), "unsupported key type"),
    ],
)
def test_pem_of_an_unsupported_key_is_refused(private_key: Any, message: str) -> None:
    with pytest.raises(JwtConfigError, match=message):
        pem_verifier(private_key)


@pytest.mark.parametrize("pem", [b"", b"junk", public_pem(ED25519)[:60]])
def test_unreadable_pem_is_refused(pem: bytes) -> None:
    with pytest.raises(JwtConfigError, match="not a readable public key"):
        JwtVerifier.from_pem(pem, audience=AUDIENCE)


def test_verifier_settings_are_checked() -> None:
    key = VerifyingKey.for_key(ED25519.public_key())
    assert key.algorithms == {"EdDSA"}
    assert JwtVerifier({None: key}, audience=AUDIENCE).verify(mint(), NOW) == CLAIMS
    with pytest.raises(JwtConfigError, match="no signing keys"):
        JwtVerifier({}, audience=AUDIENCE)
    for audience in ("", None, [AUDIENCE]):
        with pytest.raises(JwtConfigError, match="audience"):
            JwtVerifier({None: key}, audience=audience)  # type: ignore[arg-type]
    for leeway in (-1.0, float("nan"), float("inf")):
        with pytest.raises(JwtConfigError, match="leeway"):
            JwtVerifier({None: key}, audience=AUDIENCE, leeway=leeway)


# --- properties -----------------------------------------------------------------------

BASE64URL_TEXT = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=.", max_size=300
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
HEADERS = st.fixed_dictionaries(
    {"alg": st.sampled_from(["EdDSA", "ES256", "none", "HS256"]) | JSON_VALUES},
    optional={"kid": st.sampled_from(["a", "b"]) | JSON_VALUES, "typ": JSON_VALUES},
)
PAYLOADS = (
    st.fixed_dictionaries(
        {},
        optional={
            "exp": st.sampled_from([NOW, NOW - 60, NOW + 60]) | JSON_VALUES,
            "nbf": st.sampled_from([NOW, NOW + 60]) | JSON_VALUES,
            "aud": st.sampled_from([AUDIENCE, [AUDIENCE]]) | JSON_VALUES,
            "iss": st.sampled_from([ISSUER]) | JSON_VALUES,
        },
    )
    | JSON_VALUES
)


def exact_bytes(size: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=size, max_size=size)


@PROPERTY
@given(st.text(max_size=300) | BASE64URL_TEXT)
def test_arbitrary_text_is_rejected_with_jwt_error(token: str) -> None:
    with pytest.raises(JwtError):
        jwks_verifier(*TWO_KEYS, issuer=ISSUER).verify(token, NOW)


@PROPERTY
@given(HEADERS, PAYLOADS)
def test_signed_arbitrary_json_yields_claims_or_jwt_error(header: Any, payload: Any) -> None:
    token = compact(segment(header), segment(payload), ED25519, "EdDSA")
    try:
        claims = jwks_verifier(*TWO_KEYS, issuer=ISSUER).verify(token, NOW)
    except JwtError as error:
        assert not any(part in str(error) for part in token.split(".") if len(part) >= 8)
    else:
        assert claims == payload
        assert header["alg"] == "EdDSA" and header["kid"] == "a"
        assert claims["aud"] in (AUDIENCE, [AUDIENCE]) and claims["iss"] == ISSUER


@pytest.mark.parametrize("alg", ALGORITHMS)
@PROPERTY
@given(signature=st.binary(max_size=600) | st.sampled_from([64, 96, 256]).flatmap(exact_bytes))
@example(signature=b"\xff" * 64)
@example(signature=b"\xff" * 96)
@example(signature=b"\xff" * 256)
@example(signature=b"\0" * 64)
def test_random_signature_bytes_are_a_bad_signature(alg: str, signature: bytes) -> None:
    token = f"{segment({'alg': alg})}.{segment(CLAIMS)}.{b64(signature)}"
    assert_rejected(pem_verifier(KEY_FOR_ALG[alg]), token, "bad signature")
