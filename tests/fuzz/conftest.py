"""The HTTP tests' guards hold here too: a test fails on any 500 or logged server error."""

from __future__ import annotations

from ..http.conftest import _client, _no_server_errors  # noqa: F401
