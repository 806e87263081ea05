"""The ASGI exchange wrapper: readers are woken only once the writer's response is out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from ds_trio.config import Config
from ds_trio.http import StreamService, create_app
from ds_trio.live import StreamWatchers
from ds_trio.store import MemoryStore

Send = Callable[[dict[str, Any]], Awaitable[None]]


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"ds.test"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "extensions": {},
    }


async def _exchange(app: Any, method: str, path: str, body: bytes, send: Send) -> None:
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await app(_scope(method, path, headers), receive, send)


@pytest.fixture(name="service")
def _service() -> StreamService:
    return StreamService(Config(), MemoryStore(), StreamWatchers())


async def _ignore(message: dict[str, Any]) -> None:
    pass


async def test_an_append_wakes_readers_after_its_response_is_sent(service: StreamService) -> None:
    app = create_app(service)
    await _exchange(app, "PUT", "/v1/stream/s", b"", _ignore)
    seen: list[tuple[str, bool]] = []
    with service.watchers.watch("s") as change:

        async def send(message: dict[str, Any]) -> None:
            seen.append((message["type"], change.changed))
            await trio.lowlevel.checkpoint()

        await _exchange(app, "POST", "/v1/stream/s", b"hello", send)
        assert change.changed
    assert seen[0] == ("http.response.start", False)
    assert seen[-1] == ("http.response.body", False)
    assert not any(changed for _, changed in seen)


async def test_readers_are_woken_even_when_the_response_cannot_be_sent(
    service: StreamService,
) -> None:
    app = create_app(service)
    await _exchange(app, "PUT", "/v1/stream/s", b"", _ignore)

    async def broken(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            raise trio.BrokenResourceError("client went away")

    with service.watchers.watch("s") as change:
        with pytest.RaisesGroup(trio.BrokenResourceError, flatten_subgroups=True):
            await _exchange(app, "POST", "/v1/stream/s", b"hello", broken)
        assert change.changed
    result = await service.store.read("s", 0, 100, service.clock())
    assert result.pieces == (b"hello",)
