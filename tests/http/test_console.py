"""The browser console's routes: its files, its stream listing, and when it is there at all."""

from __future__ import annotations

import re
from importlib import resources
from typing import TYPE_CHECKING

import pytest
from quart_trio import QuartTrio

from ds_trio.__main__ import main
from ds_trio.auth.grants import ADMIN
from ds_trio.config import Config, ConfigError
from ds_trio.http import console
from ds_trio.http.access import _needs
from ds_trio.http.console import CONSOLE_ENDPOINTS, MAX_LISTED_STREAMS

from ..conftest import start_server
from .helpers import SECURITY_HEADERS

if TYPE_CHECKING:
    from pathlib import Path

    import httpx
    import trio

TEXT = {"Content-Type": "text/plain"}
JSON = {"Content-Type": "application/json"}
TOKEN = {"name": "ci", "sha256": "ab" * 32, "scopes": ["read", "write", "admin"]}
CONSOLE_PATHS = [
    "/",
    "/console/app.js",
    "/console/style.css",
    "/console/favicon.svg",
    "/console/streams",
]


def _csp(headers: httpx.Headers) -> dict[str, str]:
    """The Content-Security-Policy's directives, by name."""
    directives = (
        part.strip().split(" ", 1) for part in headers["content-security-policy"].split(";")
    )
    return {d[0]: d[1] if len(d) > 1 else "" for d in directives}


def _check_console_headers(headers: httpx.Headers) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, (name, dict(headers))
    policy = _csp(headers)
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert headers["x-frame-options"] == "DENY"


async def test_the_page_is_html_with_a_strict_content_security_policy(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_server(nursery, console=True)
    page = await client.get(f"{server.base_url}/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    _check_console_headers(page.headers)
    html = page.text
    assert '<script src="/console/app.js" defer></script>' in html
    assert '<link rel="stylesheet" href="/console/style.css">' in html
    # 'self' only works if nothing is inline: no script bodies, handlers or style attributes.
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []
    assert re.findall(r"\son[a-z]+=|\sstyle=", html) == []
    assert "http://" not in html and "https://" not in html  # no CDNs
    head = await client.head(f"{server.base_url}/")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == "text/html; charset=utf-8"


@pytest.mark.parametrize(
    ("path", "filename", "content_type"),
    [
        ("/console/app.js", "app.js", "text/javascript; charset=utf-8"),
        ("/console/style.css", "style.css", "text/css; charset=utf-8"),
        ("/console/favicon.svg", "favicon.svg", "image/svg+xml"),
    ],
)
async def test_the_page_files_are_served_from_the_package_with_their_types(
    nursery: trio.Nursery, client: httpx.AsyncClient, path: str, filename: str, content_type: str
) -> None:
    server = await start_server(nursery, console=True)
    response = await client.get(server.base_url + path)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.content == (resources.files("ds_trio") / "console" / filename).read_bytes()
    _check_console_headers(response.headers)
    missing = await client.get(f"{server.base_url}/console/other.js")
    assert missing.status_code == 404


async def test_the_listing_names_live_streams_with_type_tail_and_closure(
    nursery: trio.Nursery, client: httpx.AsyncClient, store_settings: dict[str, object]
) -> None:
    server = await start_server(nursery, console=True, **store_settings)
    listing_url = f"{server.base_url}/console/streams"
    empty = await client.get(listing_url)
    assert empty.json() == {"stream_root": "/v1/stream", "streams": [], "truncated": False}
    assert (
        await client.put(server.url("b/text"), headers=TEXT, content=b"hello")
    ).status_code == 201
    assert (
        await client.put(server.url("a.json"), headers=JSON, content=b"[1,2]")
    ).status_code == 201
    closed = await client.post(server.url("a.json"), headers={"Stream-Closed": "true"})
    assert closed.status_code == 204
    assert (await client.put(server.url("gone"), headers=TEXT)).status_code == 201
    assert (await client.delete(server.url("gone"))).status_code == 204
    response = await client.get(listing_url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    _check_console_headers(response.headers)
    assert response.json()["streams"] == [
        {
            "name": "a.json",
            "content_type": "application/json",
            "tail_offset": closed.headers["stream-next-offset"],
            "closed": True,
        },
        {
            "name": "b/text",
            "content_type": "text/plain",
            "tail_offset": "0000000000000000_0000000000000005",
            "closed": False,
        },
    ]


async def test_the_listing_is_bounded(
    nursery: trio.Nursery, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert MAX_LISTED_STREAMS == 1000
    monkeypatch.setattr(console, "MAX_LISTED_STREAMS", 3)
    server = await start_server(nursery, console=True)
    for name in ["d", "c", "b", "a"]:
        assert (await client.put(server.url(name), headers=TEXT)).status_code == 201
    listing = (await client.get(f"{server.base_url}/console/streams")).json()
    assert listing["truncated"] is True
    assert [stream["name"] for stream in listing["streams"]] == ["a", "b", "c"]


async def test_without_the_console_its_paths_answer_404(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_server(nursery)
    assert server.service.config.console is False
    for path in CONSOLE_PATHS:
        response = await client.get(server.base_url + path)
        assert response.status_code == 404, path
        assert "content-security-policy" not in response.headers


@pytest.mark.parametrize(
    "settings",
    [
        {"tokens": [TOKEN]},
        {"tokens_file": "tokens.toml"},
        {"jwt_jwks_file": "k", "jwt_audience": "a"},
    ],
    ids=["tokens", "tokens_file", "jwt"],
)
def test_the_console_needs_access_control_off(settings: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="console needs access control off"):
        Config.from_mapping({"console": True, **settings})
    assert Config.from_mapping(settings).console is False  # and tokens alone are fine


def test_serve_refuses_the_console_with_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[[tokens]]\nname = "ci"\nsha256 = "{"ab" * 32}"\nscopes = ["read"]\n')
    assert main(["serve", "--console", "--tokens-file", str(tokens)]) == 2
    assert "console needs access control off" in capsys.readouterr().err


async def test_console_routes_would_need_admin_if_tokens_were_ever_on() -> None:
    # The backstop behind the ConfigError: access.py never treats them as public itself.
    app = QuartTrio(__name__)
    for endpoint in sorted(CONSOLE_ENDPOINTS):
        async with app.test_request_context("/", method="GET"):
            assert _needs(Config(), endpoint, "/") == [(ADMIN, None)], endpoint
