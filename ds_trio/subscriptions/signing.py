"""Webhook signing (Ed25519, JWKS) and the server's callback/claim tokens (HMAC).

The Ed25519 key is generated once. With a data dir it is kept there in a
0600 file and reused on every start, so the `kid` (an RFC 7638 thumbprint)
stays stable; without one it lives only in memory. The token key is derived
from the signing key, so tokens minted before a restart stay verifiable.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from .errors import TokenExpired, TokenInvalid

__all__ = ["KEY_FILE", "Signer", "TokenClaims", "load_or_create_key"]

KEY_FILE: Final = "webhook-signing.key"  # raw 32-byte Ed25519 seed, mode 0600
TOKEN_TTL: Final = 3600  # seconds a callback/claim token stays valid


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_or_create_key(data_dir: Path | None) -> Ed25519PrivateKey:
    """The server's signing key: read from `data_dir`, else created (and saved there)."""
    if data_dir is None:
        return Ed25519PrivateKey.generate()
    path = data_dir / KEY_FILE
    try:
        return Ed25519PrivateKey.from_private_bytes(path.read_bytes())
    except FileNotFoundError:
        pass
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, seed)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return key


class TokenClaims:
    """What a verified token is scoped to."""

    __slots__ = ("generation", "incarnation", "sub_id")

    def __init__(self, sub_id: str, incarnation: str, generation: int) -> None:
        self.sub_id = sub_id
        self.incarnation = incarnation
        self.generation = generation


class Signer:
    """Signs webhook requests and mints/verifies tokens with one server key."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        raw_public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self._x = _b64(raw_public)
        thumbprint_input = json.dumps(
            {"crv": "Ed25519", "kty": "OKP", "x": self._x}, separators=(",", ":"), sort_keys=True
        )
        self.kid = "ds_" + _b64(hashlib.sha256(thumbprint_input.encode()).digest())
        seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        self._token_key = hashlib.sha256(b"ds_trio subscription tokens\0" + seed).digest()

    def jwks(self) -> dict[str, Any]:
        """The public key set receivers verify webhook signatures with."""
        jwk = {"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "use": "sig", "alg": "EdDSA", "x": self._x}
        return {"keys": [jwk]}

    def signature_header(self, body: bytes, now: float) -> str:
        """`Webhook-Signature`: Ed25519 over `<t>.<body>`."""
        timestamp = str(int(now))
        signature = self._key.sign(timestamp.encode() + b"." + body)
        return f"t={timestamp},kid={self.kid},ed25519={_b64(signature)}"

    def mint_token(self, sub_id: str, incarnation: str, generation: int, now: float) -> str:
        """A bearer token for one generation of one subscription."""
        claims = {"sub": sub_id, "inc": incarnation, "gen": generation, "exp": int(now) + TOKEN_TTL}
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        mac = hmac.new(self._token_key, payload.encode(), hashlib.sha256).digest()
        return f"{payload}.{_b64(mac)}"

    def verify_token(self, token: str, sub_id: str, now: float) -> TokenClaims:
        """The claims of a token this server minted for `sub_id`.

        Raises:
            TokenInvalid: malformed, forged, or for another subscription.
            TokenExpired: past its expiry.
        """
        payload, _, mac = token.partition(".")
        expected = _b64(hmac.new(self._token_key, payload.encode(), hashlib.sha256).digest())
        if not mac or not hmac.compare_digest(mac.encode("utf-8", "replace"), expected.encode()):
            raise TokenInvalid("token signature is invalid")
        try:
            claims = json.loads(_unb64(payload))
            sub, inc, gen, exp = claims["sub"], claims["inc"], claims["gen"], claims["exp"]
        except (ValueError, KeyError, TypeError):
            raise TokenInvalid("token is malformed") from None
        if sub != sub_id:
            raise TokenInvalid("token is for another subscription")
        if now > exp:
            raise TokenExpired("token has expired")
        return TokenClaims(sub, inc, gen)
