"""Bearer-token verification: signed JWTs in JWS compact serialization (RFC 7515, 7519).

Pure: key material arrives as PEM bytes or a parsed JWKS, and the caller
passes the clock. Only asymmetric algorithms exist here, and each key is
bound at load time to the algorithms its type (and JWK `alg`) allows, so a
token's header can never choose how it gets checked.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import load_pem_public_key

__all__ = [
    "MAX_TOKEN_LENGTH",
    "MIN_RSA_BITS",
    "SUPPORTED_ALGORITHMS",
    "JwtConfigError",
    "JwtError",
    "JwtVerifier",
    "PublicKey",
    "VerifyingKey",
]

MAX_TOKEN_LENGTH: Final = 8192  # characters
MIN_RSA_BITS: Final = 2048
RSA_ALGORITHMS: Final = frozenset({"RS256", "RS384", "RS512", "PS256"})
EC_ALGORITHMS: Final = {"secp256r1": "ES256", "secp384r1": "ES384"}  # by curve name
SUPPORTED_ALGORITHMS: Final = frozenset({"EdDSA", *EC_ALGORITHMS.values(), *RSA_ALGORITHMS})
JWK_CURVES: Final = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}
ACCEPTED_TYPES: Final = frozenset({"jwt", "at+jwt", "application/jwt", "application/at+jwt"})
HASHES: Final = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]*")

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class JwtError(ValueError):
    """A token that is not a valid, current JWT for this server.

    The message is a fixed phrase, safe to show the client; it never holds token text.
    """


class JwtConfigError(ValueError):
    """Key material or settings that cannot verify tokens (a configuration error)."""


@dataclass(frozen=True, slots=True)
class VerifyingKey:
    """A public key and the algorithms that tokens checked against it may name."""

    public_key: PublicKey
    algorithms: frozenset[str]

    @classmethod
    def for_key(cls, public_key: object, alg: str | None = None) -> VerifyingKey:
        """Bind `public_key` to its algorithms, narrowed to `alg` when given (a JWK's `alg`)."""
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            algorithms = frozenset({"EdDSA"})
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            if public_key.curve.name not in EC_ALGORITHMS:
                raise JwtConfigError(f"unsupported EC curve {public_key.curve.name}")
            algorithms = frozenset({EC_ALGORITHMS[public_key.curve.name]})
        elif isinstance(public_key, rsa.RSAPublicKey):
            if public_key.key_size < MIN_RSA_BITS:
                raise JwtConfigError(f"RSA key has {public_key.key_size} bits; need {MIN_RSA_BITS}")
            algorithms = RSA_ALGORITHMS
        else:
            raise JwtConfigError("unsupported key type; use Ed25519, P-256, P-384 or RSA")
        if alg is not None:
            if alg not in algorithms:
                raise JwtConfigError(f"JWK alg {alg!r} does not match its key")
            algorithms = frozenset({alg})
        return cls(public_key, algorithms)


@dataclass(frozen=True, slots=True)
class JwtVerifier:
    """Checks bearer tokens against a fixed set of public keys, audience and issuer."""

    keys: Mapping[str | None, VerifyingKey]  # by kid; a key without one under None
    audience: str  # the `aud` claim (a string or a list) must contain it
    issuer: str | None = None  # when set, `iss` must equal it
    leeway: float = 30.0  # seconds of clock skew allowed on exp and nbf

    def __post_init__(self) -> None:
        if not self.keys:
            raise JwtConfigError("no signing keys configured")
        if not isinstance(self.audience, str) or not self.audience:
            raise JwtConfigError("an audience is required")
        if not (math.isfinite(self.leeway) and self.leeway >= 0):
            raise JwtConfigError("leeway must be a non-negative number of seconds")

    @classmethod
    def from_pem(
        cls, pem: bytes, *, audience: str, issuer: str | None = None, leeway: float = 30.0
    ) -> JwtVerifier:
        """A verifier for one PEM public key (SubjectPublicKeyInfo), which has no kid."""
        if b"PRIVATE KEY" in pem:
            raise JwtConfigError("PEM holds a private key; configure the public key")
        try:
            public_key = load_pem_public_key(pem)
        except (ValueError, UnsupportedAlgorithm):
            raise JwtConfigError("PEM is not a readable public key") from None
        key = VerifyingKey.for_key(public_key)
        return cls({None: key}, audience=audience, issuer=issuer, leeway=leeway)

    @classmethod
    def from_jwks(
        cls,
        jwks: Mapping[str, Any],
        *,
        audience: str,
        issuer: str | None = None,
        leeway: float = 30.0,
    ) -> JwtVerifier:
        """A verifier for the signing keys of a parsed JWK Set (RFC 7517); others are skipped."""
        entries = jwks.get("keys") if isinstance(jwks, Mapping) else None
        if not isinstance(entries, list):
            raise JwtConfigError("JWKS must be an object with a `keys` list")
        keys: dict[str | None, VerifyingKey] = {}
        for index, jwk in enumerate(entries):
            if not isinstance(jwk, Mapping):
                raise JwtConfigError(f"JWKS key {index} is not an object")
            if not _is_signing_key(jwk):
                continue
            kid, alg = jwk.get("kid"), jwk.get("alg")
            if not isinstance(kid, str | None) or not isinstance(alg, str | None):
                raise JwtConfigError(f"JWKS key {index}: kid and alg must be strings")
            if kid in keys:
                raise JwtConfigError(f"JWKS key {index}: duplicate kid {kid!r}")
            keys[kid] = VerifyingKey.for_key(_jwk_public_key(jwk, index), alg)
        if not keys:
            raise JwtConfigError("JWKS has no signing keys")
        return cls(keys, audience=audience, issuer=issuer, leeway=leeway)

    def verify(self, token: str, now: float) -> dict[str, Any]:
        """The claims of `token` if it is signed by a configured key and current at `now`.

        Raises:
            JwtError: the token is malformed, forged, expired, or not meant for us.
        """
        if len(token) > MAX_TOKEN_LENGTH:
            raise JwtError("token too long")
        segments = token.split(".")
        if len(segments) != 3:
            raise JwtError("malformed token")
        header_bytes, payload_bytes, signature = (_unb64(part) for part in segments)
        header = _json_object(header_bytes, "malformed token header")
        alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")
        if "crit" in header:
            raise JwtError("unsupported crit header")
        if "typ" in header and (not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYPES):
            raise JwtError("unsupported token typ")
        if not isinstance(alg, str) or alg not in SUPPORTED_ALGORITHMS:
            raise JwtError("unsupported alg")
        if "kid" in header and not isinstance(kid, str):
            raise JwtError("malformed key id")
        key = self._key_for(kid)
        if alg not in key.algorithms:
            raise JwtError("alg does not match key")
        signing_input = f"{segments[0]}.{segments[1]}".encode()
        if not _signature_valid(key.public_key, alg, signature, signing_input):
            raise JwtError("bad signature")
        claims = _json_object(payload_bytes, "malformed token payload")
        self._check_claims(claims, now)
        return claims

    def _key_for(self, kid: str | None) -> VerifyingKey:
        if len(self.keys) == 1:
            ((only_kid, key),) = self.keys.items()
            # A lone kid-less key (a PEM) verifies tokens whatever kid they carry.
            if kid is None or only_kid is None or kid == only_kid:
                return key
        elif kid is None:
            raise JwtError("token has no key id")
        elif kid in self.keys:
            return self.keys[kid]
        raise JwtError("unknown key id")

    def _check_claims(self, claims: dict[str, Any], now: float) -> None:
        expires = _number_claim(claims, "exp")
        if expires is None:
            raise JwtError("token has no exp")
        if now > expires + self.leeway:
            raise JwtError("token expired")
        not_before = _number_claim(claims, "nbf")
        if not_before is not None and now + self.leeway < not_before:
            raise JwtError("token not yet valid")
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or self.audience not in audiences:
            raise JwtError("wrong audience")
        if self.issuer is not None and claims.get("iss") != self.issuer:
            raise JwtError("wrong issuer")


def _unb64(text: object, error: type[ValueError] = JwtError, what: str = "token") -> bytes:
    """Strict base64url without padding: any other spelling of the bytes is refused."""
    if isinstance(text, str) and BASE64URL.fullmatch(text):
        try:
            data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except binascii.Error:
            pass
        else:
            if base64.urlsafe_b64encode(data).rstrip(b"=").decode() == text:
                return data
    raise error(f"malformed {what}")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _json_object(data: bytes, message: str) -> dict[str, Any]:
    try:
        value = json.loads(
            data.decode(), object_pairs_hook=_unique_keys, parse_constant=_refuse_constant
        )
    except (ValueError, RecursionError):  # RecursionError: absurdly nested arrays
        raise JwtError(message) from None
    if not isinstance(value, dict):
        raise JwtError(message)
    return value


def _number_claim(claims: dict[str, Any], name: str) -> float | None:
    """A NumericDate claim as a finite float, or None when absent."""
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise JwtError(f"{name} is not a number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        number = math.inf
    if not math.isfinite(number):
        raise JwtError(f"{name} is out of range")
    return number


def _signature_valid(key: PublicKey, alg: str, signature: bytes, signed: bytes) -> bool:
    """Whether `signature` is `alg`'s signature of `signed`; `alg` already fits `key`."""
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, signed)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            size = (key.curve.key_size + 7) // 8
            if len(signature) != 2 * size:
                return False
            r, s = int.from_bytes(signature[:size]), int.from_bytes(signature[size:])
            key.verify(encode_dss_signature(r, s), signed, ec.ECDSA(HASHES[alg[2:]]()))
        elif alg.startswith("PS"):
            digest = HASHES[alg[2:]]()
            pss = padding.PSS(padding.MGF1(digest), digest.digest_size)
            key.verify(signature, signed, pss, digest)
        else:
            key.verify(signature, signed, padding.PKCS1v15(), HASHES[alg[2:]]())
    except InvalidSignature:
        return False
    return True


def _is_signing_key(jwk: Mapping[str, Any]) -> bool:
    """Whether a JWK may verify signatures: `use` and `key_ops`, when present, allow it."""
    key_ops = jwk.get("key_ops", ["verify"])
    return jwk.get("use", "sig") == "sig" and isinstance(key_ops, list) and "verify" in key_ops


def _jwk_public_key(jwk: Mapping[str, Any], index: int) -> PublicKey:
    """The public key one JWK describes (Ed25519 OKP, P-256/P-384 EC, or RSA)."""

    def member(name: str) -> bytes:
        return _unb64(jwk.get(name), JwtConfigError, f"JWKS key {index} member {name!r}")

    kty, crv = jwk.get("kty"), jwk.get("crv")
    try:
        if kty == "OKP" and crv == "Ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(member("x"))
        if kty == "EC" and isinstance(crv, str) and crv in JWK_CURVES:
            curve = JWK_CURVES[crv]
            x, y = member("x"), member("y")
            if len(x) != len(y) or len(x) != (curve.key_size + 7) // 8:
                raise ValueError("wrong coordinate length")
            numbers = ec.EllipticCurvePublicNumbers(int.from_bytes(x), int.from_bytes(y), curve)
            return numbers.public_key()
        if kty == "RSA":
            n, e = int.from_bytes(member("n")), int.from_bytes(member("e"))
            return rsa.RSAPublicNumbers(e, n).public_key()
    except JwtConfigError:
        raise
    except ValueError:
        raise JwtConfigError(f"JWKS key {index} is not a valid {kty} key") from None
    raise JwtConfigError(f"JWKS key {index}: unsupported kty/crv {kty!r}/{crv!r}")
