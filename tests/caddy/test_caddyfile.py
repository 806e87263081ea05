"""The repo's Caddyfile as Caddy reads it: it validates (with Debian's Caddy
2.6.2), and its reverse proxy neither times out live reads nor keeps them
open after their clients leave. (That they are not buffered is measured in
test_live.py.)"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from .stack import (
    LB_SITE_HEADER,
    REPO_CADDYFILE,
    CaddyPorts,
    caddy_env,
    caddyfile_for_tests,
    commented_block,
    run_caddy,
    snippets,
    top_level_blocks,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

LIVE_SECONDS = 60  # the longest live response ds_trio sends by default (SSE)
NANOSECONDS = 1_000_000_000


@pytest.fixture(name="state_dir")
def _state_dir(tmp_path: Path) -> Path:
    for name in ("home", "data", "config"):
        (tmp_path / name).mkdir()
    return tmp_path


def _adapt(config: Path, env: dict[str, str]) -> dict[str, Any]:
    result = run_caddy("adapt", "--config", str(config), "--adapter", "caddyfile", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _lb_variant(tmp_path: Path) -> Path:
    """The commented `:4437` variant, uncommented, with the snippets it uses."""
    text = REPO_CADDYFILE.read_text()
    path = tmp_path / "lb.Caddyfile"
    body = commented_block(text, LB_SITE_HEADER)
    path.write_text(f"{snippets(top_level_blocks(text))}\n\n{LB_SITE_HEADER}\n{body}\n}}\n")
    return path


def test_the_repo_caddyfile_is_valid(state_dir: Path) -> None:
    result = run_caddy(
        "validate",
        "--config",
        str(REPO_CADDYFILE),
        "--adapter",
        "caddyfile",
        env=caddy_env(state_dir),
    )
    assert result.returncode == 0, result.stderr
    assert "Valid configuration" in result.stdout + result.stderr


def test_the_load_balancer_variant_is_valid(state_dir: Path) -> None:
    variant = _lb_variant(state_dir)
    result = run_caddy(
        "validate", "--config", str(variant), "--adapter", "caddyfile", env=caddy_env(state_dir)
    )
    assert result.returncode == 0, result.stderr
    config = _adapt(variant, caddy_env(state_dir))
    (server,) = config["apps"]["http"]["servers"].values()
    assert server["listen"] == [":4437"]
    (proxy,) = [n for n in _walk(config) if n.get("handler") == "reverse_proxy"]
    assert "127.0.0.1/8" in proxy["trusted_proxies"]  # the balancer's X-Forwarded-* count
    assert proxy["upstreams"] == [{"dial": "127.0.0.1:4438"}]  # not :4437, which Caddy holds


def test_the_environment_names_domain_upstream_and_stream_root(state_dir: Path) -> None:
    env = caddy_env(
        state_dir,
        DS_TRIO_DOMAIN="streams.test.example",
        DS_TRIO_UPSTREAM="127.0.0.1:9999",
        DS_TRIO_STREAM_ROOT="/s",
    )
    config = _adapt(REPO_CADDYFILE, env)
    (server,) = config["apps"]["http"]["servers"].values()
    assert server["listen"] == [":443"]  # automatic HTTPS for the domain
    hosts = [n["host"] for n in _walk(config) if "host" in n and isinstance(n["host"], list)]
    assert hosts == [["streams.test.example"]]
    (proxy,) = [n for n in _walk(config) if n.get("handler") == "reverse_proxy"]
    assert proxy["upstreams"] == [{"dial": "127.0.0.1:9999"}]
    paths = [n["path"] for n in _walk(config) if "path" in n]
    assert paths == [["/s/*", "/healthz", "/readyz"]]  # and so never /metrics


@pytest.mark.parametrize("which", ["repo", "tests"])
def test_live_reads_are_not_cut_short(which: str, state_dir: Path) -> None:
    """No timeout shorter than a live response lasts, and no `flush_interval -1`.

    Caddy flushes SSE and responses of unknown length immediately by itself.
    An explicit -1 would add nothing but, on Caddy 2.6 to 2.8, detach the
    upstream request from the client, so reads whose clients left stay open
    in ds_trio (caddyserver/caddy#4952; test_live.py checks the effect). The
    tests' Caddyfile is checked too: it must proxy exactly as the repo's.
    """
    source = REPO_CADDYFILE
    if which == "tests":
        source = state_dir / "Caddyfile"
        source.write_text(caddyfile_for_tests(CaddyPorts(18080, 18443, 18081)))
    config = _adapt(source, caddy_env(state_dir, DS_TRIO_UPSTREAM="127.0.0.1:4437"))
    proxies = [n for n in _walk(config) if n.get("handler") == "reverse_proxy"]
    assert proxies, "no reverse_proxy in the config"
    for proxy in proxies:
        assert proxy.get("flush_interval", 0) >= 0, "see this test's docstring"
        assert "headers" not in proxy  # the client's Host passes through untouched
        transport = proxy.get("transport", {})
        for name in ("response_header_timeout", "read_timeout", "write_timeout"):
            assert transport.get(name, 0) == 0 or transport[name] > LIVE_SECONDS * NANOSECONDS
    for server in config["apps"]["http"]["servers"].values():
        for name in ("read_timeout", "write_timeout"):  # read_body / write in the Caddyfile
            assert server.get(name, 0) == 0 or server[name] > LIVE_SECONDS * NANOSECONDS
