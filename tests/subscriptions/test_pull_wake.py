"""Pull-wake: wake events, the claim race, acks, release, lease expiry."""

from __future__ import annotations

import json

import httpx
import trio

from ..conftest import RunningServer
from .helpers import append, create_stream, sub_url


async def _setup(client: httpx.AsyncClient, server: RunningServer, sub_id: str, lease_ms: int = 30000) -> None:
    await create_stream(client, server, "wakes", b"[]")
    body = {"type": "pull-wake", "pattern": "tasks/**", "wake_stream": "wakes", "lease_ttl_ms": lease_ms}
    response = await client.put(sub_url(server, sub_id), json=body)
    assert response.status_code == 201, response.text


async def _wake_events(client: httpx.AsyncClient, server: RunningServer, count: int) -> list[dict]:
    """Wait (long-poll) until the wake stream holds `count` events."""
    offset = "-1"
    events: list[dict] = []
    with trio.fail_after(5):
        while len(events) < count:
            response = await client.get(server.url("wakes"), params={"offset": offset, "live": "long-poll"})
            if response.status_code == 200:
                events += json.loads(response.content)
            offset = response.headers["Stream-Next-Offset"]
    return events


async def test_wake_event_then_two_workers_race_for_the_claim(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    await _setup(client, server, "race")
    await create_stream(client, server, "tasks/x/1", b'{"n":1}')
    [event] = await _wake_events(client, server, 1)
    assert event["type"] == "wake" and event["subscription_id"] == "race" and event["stream"] == "tasks/x/1"

    results: dict[str, httpx.Response] = {}

    async def claim(worker: str) -> None:
        results[worker] = await client.post(sub_url(server, "race", "claim"), json={"worker": worker})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(claim, "w1")
        nursery.start_soon(claim, "w2")
    statuses = sorted(r.status_code for r in results.values())
    assert statuses == [200, 409]
    winner = next(w for w, r in results.items() if r.status_code == 200)
    loser = results["w2" if winner == "w1" else "w1"].json()["error"]
    assert loser["code"] == "ALREADY_CLAIMED" and loser["current_holder"] == winner
    claim_body = results[winner].json()
    assert loser["generation"] == claim_body["generation"] == event["generation"]

    token = {"Authorization": f"Bearer {claim_body['token']}"}
    tail = claim_body["streams"][0]["tail_offset"]
    ack = {"wake_id": claim_body["wake_id"], "generation": claim_body["generation"], "acks": [{"stream": "tasks/x/1", "offset": tail}], "done": True}
    response = await client.post(sub_url(server, "race", "ack"), json=ack, headers=token)
    assert response.json() == {"ok": True, "next_wake": False}
    response = await client.post(sub_url(server, "race", "claim"), json={"worker": "w1"})
    assert response.status_code == 409 and response.json()["error"]["code"] == "NO_PENDING_WORK"
    stale = await client.post(sub_url(server, "race", "release"), json=ack, headers=token)
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "FENCED"


async def test_release_with_pending_work_writes_another_wake(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    await _setup(client, server, "rel")
    await create_stream(client, server, "tasks/r", b'{"n":1}')
    await _wake_events(client, server, 1)
    claim = (await client.post(sub_url(server, "rel", "claim"), json={"worker": "w"})).json()
    body = {"wake_id": claim["wake_id"], "generation": claim["generation"]}
    response = await client.post(sub_url(server, "rel", "release"), json=body, headers={"Authorization": f"Bearer {claim['token']}"})
    assert response.status_code == 204
    events = await _wake_events(client, server, 2)
    assert events[1]["generation"] == claim["generation"] + 1


async def test_lease_expiry_clears_the_holder_and_rewakes(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    await _setup(client, server, "lease", lease_ms=1000)  # the shortest lease the spec allows
    await create_stream(client, server, "tasks/l", b'{"n":1}')
    await _wake_events(client, server, 1)
    claim = (await client.post(sub_url(server, "lease", "claim"), json={"worker": "slow"})).json()
    events = await _wake_events(client, server, 2)  # written when the lease lapses
    assert events[1]["generation"] == claim["generation"] + 1
    late = {"wake_id": claim["wake_id"], "generation": claim["generation"], "done": True}
    response = await client.post(sub_url(server, "lease", "ack"), json=late, headers={"Authorization": f"Bearer {claim['token']}"})
    assert response.status_code == 409 and response.json()["error"]["code"] == "FENCED"
    again = await client.post(sub_url(server, "lease", "claim"), json={"worker": "fast"})
    assert again.status_code == 200 and again.json()["generation"] == claim["generation"] + 1


async def test_heartbeat_extends_the_lease(server: RunningServer, client: httpx.AsyncClient) -> None:
    await _setup(client, server, "beat", lease_ms=1000)
    await create_stream(client, server, "tasks/b", b'{"n":1}')
    await _wake_events(client, server, 1)
    claim = (await client.post(sub_url(server, "beat", "claim"), json={"worker": "w"})).json()
    auth = {"Authorization": f"Bearer {claim['token']}"}
    beat = {"wake_id": claim["wake_id"], "generation": claim["generation"]}
    deadline = trio.current_time() + 1.6  # beyond one lease
    while trio.current_time() < deadline:
        response = await client.post(sub_url(server, "beat", "ack"), json=beat, headers=auth)
        assert response.json() == {"ok": True, "next_wake": False}
        with trio.move_on_after(0.3):  # heartbeat interval, well inside the lease
            await trio.sleep_forever()
    other = await client.post(sub_url(server, "beat", "claim"), json={"worker": "other"})
    assert other.json()["error"]["current_holder"] == "w"
    await append(client, server, "tasks/b", b'{"n":2}')
