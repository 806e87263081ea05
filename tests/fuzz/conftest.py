"""The HTTP tests' guards hold here too: a test fails on any 500 or logged server error.

The campaign's seed and what each store's run did are printed in pytest's
closing summary, pass or fail, so every CI log names the seed it ran.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..http.conftest import _client, _no_server_errors  # noqa: F401
from . import test_campaign
from .campaign import reproduce

if TYPE_CHECKING:
    import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not test_campaign.RESULTS:
        return
    terminalreporter.section("fuzz campaign")
    terminalreporter.write_line(f"seed {test_campaign.SEED} ({reproduce(test_campaign.SEED)})")
    for result in test_campaign.RESULTS.values():
        terminalreporter.write_line(result.summary())
