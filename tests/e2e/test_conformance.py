"""The official conformance suite (npm @durable-streams/server-conformance-tests,
pinned in tests/conformance/package-lock.json) against a real ds_trio process.

The server runs with a 500 ms long-poll timeout, as the upstream servers do
under this suite. Every case must pass against both stores, and against two
worker processes sharing one LMDB data dir, and with access control on
(the suite holding a token with every scope): 338 of 338,
forks included, and the opt-in subscription group (enabled with
`subscriptions: true` in conformance.test.mjs) with its 6 cases.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from ds_trio.auth import hash_token, new_token

from .conformance import ServerProcess, run_suite


def _is_fork(title: str) -> bool:
    return title.startswith("Fork - ")


def _is_subscription(title: str) -> bool:
    return title.startswith("Reserved subscription APIs")


def _is_protocol(title: str) -> bool:
    return not _is_subscription(title)


@pytest.mark.parametrize("store", ["memory", "lmdb", "lmdb-2-workers", "memory-auth", "lmdb-auth"])
def test_conformance(store: str, tmp_path: Path) -> None:
    args = ["--long-poll-timeout", "500ms", "--access-log"]
    if store.startswith("lmdb"):
        args += ["--data-dir", str(tmp_path / "data")]
    if store == "lmdb-2-workers":
        args += ["--workers", "2"]
    token = None
    if store.endswith("-auth"):  # access control on; the suite holds a token with every scope
        token = new_token()
        tokens = tmp_path / "tokens.toml"
        tokens.write_text(f'[[tokens]]\nname = "suite"\nsha256 = "{hash_token(token)}"\nscopes = ["admin"]\n')
        args += ["--tokens-file", str(tokens)]
    server = ServerProcess(*args)
    try:
        if token is not None:
            refused = httpx.put(f"{server.base_url}/v1/stream/no-token", timeout=10)
            assert refused.status_code == 401  # the suite's requests pass only with the token
        result = run_suite(server.base_url, tmp_path / "report.json", token=token)
    finally:
        exit_code = server.stop()
    protocol = result.counts(_is_protocol)
    forks = result.counts(_is_fork)
    subscriptions = result.counts(_is_subscription)
    print(
        f"\nconformance ({store}): {dict(protocol)} of which forks {dict(forks)};"
        f" subscriptions {dict(subscriptions)}"
    )
    assert result.failures() == []
    log = "".join(server.output)
    answered = re.findall(r'" (\d{3}) ', log)
    assert len(answered) > 1000, "the access log should show every request"
    assert "500" not in answered and "Traceback" not in log
    assert protocol["passed"] >= 332 and forks["passed"] >= 82
    assert subscriptions["passed"] == 6
    assert result.counts()["passed"] == 338
    assert exit_code == 0
