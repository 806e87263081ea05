"""The official conformance suite (npm @durable-streams/server-conformance-tests,
pinned in tests/conformance/package-lock.json) against a real ds_trio process.

The server runs with a 500 ms long-poll timeout, as the upstream servers do
under this suite. Subscriptions are opt-in in the suite and not enabled here.
"""

from __future__ import annotations

from pathlib import Path

from .conformance import ServerProcess, run_suite


def _is_fork(title: str) -> bool:
    return title.startswith("Fork - ")


def _is_subscription(title: str) -> bool:
    return title.startswith("Reserved subscription APIs")


def _is_core(title: str) -> bool:
    return not _is_fork(title) and not _is_subscription(title)


def test_conformance_memory_store(tmp_path: Path) -> None:
    server = ServerProcess("--long-poll-timeout", "500ms")
    try:
        result = run_suite(server.base_url, tmp_path / "report.json")
    finally:
        exit_code = server.stop()
    core = result.counts(_is_core)
    print(f"\nconformance (memory): core {dict(core)}; forks {dict(result.counts(_is_fork))}")
    assert result.failures(_is_core) == []
    assert core["passed"] >= 250
    assert exit_code == 0
