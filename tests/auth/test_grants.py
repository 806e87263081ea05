"""Grants, principals and static token entries (`ds_trio.auth.grants`), and the authenticator."""

from __future__ import annotations

import pytest

from ds_trio.auth import Authenticator, hash_token, new_token
from ds_trio.auth.authenticator import AuthConfigError, parse_tokens
from ds_trio.auth.grants import GrantError, Principal, parse_grant, parse_static_token
from ds_trio.protocol.errors import Unauthorized


def test_admin_includes_write_and_read_but_write_not_read() -> None:
    admin = parse_grant(["admin"], ["**"])
    write = parse_grant("write", ["**"])
    assert admin.scopes == {"read", "write", "admin"}
    assert write.scopes == {"write"}


@pytest.mark.parametrize(
    ("patterns", "name", "allowed"),
    [
        (["events/**"], "events/a/b", True),
        (["events/**"], "eventsx/a", False),
        (["events/*"], "events/a/b", False),
        (["a", "b/*"], "b/c", True),
        (["**"], "__ds/subscriptions/s1", True),
    ],
)
def test_a_grant_allows_its_scopes_on_matching_names(
    patterns: list[str], name: str, allowed: bool
) -> None:
    grant = parse_grant(["read"], patterns)
    assert grant.allows("read", name) is allowed
    assert not grant.allows("write", name)


@pytest.mark.parametrize(
    ("scopes", "patterns"),
    [([], ["**"]), (["root"], ["**"]), (["read"], []), (["read"], ["/abs"]), (["read"], [3]), (5, ["**"])],
)
def test_bad_grants_are_refused(scopes: object, patterns: object) -> None:
    with pytest.raises(GrantError):
        parse_grant(scopes, patterns)


def test_principal_holds_a_scope_anywhere() -> None:
    principal = Principal("t", (parse_grant(["read"], ["a/*"]), parse_grant(["admin"], ["b/*"])))
    assert principal.holds("admin") and principal.allows("write", "b/x")
    assert not principal.allows("write", "a/x")


def test_token_entries_are_validated() -> None:
    digest = hash_token("secret")
    token = parse_static_token({"name": "ci", "sha256": digest.upper(), "scopes": ["read"]})
    assert token.sha256 == digest and token.grant.patterns == ("**",)
    for entry in (
        {"name": "ci", "sha256": "abc", "scopes": ["read"]},
        {"name": "", "sha256": digest, "scopes": ["read"]},
        {"name": "ci", "sha256": digest, "scopes": ["read"], "token": "plaintext"},
        "not a table",
    ):
        with pytest.raises(GrantError):
            parse_static_token(entry)  # type: ignore[arg-type]


def test_tokens_must_not_repeat_names_or_digests() -> None:
    one = {"name": "a", "sha256": hash_token("x"), "scopes": ["read"]}
    with pytest.raises(AuthConfigError, match="named a"):
        Authenticator.build(parse_tokens([one, {**one, "sha256": hash_token("y")}]), None)
    with pytest.raises(AuthConfigError, match="same sha256"):
        Authenticator.build(parse_tokens([one, {**one, "name": "b"}]), None)


def test_authenticate_finds_the_token_by_its_digest() -> None:
    secret = new_token()
    assert secret.startswith("dst_") and len(secret) > 40
    entry = {"name": "svc", "sha256": hash_token(secret), "scopes": ["write"], "streams": ["e/*"]}
    authenticator = Authenticator.build(parse_tokens([entry]), None)
    assert authenticator.enabled and not Authenticator().enabled
    principal = authenticator.authenticate(f"Bearer {secret}", 0)
    assert principal.name == "token:svc" and principal.allows("write", "e/1")
    assert authenticator.authenticate(f"bearer   {secret} ", 0).name == "token:svc"
    for header, invalid in ((None, False), ("Basic abc", False), ("Bearer", False),
                            ("Bearer nope", True), (f"Bearer {secret}x", True)):  # fmt: skip
        with pytest.raises(Unauthorized) as caught:
            authenticator.authenticate(header, 0)
        assert ("invalid_token" in caught.value.headers["WWW-Authenticate"]) is invalid
