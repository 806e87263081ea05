"""Shared helpers for the subscription tests."""

from __future__ import annotations

import base64
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..conftest import RunningServer


def sub_url(server: RunningServer, sub_id: str, action: str = "") -> str:
    return server.url(f"__ds/subscriptions/{sub_id}" + (f"/{action}" if action else ""))


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_signature(jwks: dict[str, Any], header: str, body: bytes) -> str:
    """Check a Webhook-Signature against the JWKS; returns the kid."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    key = next(k for k in jwks["keys"] if k["kid"] == fields["kid"])
    public = Ed25519PublicKey.from_public_bytes(unb64(key["x"]))
    public.verify(unb64(fields["ed25519"]), fields["t"].encode() + b"." + body)  # raises if forged
    return fields["kid"]


async def create_stream(client: httpx.AsyncClient, server: RunningServer, name: str, body: bytes = b"") -> None:
    response = await client.put(
        server.url(name), content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text


async def append(client: httpx.AsyncClient, server: RunningServer, name: str, body: bytes) -> str:
    response = await client.post(server.url(name), content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 204, response.text
    return response.headers["Stream-Next-Offset"]
