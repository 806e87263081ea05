"""Webhook delivery against a real receiver on loopback: signatures, auto-ack,
callbacks and fencing, retry backoff."""

from __future__ import annotations

import httpx
import pytest
import trio

from ..conftest import RunningServer, start_server
from .helpers import append, create_stream, sub_url, verify_signature
from .receiver import start_receiver


async def _subscribe(client: httpx.AsyncClient, server: RunningServer, sub_id: str, url: str) -> dict:
    body = {"type": "webhook", "pattern": "jobs/*", "webhook": {"url": url}, "lease_ttl_ms": 5000}
    response = await client.put(sub_url(server, sub_id), json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def test_signature_verifies_and_done_auto_acks(
    nursery: trio.Nursery, server: RunningServer, client: httpx.AsyncClient
) -> None:
    receiver = await start_receiver(nursery, default=(200, {"done": True}))
    created = await _subscribe(client, server, "sig", receiver.url)
    jwks_response = await client.get(created["webhook"]["signing"]["jwks_url"])
    assert jwks_response.headers["content-type"].startswith("application/jwk-set+json")
    assert jwks_response.headers["cache-control"] == "public, max-age=300"

    await create_stream(client, server, "jobs/a", b'{"n":1}')
    delivery = await receiver.next()
    kid = verify_signature(jwks_response.json(), delivery.headers["webhook-signature"], delivery.body)
    assert kid == created["webhook"]["signing"]["kid"]
    [stream] = delivery.json["streams"]
    assert stream["path"] == "jobs/a" and stream["has_pending"]
    assert "callback_token" in delivery.json and "webhook_secret" not in created

    with trio.fail_after(5):
        while True:  # the auto-ack commits right after the receiver replies
            state = (await client.get(sub_url(server, "sig"))).json()
            if state["streams"][0]["acked_offset"] == stream["tail_offset"]:
                break
            await trio.sleep(0.01)
    assert state["status"] == "active"


async def test_tampered_body_fails_verification(
    nursery: trio.Nursery, server: RunningServer, client: httpx.AsyncClient
) -> None:
    receiver = await start_receiver(nursery, default=(200, {"done": True}))
    await _subscribe(client, server, "tamper", receiver.url)
    jwks = (await client.get(server.url("__ds/jwks.json"))).json()
    await create_stream(client, server, "jobs/t", b'{"n":1}')
    delivery = await receiver.next()
    from cryptography.exceptions import InvalidSignature

    with pytest.raises(InvalidSignature):
        verify_signature(jwks, delivery.headers["webhook-signature"], delivery.body + b" ")


async def test_callback_acks_then_stale_generation_and_wake_id_are_fenced(
    nursery: trio.Nursery, server: RunningServer, client: httpx.AsyncClient
) -> None:
    receiver = await start_receiver(nursery)  # replies {}: the wake stays in flight
    await _subscribe(client, server, "cb", receiver.url)
    await create_stream(client, server, "jobs/c", b'{"n":1}')
    first = (await receiver.next()).json
    auth = {"Authorization": f"Bearer {first['callback_token']}"}
    tail = first["streams"][0]["tail_offset"]

    bad = await client.post(first["callback_url"], json={"wake_id": first["wake_id"], "generation": first["generation"]}, headers={"Authorization": "Bearer forged.token"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "TOKEN_INVALID"
    wrong_wake = {"wake_id": "w_other", "generation": first["generation"]}
    response = await client.post(first["callback_url"], json=wrong_wake, headers=auth)
    assert response.status_code == 409 and response.json()["error"]["code"] == "FENCED"

    # A heartbeat with an ack keeps the wake; new data then shows up as next_wake after done.
    heartbeat = {"wake_id": first["wake_id"], "generation": first["generation"], "acks": [{"stream": "jobs/c", "offset": tail}]}
    response = await client.post(first["callback_url"], json=heartbeat, headers=auth)
    assert response.json() == {"ok": True, "next_wake": False}
    await append(client, server, "jobs/c", b'{"n":2}')
    done = {"wake_id": first["wake_id"], "generation": first["generation"], "done": True}
    response = await client.post(first["callback_url"], json=done, headers=auth)
    assert response.json() == {"ok": True, "next_wake": True}

    second = (await receiver.next()).json
    assert second["generation"] == first["generation"] + 1 and second["wake_id"] != first["wake_id"]
    stale = await client.post(first["callback_url"], json=done, headers=auth)
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "FENCED"
    # The old token with the new wake's ids is fenced by its own generation.
    mixed = {"wake_id": second["wake_id"], "generation": second["generation"], "done": True}
    stale = await client.post(first["callback_url"], json=mixed, headers=auth)
    assert stale.json()["error"]["code"] == "FENCED"

    regress = {"wake_id": second["wake_id"], "generation": second["generation"], "acks": [{"stream": "jobs/c", "offset": "0000000000000000_0000000000000000"}]}
    response = await client.post(second["callback_url"], json=regress, headers={"Authorization": f"Bearer {second['callback_token']}"})
    assert response.status_code == 409 and response.json()["error"]["code"] == "INVALID_OFFSET"


async def test_deleted_subscription_rejects_in_flight_callbacks(
    nursery: trio.Nursery, server: RunningServer, client: httpx.AsyncClient
) -> None:
    receiver = await start_receiver(nursery)
    await _subscribe(client, server, "gone", receiver.url)
    await create_stream(client, server, "jobs/g", b'{"n":1}')
    wake = (await receiver.next()).json
    assert (await client.delete(sub_url(server, "gone"))).status_code == 204
    await _subscribe(client, server, "gone", receiver.url)  # re-created: a new incarnation
    body = {"wake_id": wake["wake_id"], "generation": wake["generation"], "done": True}
    response = await client.post(wake["callback_url"], json=body, headers={"Authorization": f"Bearer {wake['callback_token']}"})
    assert response.status_code == 409 and response.json()["error"]["code"] == "FENCED"


async def test_failed_delivery_retries_with_backoff(nursery: trio.Nursery, client: httpx.AsyncClient) -> None:
    server = await start_server(nursery, webhook_retry_base=0.2, webhook_retry_max=0.3)
    receiver = await start_receiver(nursery, replies=[(500, {}), (503, {})], default=(200, {"done": True}))
    await _subscribe(client, server, "retry", receiver.url)
    await create_stream(client, server, "jobs/r", b'{"n":1}')
    first = (await receiver.next()).json
    with trio.fail_after(5):
        while (await client.get(sub_url(server, "retry"))).json()["status"] != "failed":
            await trio.sleep(0.01)
    second = (await receiver.next()).json
    third = (await receiver.next()).json
    assert first["wake_id"] == second["wake_id"] == third["wake_id"]  # the same wake, retried
    gaps = [b - a for a, b in zip(receiver.arrivals, receiver.arrivals[1:])]
    assert 0.2 * 0.8 <= gaps[0] and 0.3 * 0.8 <= gaps[1] < 2  # base, then doubled but capped
    with trio.fail_after(5):
        while (state := (await client.get(sub_url(server, "retry"))).json())["status"] != "active":
            await trio.sleep(0.01)
    assert state["streams"][0]["acked_offset"] == first["streams"][0]["tail_offset"]
