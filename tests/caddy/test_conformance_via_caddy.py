"""The official conformance suite through real Caddy over plain HTTP: the same
result as against ds_trio directly (tests/e2e/test_conformance.py): every case
passes, forks and the subscription group included."""

from __future__ import annotations

from collections import Counter

from ..e2e.conformance import run_suite
from .stack import proxied_server


def _is_fork(title: str) -> bool:
    return title.startswith("Fork - ")


def _is_subscription(title: str) -> bool:
    return title.startswith("Reserved subscription APIs")


def _is_protocol(title: str) -> bool:
    return not _is_subscription(title)


def test_conformance_through_caddy() -> None:
    with proxied_server("--long-poll-timeout", "500ms") as server:
        result = run_suite(server.http_url, server.work_dir / "report.json")
        access_log = server.caddy.access_log()
    protocol = result.counts(_is_protocol)
    forks = result.counts(_is_fork)
    subscriptions = result.counts(_is_subscription)
    print(
        f"\nconformance through caddy: {dict(protocol)} of which forks {dict(forks)};"
        f" subscriptions {dict(subscriptions)}"
    )
    assert result.failures() == []
    assert protocol["passed"] >= 332
    assert forks["passed"] >= 82
    assert subscriptions["passed"] == 6
    assert result.counts()["passed"] == 338
    # Every request went through Caddy, and Caddy never failed to reach ds_trio.
    assert len(access_log) > 1000, "Caddy's access log should show every request"
    statuses = Counter(int(entry["status"]) for entry in access_log)  # type: ignore[call-overload]
    assert [s for s in statuses if s >= 500] == [], statuses
