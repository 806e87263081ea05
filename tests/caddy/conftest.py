"""Fixtures for the tests through real Caddy (see stack.py for the rules)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from .stack import ProxiedServer, proxied_server

if TYPE_CHECKING:
    from collections.abc import Iterator

LIVE_TIMEOUT = "10s"  # ds_trio's long-poll timeout here: far above any wait a test expects


@pytest.fixture(name="proxied")
def _proxied() -> Iterator[ProxiedServer]:
    """ds_trio behind Caddy, with a long-poll timeout no test waits out."""
    with proxied_server("--long-poll-timeout", LIVE_TIMEOUT) as server:
        yield server
