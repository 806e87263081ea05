"""Shared fixtures.

Rules for every test here: loopback addresses only, port 0 only, every wait
bounded by `trio.fail_after` or a subprocess timeout, and no sleeps standing in
for events (wait on the watcher statistics or a response instead).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial

import httpx
import pytest
import trio

from ds_trio.config import Config
from ds_trio.http import StreamService
from ds_trio.server import serve

TEST_LONG_POLL_TIMEOUT = 0.5  # seconds, as the upstream servers use under test


@dataclass
class RunningServer:
    """A ds_trio server started inside the test's nursery."""

    service: StreamService
    base_url: str  # e.g. http://127.0.0.1:PORT
    stop: trio.Event = field(default_factory=trio.Event)  # set it to shut the server down

    @property
    def stream_root(self) -> str:
        return self.base_url + self.service.config.stream_root

    def url(self, name: str) -> str:
        return f"{self.stream_root}/{name}"


async def start_server(nursery: trio.Nursery, **settings: object) -> RunningServer:
    """Start a server on an ephemeral loopback port with `settings` applied."""
    config = Config(
        port=0, long_poll_timeout=TEST_LONG_POLL_TIMEOUT, webhook_allow_http_loopback=True
    ).with_changes(**settings)
    stop = trio.Event()
    service: StreamService = await nursery.start(partial(serve, config, shutdown_trigger=stop.wait))
    return RunningServer(service, service.bound_urls[0], stop)


@pytest.fixture(name="server")
async def _server(nursery: trio.Nursery) -> RunningServer:
    return await start_server(nursery)


@pytest.fixture(name="client")
async def _client() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=100)
    async with httpx.AsyncClient(timeout=10.0, limits=limits) as client:
        yield client
