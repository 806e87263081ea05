"""Faults the fuzz campaign found, each reduced to a fixed request sequence.

Every test runs on both stores: the campaign also checks that they answer alike.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import trio

from ..conftest import RunningServer, start_server

OCTET = {"Content-Type": "application/octet-stream"}
LONGEST_ASCII = "x" * 1024  # the longest name: 1 KiB once decoded
LONGEST_ENCODED = "%C3%A9" * 512  # also 1 KiB decoded, but 3 KiB as a canonical name


@pytest.fixture(name="server", params=["memory", "lmdb"])
async def _server(
    request: pytest.FixtureRequest, nursery: trio.Nursery, tmp_path: Path
) -> RunningServer:
    if request.param == "lmdb":
        return await start_server(nursery, data_dir=str(tmp_path / "data"))
    return await start_server(nursery)


@pytest.mark.parametrize("name", [LONGEST_ASCII, f"deep/{LONGEST_ASCII[5:]}", LONGEST_ENCODED])
async def test_the_longest_names_work_on_every_store(
    server: RunningServer, client: httpx.AsyncClient, name: str
) -> None:
    # LMDB keys hold at most 511 bytes: these PUTs were 503 "storage failure".
    url = server.url(name)
    created = await client.put(url, headers=OCTET, content=b"ab")
    assert created.status_code == 201, created.text
    assert (await client.put(url, headers=OCTET)).status_code == 200  # found again, not re-created
    assert (await client.post(url, headers=OCTET, content=b"cd")).status_code == 204
    assert (await client.get(url)).content == b"abcd"
    assert (await client.head(url)).status_code == 200
    fork = await client.put(
        server.url("fork"), headers={"Stream-Forked-From": f"/v1/stream/{name}"}
    )
    assert fork.status_code == 201, fork.text
    assert (await client.get(server.url("fork"))).content == b"abcd"
    subscription = await client.put(
        f"{server.stream_root}/__ds/subscriptions/all",
        json={"type": "pull-wake", "pattern": "**", "wake_stream": "wake"},
    )
    assert subscription.status_code == 201
    assert name in [link["path"] for link in subscription.json()["streams"]]  # listed by name
    assert (await client.delete(url)).status_code == 204  # soft: the fork reads it
    assert (await client.delete(server.url("fork"))).status_code == 204
    assert (await client.head(url)).status_code == 404
    assert (await client.put(url, headers=OCTET)).status_code == 201


async def test_the_longest_names_expire_on_every_store(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    url = server.url(LONGEST_ENCODED)
    headers = {**OCTET, "Stream-Expires-At": "2000-01-01T00:00:00Z"}
    assert (await client.put(url, headers=headers)).status_code == 201
    assert (await client.head(url)).status_code == 404
    expired = await server.service.store.expire(server.service.clock())
    assert expired in ([], [LONGEST_ENCODED])


async def test_a_long_producer_id_is_an_ordinary_producer(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    # Producer-Id is part of an LMDB key: a 600-byte id was 503 "storage failure".
    url = server.url("s")
    assert (await client.put(url, headers=OCTET)).status_code == 201
    producer = {**OCTET, "Producer-Id": "p" * 600, "Producer-Epoch": "0", "Producer-Seq": "0"}
    assert (await client.post(url, headers=producer, content=b"a")).status_code == 200
    assert (await client.post(url, headers=producer, content=b"a")).status_code == 204  # a retry
    other = {**producer, "Producer-Id": "p" * 599 + "q"}  # differs only past any prefix kept
    assert (await client.post(url, headers=other, content=b"b")).status_code == 200
    assert (await client.get(url)).content == b"ab"


async def test_a_long_subscription_id_is_refused_alike(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    # The id is an LMDB key: a 600-byte id was 503 there and 201 in memory.
    body = {"type": "pull-wake", "pattern": "*", "wake_stream": "wake"}
    root = f"{server.stream_root}/__ds/subscriptions"
    refused = await client.put(f"{root}/{'s' * 600}", json=body)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "INVALID_REQUEST"
    assert (await client.put(f"{root}/{'s' * 256}", json=body)).status_code == 201


DEEP_JSON = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("PUT", "s", DEEP_JSON, id="put-deep-array"),
        pytest.param("PUT", "s", b'{"type": "pull-wake", "pattern": ' + DEEP_JSON + b"}", id="deep-field"),
        pytest.param("POST", "s/streams", DEEP_JSON, id="streams-deep-array"),
        pytest.param("POST", "s/claim", DEEP_JSON, id="claim-deep-array"),
    ],
)  # fmt: skip
async def test_deeply_nested_subscription_bodies_are_400(
    server: RunningServer, client: httpx.AsyncClient, method: str, path: str, body: bytes
) -> None:
    # json.loads raises RecursionError, not ValueError: these were 500s.
    url = f"{server.stream_root}/__ds/subscriptions/{path}"
    assert (await client.put(f"{server.stream_root}/__ds/subscriptions/s", json={
        "type": "pull-wake", "pattern": "*", "wake_stream": "wake"
    })).status_code == 201  # fmt: skip
    response = await client.request(method, url, content=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_REQUEST"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            {"type": "pull-wake", "streams": ["a\ud800"], "wake_stream": "w"}, id="stream"
        ),
        pytest.param(
            {"type": "pull-wake", "streams": ["a"], "wake_stream": "\udfff"}, id="wake-stream"
        ),
    ],
)
async def test_a_lone_surrogate_in_a_subscription_path_is_400(
    server: RunningServer, client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    # JSON may escape a lone surrogate ("\ud800"); it made quote() raise: a 500.
    url = f"{server.stream_root}/__ds/subscriptions/s"
    assert (await client.put(url, content=json.dumps(body).encode())).status_code == 400
    added = await client.put(url, json={"type": "pull-wake", "streams": ["a"], "wake_stream": "w"})
    assert added.status_code == 201
    streams = await client.post(f"{url}/streams", content=b'{"streams": ["\\ud800"]}')
    assert streams.status_code == 400


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/\ud800", "http://127.0.0.1:9/\x00", "http://127.0.0.1:9/a\nb",
     "http://127.0.0.1:9/\x7f", "http://127.0.0.1:9/" + "x" * 70_000],
)  # fmt: skip
async def test_a_webhook_url_httpx_cannot_send_to_is_refused(
    server: RunningServer, client: httpx.AsyncClient, url: str
) -> None:
    # Accepted at creation, such a URL made the first delivery raise outside
    # httpx.HTTPError (InvalidURL, UnicodeEncodeError), which ended the server.
    root = f"{server.stream_root}/__ds/subscriptions"
    body = {"type": "webhook", "streams": ["a"], "webhook": {"url": url}}
    response = await client.put(f"{root}/hook", content=json.dumps(body).encode())
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "WEBHOOK_URL_REJECTED"
    assert (await client.put(server.url("a"), headers=OCTET)).status_code == 201
    assert (await client.post(server.url("a"), headers=OCTET, content=b"x")).status_code == 204
    assert (await client.get(f"{server.base_url}/healthz")).status_code == 200
