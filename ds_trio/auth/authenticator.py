"""Turning a request's `Authorization` header into a `Principal`, or refusing it."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ..protocol.errors import Unauthorized
from .grants import (
    GrantError,
    Principal,
    StaticToken,
    check_unique,
    hash_token,
    parse_grant,
    parse_static_token,
)
from .jwt import JwtConfigError, JwtError, JwtVerifier

__all__ = [
    "AuthConfigError",
    "Authenticator",
    "load_jwt_verifier",
    "parse_tokens",
    "read_tokens_file",
]

MAX_CREDENTIAL_CHARS: Final = 8192


class AuthConfigError(ValueError):
    """Access-control settings that cannot be used."""


@dataclass(frozen=True, slots=True)
class Authenticator:
    """Static tokens (by digest) and an optional JWT verifier; off when it has neither."""

    tokens: Mapping[str, StaticToken] = field(default_factory=dict)
    jwt: JwtVerifier | None = None
    streams_claim: str = "streams"  # the JWT claim listing the stream globs

    @classmethod
    def build(
        cls, tokens: Iterable[StaticToken], jwt: JwtVerifier | None, streams_claim: str = "streams"
    ) -> Authenticator:
        """An authenticator for `tokens` and `jwt`.

        Raises:
            AuthConfigError: two tokens share a name or a digest.
        """
        tokens = list(tokens)
        try:
            check_unique(tokens)
        except GrantError as exc:
            raise AuthConfigError(str(exc)) from None
        return cls({t.sha256: t for t in tokens}, jwt, streams_claim)

    @property
    def enabled(self) -> bool:
        """Whether requests must carry credentials at all."""
        return bool(self.tokens) or self.jwt is not None

    def authenticate(self, authorization: str | None, now: float) -> Principal:
        """The caller named by `authorization` (the header's value).

        Raises:
            Unauthorized: no bearer credentials, or ones that are not valid now.
        """
        if authorization is None:
            raise Unauthorized("credentials required", invalid=False)
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise Unauthorized("use Authorization: Bearer <token>", invalid=False)
        if len(credential) > MAX_CREDENTIAL_CHARS:
            raise Unauthorized("token too long", invalid=True)
        if credential.count(".") == 2 and self.jwt is not None:
            return self._from_jwt(credential, now)
        token = self.tokens.get(hash_token(credential))
        if token is None:
            raise Unauthorized("unknown token", invalid=True)
        return token.principal

    def _from_jwt(self, credential: str, now: float) -> Principal:
        assert self.jwt is not None
        try:
            claims = self.jwt.verify(credential, now)
        except JwtError as exc:
            raise Unauthorized(str(exc), invalid=True) from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthorized("token has no sub", invalid=True)
        try:
            grant = parse_grant(claims.get("scope"), claims.get(self.streams_claim))
        except GrantError:
            raise Unauthorized(
                f"token needs a scope and a {self.streams_claim} claim", invalid=True
            ) from None
        return Principal(f"jwt:{subject}", (grant,))


def parse_tokens(entries: Any, where: str = "tokens") -> list[StaticToken]:
    """Static tokens from a list of tables (name, sha256, scopes, streams).

    Raises:
        AuthConfigError: not a list of valid entries.
    """
    if not isinstance(entries, list | tuple):
        raise AuthConfigError(f"{where} must be a list of tables ([[tokens]] in TOML)")
    try:
        return [parse_static_token(entry) for entry in entries]
    except GrantError as exc:
        raise AuthConfigError(f"{where}: {exc}") from None


def read_tokens_file(path: Path) -> list[StaticToken]:
    """The `[[tokens]]` tables of a TOML file.

    Raises:
        AuthConfigError: the file cannot be read, or holds anything else.
    """
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise AuthConfigError(f"cannot read tokens file {path}: {exc}") from None
    unknown = set(document) - {"tokens"}
    if unknown:
        raise AuthConfigError(f"{path}: only [[tokens]] tables belong here, not {sorted(unknown)}")
    return parse_tokens(document.get("tokens", []), str(path))


def load_jwt_verifier(
    *,
    public_key_file: Path | None,
    jwks_file: Path | None,
    audience: str | None,
    issuer: str | None,
) -> JwtVerifier | None:
    """A verifier for the configured key file, or None when JWTs are not configured.

    Raises:
        AuthConfigError: an unreadable or unusable key file, or no audience.
    """
    path = public_key_file or jwks_file
    if path is None:
        return None
    if not audience:
        raise AuthConfigError("jwt_audience is required to accept JWTs")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AuthConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if public_key_file is not None:
            return JwtVerifier.from_pem(data, audience=audience, issuer=issuer)
        try:
            jwks = json.loads(data)
        except ValueError:
            raise AuthConfigError(f"{path} is not JSON (a JWK Set)") from None
        return JwtVerifier.from_jwks(jwks, audience=audience, issuer=issuer)
    except (JwtConfigError, JwtError) as exc:
        raise AuthConfigError(f"{path}: {exc}") from None
