"""Encoding subscriptions: the stored record (all state) and the API view (no secrets)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from .model import Link, Subscription, SubscriptionConfig, Wake

__all__ = ["decode_record", "encode_record", "public_view", "stream_views"]

RECORD_VERSION = 1


def encode_record(sub: Subscription) -> bytes:
    """Everything needed to resume the subscription after a restart."""
    wake = sub.wake
    return json.dumps(
        {
            "v": RECORD_VERSION,
            "id": sub.sub_id,
            "config": sub.config.to_json(),
            "incarnation": sub.incarnation,
            "created_at": sub.created_at,
            "base_url": sub.base_url,
            "links": [[l.path, l.explicit, l.acked] for l in sub.links],
            "generation": sub.generation,
            "wake": None
            if wake is None
            else {
                "id": wake.wake_id,
                "snapshot": [list(pair) for pair in wake.snapshot],
                "holder": wake.holder,
                "lease_expires_at": wake.lease_expires_at,
            },
            "attempts": sub.attempts,
            "next_attempt_at": sub.next_attempt_at,
            "removed": list(sub.removed),
        },
        separators=(",", ":"),
    ).encode()


def decode_record(raw: bytes) -> Subscription:
    """The inverse of `encode_record`. Raises ValueError for a damaged record."""
    data = json.loads(raw)
    if data.get("v") != RECORD_VERSION:
        raise ValueError(f"unknown subscription record version {data.get('v')!r}")
    c = data["config"]
    config = SubscriptionConfig(
        c["type"],
        c["pattern"],
        tuple(c["streams"]),
        (c["webhook"] or {}).get("url"),
        c["wake_stream"],
        c["lease_ttl_ms"],
        c["description"],
    )
    w = data["wake"]
    wake = None
    if w is not None:
        snapshot = tuple((path, tail) for path, tail in w["snapshot"])
        wake = Wake(w["id"], snapshot, w["holder"], w["lease_expires_at"])
    return Subscription(
        data["id"],
        config,
        data["incarnation"],
        data["created_at"],
        data["base_url"],
        tuple(Link(path, explicit, acked) for path, explicit, acked in data["links"]),
        data["generation"],
        wake,
        data["attempts"],
        data["next_attempt_at"],
        tuple(data.get("removed", ())),  # absent in records written before it existed
    )


def stream_views(sub: Subscription, tails: dict[str, str]) -> list[dict[str, Any]]:
    """Linked streams as webhook and claim bodies show them."""
    return [
        {
            "path": l.path,
            "link_type": l.link_type,
            "acked_offset": l.acked,
            "tail_offset": tails.get(l.path, l.acked),
            "has_pending": tails.get(l.path, l.acked) > l.acked,
        }
        for l in sub.links
    ]


def public_view(sub: Subscription, kid: str, stream_root: str) -> dict[str, Any]:
    """The subscription object of GET and PUT; never a secret or a token."""
    config = sub.config
    webhook = None
    if config.webhook_url is not None:
        jwks_url = f"{sub.base_url}{stream_root}/__ds/jwks.json"
        signing = {"alg": "ed25519", "kid": kid, "jwks_url": jwks_url}
        webhook = {"url": config.webhook_url, "signing": signing}
    created = datetime.fromtimestamp(sub.created_at, UTC).isoformat(timespec="milliseconds")
    return {
        "id": sub.sub_id,
        "subscription_id": sub.sub_id,
        "type": config.kind,
        "pattern": config.pattern,
        "streams": [
            {"path": l.path, "link_type": l.link_type, "acked_offset": l.acked} for l in sub.links
        ],
        "webhook": webhook,
        "wake_stream": config.wake_stream,
        "lease_ttl_ms": config.lease_ttl_ms,
        "created_at": created.replace("+00:00", "Z"),
        "status": sub.status,
        "description": config.description,
        "generation": sub.generation,
    }
