"""The pure subscription model: globs, config digests, wakes, fencing, acks, tokens."""

from __future__ import annotations

import pytest

from ds_trio.protocol.offsets import format_offset
from ds_trio.subscriptions.codec import decode_record, encode_record
from ds_trio.subscriptions.errors import (
    AckOffsetInvalid,
    AlreadyClaimed,
    Fenced,
    InvalidSubscriptionRequest,
    TokenExpired,
    TokenInvalid,
)
from ds_trio.subscriptions.model import ZERO, Subscription, backoff_delay, parse_config
from ds_trio.subscriptions.signing import TOKEN_TTL, Signer, load_or_create_key


def _config(**changes: object) -> dict:
    body = {"type": "pull-wake", "pattern": "e/*", "wake_stream": "w"}
    body.update(changes)
    return body


def test_digest_ignores_order_and_defaults() -> None:
    a = parse_config(_config(streams=["b", "a", "a"]), str)
    b = parse_config(_config(streams=["a", "b"], lease_ttl_ms=30000), str)
    c = parse_config(_config(streams=["a", "b"], lease_ttl_ms=31000), str)
    assert a.digest == b.digest != c.digest


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"type": "queue"},
        _config(pattern=None),
        _config(lease_ttl_ms=999),
        _config(lease_ttl_ms=600_001),
        _config(lease_ttl_ms=True),
        _config(wake_stream=None),
        {"type": "webhook", "pattern": "e/*"},
        _config(streams="a"),
    ],
)
def test_invalid_configs(body: object) -> None:
    with pytest.raises(InvalidSubscriptionRequest):
        parse_config(body, str)


def _sub(**config: object) -> Subscription:
    return Subscription("s", parse_config(_config(**config), str), "inc", 0.0, "http://h")


T1, T2 = format_offset(10), format_offset(20)


def test_wake_claim_fence_ack_cycle() -> None:
    sub = _sub().link_discovered("e/1").link_discovered("w").link_discovered("x/1")
    assert [l.path for l in sub.links] == ["e/1"]  # the wake stream and non-matches are not linked
    tails = {"e/1": T1}
    assert sub.pending(tails) == ["e/1"]
    sub = sub.issue_wake(tails, "w_1", now=100.0)
    assert sub.generation == 1 and sub.wake is not None and sub.wake.lease_expires_at is None
    sub = sub.claim("a", now=100.0)
    with pytest.raises(AlreadyClaimed) as info:
        sub.claim("b", now=100.0)
    assert info.value.extra == {"current_holder": "a", "generation": 1}
    assert sub.lease_expired(130.0) and not sub.lease_expired(129.9)
    for token_gen, gen, wake_id in [(0, 1, "w_1"), (1, 0, "w_1"), (1, 1, "w_0"), (1, 1, None)]:
        with pytest.raises(Fenced):
            sub.fence(token_gen, gen, wake_id)
    sub.fence(1, 1, "w_1")
    for offset in ["-1", "junk", T2]:
        with pytest.raises(AckOffsetInvalid):
            sub.apply_acks([("e/1", offset)], tails)
    with pytest.raises(AckOffsetInvalid):
        sub.apply_acks([("nope", T1)], tails)
    sub = sub.apply_acks([("e/1", T1)], tails).end_wake()
    with pytest.raises(AckOffsetInvalid):  # never backwards
        sub.apply_acks([("e/1", ZERO)], tails)
    assert sub.pending(tails) == [] and sub.wake is None and sub.generation == 1
    with pytest.raises(Fenced):
        sub.fence(1, 1, "w_1")


def test_explicit_links_take_precedence_and_glob_survives_removal() -> None:
    sub = _sub().link_discovered("e/1").add_explicit({"e/1": T1, "m/1": None})
    assert {l.path: l.link_type for l in sub.links} == {"e/1": "explicit", "m/1": "explicit"}
    assert sub.link("e/1").acked == ZERO and sub.link("m/1").acked == ZERO  # existing link kept its cursor
    sub = sub.remove_explicit("e/1").remove_explicit("m/1").remove_explicit("absent")
    assert {l.path: l.link_type for l in sub.links} == {"e/1": "glob"}


def test_webhook_failure_schedules_retry_and_marks_failed() -> None:
    sub = Subscription("s", parse_config({"type": "webhook", "pattern": "e/*", "webhook": {"url": "https://x"}}, str), "i", 0.0, "b")
    sub = sub.link_discovered("e/1").issue_wake({"e/1": T1}, "w", now=10.0)
    assert sub.next_attempt_at == 10.0 and sub.status == "active"
    sub = sub.delivery_failed(now=11.0, delay=2.0)
    assert sub.status == "failed" and sub.next_attempt_at == 13.0 and sub.wake.lease_expires_at == 43.0
    sub = sub.delivered(now=14.0)
    assert sub.status == "active" and sub.next_attempt_at is None
    auto = sub.ack_snapshot()
    assert auto.link("e/1").acked == T1
    assert decode_record(encode_record(sub)) == sub


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [(1, 0.5, 1.0), (2, 0.5, 2.0), (3, 0.0, 3.2), (3, 1.0, 4.8), (7, 0.5, 60.0), (50, 0.5, 60.0)],
)
def test_backoff(attempt: int, rand: float, expected: float) -> None:
    assert backoff_delay(attempt, 1.0, 60.0, rand) == pytest.approx(expected)


def test_tokens_are_scoped_signed_and_expire() -> None:
    signer = Signer(load_or_create_key(None))
    token = signer.mint_token("s", "inc", 3, now=1000.0)
    claims = signer.verify_token(token, "s", now=1000.0)
    assert (claims.sub_id, claims.incarnation, claims.generation) == ("s", "inc", 3)
    with pytest.raises(TokenInvalid):
        signer.verify_token(token, "other", now=1000.0)
    with pytest.raises(TokenInvalid):
        signer.verify_token(token[:-2] + "xx", "s", now=1000.0)
    with pytest.raises(TokenInvalid):
        Signer(load_or_create_key(None)).verify_token(token, "s", now=1000.0)
    with pytest.raises(TokenExpired):
        signer.verify_token(token, "s", now=1001.0 + TOKEN_TTL)
    assert signer.kid.startswith("ds_") and signer.jwks()["keys"][0]["kid"] == signer.kid
