"""Start-up repairs what a SIGKILL between two commits leaves behind.

Each test builds the post-crash state directly in an LMDB store (the state the
server leaves when killed between the two commits), then starts a server on it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import trio

from ds_trio.protocol.streams import AppendRequest, CreateRequest
from ds_trio.store.lmdb import LmdbStore
from ds_trio.subscriptions.codec import decode_record, encode_record

from ..conftest import start_server
from .helpers import create_stream, sub_url

JSON = "application/json"
ZERO = "0000000000000000_0000000000000000"


async def _prepare(client: httpx.AsyncClient, data: Path, body: dict, streams: dict[str, bytes]) -> None:
    """A first run: create `streams`, then the subscription `s` with `body`."""
    async with trio.open_nursery() as run:
        server = await start_server(run, data_dir=data)
        for name, content in streams.items():
            await create_stream(client, server, name, content)
        response = await client.put(sub_url(server, "s"), json=body)
        assert response.status_code == 201, response.text
        server.stop.set()


async def _create_behind_the_server(data: Path, name: str) -> None:
    """A stream whose create committed while its link commit did not (killed in between)."""
    store = await LmdbStore.open(data)
    try:
        request = CreateRequest(
            content_type=JSON, media_type=JSON, ttl=None, expires_at=None, closed=False, records=(b'{"task":1}',)
        )
        await store.create(name, request, time.time())
    finally:
        await store.aclose()


async def test_unlinked_matching_stream_is_linked_from_zero(client: httpx.AsyncClient, tmp_path: Path) -> None:
    data = tmp_path / "data"
    body = {"type": "pull-wake", "pattern": "jobs/*", "wake_stream": "wakes"}
    await _prepare(client, data, body, {"wakes": b"[]", "jobs/old": b'[{"n":0}]'})
    await _create_behind_the_server(data, "jobs/x")
    await _create_behind_the_server(data, "other/y")  # does not match

    async with trio.open_nursery() as run:
        server = await start_server(run, data_dir=data)
        # reconciled and committed by load(), before serving: the stored record has the link
        record = decode_record((await server.service.store.load_subscriptions())["s"])
        assert {l.path: l.acked for l in record.links}["jobs/x"] == ZERO
        view = (await client.get(sub_url(server, "s"))).json()
        links = {s["path"]: s for s in view["streams"]}
        assert set(links) == {"jobs/old", "jobs/x"}
        assert links["jobs/x"] == {"path": "jobs/x", "link_type": "glob", "acked_offset": ZERO}
        assert links["jobs/old"]["acked_offset"] != ZERO  # linked at its tail on creation, untouched
        claim = await client.post(sub_url(server, "s", "claim"), json={"worker": "w"})
        assert claim.status_code == 200, claim.text
        pending = [s["path"] for s in claim.json()["streams"] if s["has_pending"]]
        assert pending == ["jobs/x"]
        server.stop.set()


async def test_reconcile_respects_explicit_removal(client: httpx.AsyncClient, tmp_path: Path) -> None:
    data = tmp_path / "data"
    body = {"type": "pull-wake", "pattern": "jobs/*", "wake_stream": "wakes"}
    await _prepare(client, data, body, {"wakes": b"[]"})
    async with trio.open_nursery() as run:
        server = await start_server(run, data_dir=data)
        response = await client.delete(sub_url(server, "s", "streams/jobs%2Fgone"))
        assert response.status_code in (200, 204), response.text
        server.stop.set()
    await _create_behind_the_server(data, "jobs/gone")
    await _create_behind_the_server(data, "jobs/kept")
    async with trio.open_nursery() as run:
        server = await start_server(run, data_dir=data)
        view = (await client.get(sub_url(server, "s"))).json()
        assert [s["path"] for s in view["streams"]] == ["jobs/kept"]
        server.stop.set()


def test_old_records_decode_without_removals() -> None:
    from ds_trio.subscriptions.model import SubscriptionConfig, Subscription

    config = SubscriptionConfig("pull-wake", "a/*", (), None, "w", 1000, None)
    raw = json.loads(encode_record(Subscription("s", config, "i", 0.0, "http://x")))
    del raw["removed"]
    assert decode_record(json.dumps(raw).encode()).removed == ()


async def test_lost_wake_event_is_rewritten(client: httpx.AsyncClient, tmp_path: Path) -> None:
    data = tmp_path / "data"
    body = {"type": "pull-wake", "pattern": "jobs/*", "wake_stream": "wakes", "lease_ttl_ms": 1000}
    await _prepare(client, data, body, {"wakes": b"[]", "jobs/a": b"[]"})
    # _evaluate committed a new wake (generation bumped, no holder) and was killed before the append.
    store = await LmdbStore.open(data)
    try:
        await store.append("jobs/a", AppendRequest(JSON, (b'{"task":1}',)), time.time())
        sub = decode_record((await store.load_subscriptions())["s"])
        tails = {"jobs/a": (await store.head("jobs/a", time.time())).tail_offset}
        await store.save_subscription("s", encode_record(sub.issue_wake(tails, "w_lost", time.time())))
    finally:
        await store.aclose()
    async with trio.open_nursery() as run:
        server = await start_server(run, data_dir=data)
        events: list[dict] = []
        offset = "-1"
        with trio.fail_after(5):
            while not events:
                response = await client.get(server.url("wakes"), params={"offset": offset, "live": "long-poll"})
                if response.status_code == 200:
                    events += json.loads(response.content)
                offset = response.headers["Stream-Next-Offset"]
        assert events == [
            {"type": "wake", "subscription_id": "s", "stream": "jobs/a", "generation": 1, "ts": events[0]["ts"]}
        ]
        claim = await client.post(sub_url(server, "s", "claim"), json={"worker": "w"})
        assert claim.status_code == 200, claim.text
        assert (claim.json()["wake_id"], claim.json()["generation"]) == ("w_lost", 1)
        server.stop.set()


async def test_failed_wake_append_is_retried(client: httpx.AsyncClient, tmp_path: Path) -> None:
    """The wake stream is missing when the wake is issued; the event lands once it exists."""
    async with trio.open_nursery() as run:
        server = await start_server(run, data_dir=tmp_path / "data", webhook_retry_base=0.05, webhook_retry_max=0.2)
        body = {"type": "pull-wake", "pattern": "jobs/*", "wake_stream": "wakes"}
        assert (await client.put(sub_url(server, "s"), json=body)).status_code == 201
        await create_stream(client, server, "jobs/a", b'[{"task":1}]')  # wakes: 404 for now
        with trio.fail_after(5):
            while (await client.get(sub_url(server, "s"))).json()["generation"] != 1:
                await trio.sleep(0.01)
        await trio.sleep(0.1)  # a few failed attempts
        await create_stream(client, server, "wakes", b"[]")
        with trio.fail_after(5):
            while True:
                response = await client.get(server.url("wakes"), params={"offset": "-1"})
                events = json.loads(response.content)
                if events:
                    break
                await trio.sleep(0.02)
        assert [(e["stream"], e["generation"]) for e in events] == [("jobs/a", 1)]
        server.stop.set()
