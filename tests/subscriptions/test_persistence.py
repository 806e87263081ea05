"""Subscriptions, acked offsets and the signing key survive an LMDB restart."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import trio

from ds_trio.subscriptions.signing import KEY_FILE

from ..conftest import start_server
from .helpers import append, create_stream, sub_url
from .receiver import start_receiver


async def test_state_survives_restart(nursery: trio.Nursery, client: httpx.AsyncClient, tmp_path: Path) -> None:
    data = tmp_path / "data"
    receiver = await start_receiver(nursery, default=(200, {"done": True}))
    async with trio.open_nursery() as first_run:
        server = await start_server(first_run, data_dir=data)
        body = {"type": "webhook", "pattern": "p/*", "streams": ["manual/x"], "webhook": {"url": receiver.url}}
        created = (await client.put(sub_url(server, "keep"), json=body)).json()
        await create_stream(client, server, "p/1", b'{"n":1}')
        wake = (await receiver.next()).json
        with trio.fail_after(5):
            while (await client.get(sub_url(server, "keep"))).json()["streams"][1]["acked_offset"] != wake["streams"][1]["tail_offset"]:
                await trio.sleep(0.01)
        before = (await client.get(sub_url(server, "keep"))).json()
        server.stop.set()
    assert stat.S_IMODE((data / KEY_FILE).stat().st_mode) == 0o600

    async with trio.open_nursery() as second_run:
        server = await start_server(second_run, data_dir=data)
        after = (await client.get(sub_url(server, "keep"))).json()
        assert after["streams"] == before["streams"]
        assert after["generation"] == before["generation"]
        assert after["webhook"]["signing"]["kid"] == created["webhook"]["signing"]["kid"]
        again = await client.put(sub_url(server, "keep"), json=body)
        assert again.status_code == 200  # the same configuration re-confirms
        await append(client, server, "p/1", b'{"n":2}')
        wake2 = (await receiver.next()).json
        assert wake2["generation"] == wake["generation"] + 1
        acked = {s["path"]: s["acked_offset"] for s in wake2["streams"]}
        assert acked["p/1"] == wake["streams"][1]["tail_offset"]  # never moved backwards
        server.stop.set()


async def test_a_scheduled_retry_is_honoured_after_a_restart(
    nursery: trio.Nursery, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    receiver = await start_receiver(nursery, replies=[(500, {})], default=(200, {"done": True}))
    body = {"type": "webhook", "pattern": "r/*", "webhook": {"url": receiver.url}}
    settings = {"data_dir": data, "webhook_retry_base": 2.0, "webhook_retry_max": 2.0}
    async with trio.open_nursery() as first_run:
        server = await start_server(first_run, **settings)
        assert (await client.put(sub_url(server, "again"), json=body)).status_code == 201
        await create_stream(client, server, "r/1", b'{"n":1}')
        first = (await receiver.next()).json  # answered 500: a retry is scheduled
        with trio.fail_after(5):
            while (await client.get(sub_url(server, "again"))).json()["status"] != "failed":
                await trio.sleep(0.01)
        server.stop.set()  # well before the retry is due
    assert len(receiver.arrivals) == 1

    async with trio.open_nursery() as second_run:
        server = await start_server(second_run, **settings)
        assert (await client.get(sub_url(server, "again"))).json()["status"] == "failed"
        with trio.fail_after(10):
            retried = (await receiver.next()).json
        assert retried["wake_id"] == first["wake_id"]  # the same wake, delivered again
        assert receiver.arrivals[1] - receiver.arrivals[0] >= 2.0 * 0.8  # on its schedule
        with trio.fail_after(5):
            while (state := (await client.get(sub_url(server, "again"))).json())["status"] != "active":
                await trio.sleep(0.01)
        assert state["streams"][0]["acked_offset"] == first["streams"][0]["tail_offset"]
        server.stop.set()
