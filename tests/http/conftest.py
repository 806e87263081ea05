"""Fixtures for the HTTP integration tests: a real Hypercorn server on port 0.

These override the root `server` and `client` fixtures. The server object
keeps its own shutdown event (`server.stop`), and every response any test
receives, through httpx or the raw h11 helper, is recorded so that a test
fails if the server ever answered 500 or logged an unhandled error.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio


from ..conftest import RunningServer, start_server
from .helpers import SEEN_RESPONSES, recording_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    import httpx


# Loggers that report a request the server failed on (an unhandled exception).
_ERROR_LOGGERS = ("ds_trio", "hypercorn.error", "quart.app", "asyncio")


@pytest.fixture(name="server")
async def _server(nursery: trio.Nursery) -> RunningServer:
    return await start_server(nursery)


@pytest.fixture(params=["memory", "lmdb"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, object]:
    """Settings for a server on each store: none for memory, a data dir for LMDB."""
    return {} if request.param == "memory" else {"data_dir": tmp_path / "data"}


@pytest.fixture(name="client")
async def _client() -> AsyncIterator[httpx.AsyncClient]:
    async with recording_client(max_connections=2000) as client:
        yield client


class _ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def _no_server_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if any response was a 500 or the server logged an error.

    A test that injects a storage fault marks itself
    `@pytest.mark.logs_errors("substring")`: errors containing it are allowed.
    """
    marker = request.node.get_closest_marker("logs_errors")
    allowed = marker.args[0] if marker else None
    SEEN_RESPONSES.clear()
    handler = _ErrorRecords()
    loggers = [logging.getLogger(name) for name in _ERROR_LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    errors = [r for r in SEEN_RESPONSES if r[2] == 500]
    assert errors == [], f"the server answered 500: {errors}"
    logged = [f"{r.name}: {r.getMessage()}" for r in handler.records]
    if allowed is not None:
        logged = [line for line in logged if allowed not in line]
    assert logged == [], f"the server logged errors: {logged}"
    SEEN_RESPONSES.clear()
