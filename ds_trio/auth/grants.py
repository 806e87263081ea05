"""Who may do what: scopes over stream-name globs, and the static tokens that carry them.

A grant gives scopes over the streams whose canonical names match one of its
globs (`*` is one segment, `**` any number, as in subscription patterns).
`admin` includes `write` and `read`; `write` does not include `read`, so an
ingest token can append without reading back. The reserved APIs are matched
as `__ds/subscriptions/<id>`.

Static tokens are kept as SHA-256 digests: they are random (see `new_token`),
so a fast hash is as good as a slow one, and the configuration never holds
a usable secret.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..protocol.paths import glob_covers, glob_match

__all__ = [
    "ADMIN",
    "READ",
    "SCOPES",
    "WRITE",
    "Grant",
    "GrantError",
    "Principal",
    "StaticToken",
    "check_unique",
    "hash_token",
    "new_token",
    "parse_grant",
    "parse_static_token",
]

READ: Final = "read"
WRITE: Final = "write"
ADMIN: Final = "admin"
SCOPES: Final = (READ, WRITE, ADMIN)
_IMPLIED: Final = {READ: {READ}, WRITE: {WRITE}, ADMIN: {READ, WRITE, ADMIN}}
TOKEN_PREFIX: Final = "dst_"
_DIGEST_RE: Final = re.compile(r"[0-9a-f]{64}")
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}")


class GrantError(ValueError):
    """A grant or token entry that cannot be used."""


@dataclass(frozen=True, slots=True)
class Grant:
    """Scopes over the streams matching any of `patterns`."""

    scopes: frozenset[str]
    patterns: tuple[str, ...]

    def allows(self, scope: str, name: str) -> bool:
        """Whether this grant gives `scope` on the stream (or reserved path) `name`."""
        return scope in self.scopes and any(glob_match(p, name) for p in self.patterns)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a name for logs and rate limits, and its grants."""

    name: str  # "token:<name>" or "jwt:<sub>"
    grants: tuple[Grant, ...]

    def allows(self, scope: str, name: str) -> bool:
        """Whether some grant gives `scope` on `name`."""
        return any(grant.allows(scope, name) for grant in self.grants)

    def holds(self, scope: str) -> bool:
        """Whether some grant gives `scope` on anything at all."""
        return any(scope in grant.scopes for grant in self.grants)

    def covers(self, scope: str, glob: str) -> bool:
        """Whether one grant gives `scope` on every name `glob` can match."""
        return any(
            scope in grant.scopes and any(glob_covers(p, glob) for p in grant.patterns)
            for grant in self.grants
        )


def parse_grant(scopes: Any, patterns: Any) -> Grant:
    """A grant from a list of scope names and a list of globs.

    Raises:
        GrantError: an unknown scope, no scopes, or a pattern that is not a string.
    """
    if isinstance(scopes, str):
        scopes = scopes.split()
    if not isinstance(scopes, list | tuple) or not scopes:
        raise GrantError(f"scopes must be a non-empty list of {', '.join(SCOPES)}")
    held: set[str] = set()
    for scope in scopes:
        if scope not in _IMPLIED:
            raise GrantError(f"unknown scope {scope!r} (known: {', '.join(SCOPES)})")
        held |= _IMPLIED[scope]
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, list | tuple) or not patterns:
        raise GrantError("streams must be a non-empty list of globs, e.g. [\"events/**\"]")
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern or pattern.startswith("/"):
            raise GrantError(f"stream glob must be a relative path like 'events/**': {pattern!r}")
    return Grant(frozenset(held), tuple(patterns))


def hash_token(token: str) -> str:
    """The hex SHA-256 digest a configuration stores for `token`."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random bearer token (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class StaticToken:
    """A configured bearer token: its name, digest and grant."""

    name: str
    sha256: str
    grant: Grant

    @property
    def principal(self) -> Principal:
        return Principal(f"token:{self.name}", (self.grant,))


_TOKEN_KEYS: Final = {"name", "sha256", "scopes", "streams"}


def parse_static_token(entry: Mapping[str, Any]) -> StaticToken:
    """A token from its configuration table: name, sha256, scopes, streams.

    Raises:
        GrantError: a missing or malformed field, or an unknown one.
    """
    if not isinstance(entry, Mapping):
        raise GrantError("each token must be a table of name, sha256, scopes, streams")
    unknown = set(entry) - _TOKEN_KEYS
    if unknown:
        raise GrantError(f"unknown token field(s): {', '.join(sorted(unknown))}")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise GrantError(f"token name must be 1-128 letters, digits or ._@:- : {name!r}")
    digest = entry.get("sha256")
    if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest.lower()):
        raise GrantError(f"token {name}: sha256 must be 64 hex digits (`ds-trio token` prints it)")
    try:
        grant = parse_grant(entry.get("scopes"), entry.get("streams", ["**"]))
    except GrantError as exc:
        raise GrantError(f"token {name}: {exc}") from None
    return StaticToken(name, digest.lower(), grant)


def check_unique(tokens: Iterable[StaticToken]) -> None:
    """Refuse two entries with one name or one digest.

    Raises:
        GrantError: a repeated name or digest.
    """
    names: set[str] = set()
    digests: set[str] = set()
    for token in tokens:
        if token.name in names:
            raise GrantError(f"two tokens are named {token.name}")
        if token.sha256 in digests:
            raise GrantError(f"tokens {token.name} and another have the same sha256")
        names.add(token.name)
        digests.add(token.sha256)
