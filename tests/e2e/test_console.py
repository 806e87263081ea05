"""The browser console in a real browser: Debian's Chromium, headless, driven by
Playwright's sync API against a real `python -m ds_trio dev` process.

Rules: loopback and port 0 only. Every wait is Playwright's own (`expect`,
`wait_for`) with a timeout, never a sleep. The browser starts from a fresh
profile under tmp_path and is told not to reach out anywhere; Playwright's
own browser downloads are never used (`executable_path` names Debian's).
These are plain sync tests: Playwright's sync API runs its own event loop,
and pytest-trio's trio_mode only takes the async tests.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from .conformance import ServerProcess

CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMIUM_ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS: Final = 15_000  # the longest any step may take on a busy CI box
ARTIFACT: Final = Path(__file__).resolve().parents[2] / "test-artifacts" / "console.png"
PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
TEXT: Final = {"Content-Type": "text/plain"}

expect.set_options(timeout=WAIT_MS)


@dataclass
class Browser:
    """One page in a fresh headless Chromium, with what went wrong in it."""

    page: Page
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions


@pytest.fixture(name="dev_server", scope="module")
def _dev_server() -> Iterator[ServerProcess]:
    server = ServerProcess()  # `dev`: the console is on by default
    try:
        yield server
    finally:
        assert server.stop() == 0


@pytest.fixture(name="browser")
def _browser(tmp_path: Path) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            timeout=60_000,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(WAIT_MS)
            browser = Browser(page)
            page.on(
                "console",
                lambda m: (
                    browser.errors.append(f"{m.text} ({m.location.get('url')})")
                    if m.type == "error"
                    else None
                ),
            )
            page.on("pageerror", lambda exc: browser.errors.append(str(exc)))
            yield browser
        finally:
            context.close()


def test_create_append_tail_and_close_a_stream_from_the_page(
    dev_server: ServerProcess, browser: Browser, tmp_path: Path
) -> None:
    page = browser.page
    stream_url = f"{dev_server.base_url}/v1/stream/console/demo"
    page.goto(f"{dev_server.base_url}/")
    expect(page.locator("#stream-root")).to_have_text("/v1/stream/")

    page.fill("#create-name", "console/demo")
    page.select_option("#create-type", "text/plain")
    page.click("#create")
    expect(page.locator("#message")).to_have_text("created console/demo (text/plain)")
    row = page.locator("#streams tbody tr", has_text="console/demo")
    expect(row).to_have_count(1)
    expect(page.locator("#selected-name")).to_have_text("console/demo")

    page.fill("#append-body", "hello from the page")
    page.click("#append")
    expect(page.locator("#message")).to_contain_text("appended to console/demo")
    expect(row.locator("td.offset")).to_have_text("0000000000000000_0000000000000019")
    expect(row.locator("td.type")).to_have_text("text/plain")
    expect(row.locator("td.state")).to_have_text("open")

    page.click("#tail-start")
    events = page.locator("#events")
    expect(page.locator("#tail-status")).to_have_attribute("data-state", "live")
    expect(events.locator("li.data pre")).to_have_text(["hello from the page"])
    first_control = events.locator("li.control").first
    expect(first_control).to_contain_text("streamNextOffset: 0000000000000000_0000000000000019")
    expect(first_control).to_contain_text("upToDate: true")
    expect(first_control).to_contain_text("streamCursor: ")

    with httpx.Client(timeout=10) as client:
        appended = client.post(stream_url, content=b"hello from the test", headers=TEXT)
        assert appended.status_code == 204
    expect(events.locator("li.data pre")).to_have_text(
        ["hello from the page", "hello from the test"]
    )
    expect(events.locator("li.control").last).to_contain_text(
        "streamNextOffset: 0000000000000000_0000000000000038"
    )

    page.click("#close-stream")
    expect(page.locator("#tail-status")).to_have_attribute("data-state", "closed")
    expect(page.locator("#tail-status")).to_have_text(
        "stream closed at 0000000000000000_0000000000000038"
    )
    expect(events.locator("li.closed")).to_contain_text("streamClosed: true")
    expect(row.locator("td.state")).to_have_text("closed")
    expect(page.locator("#close-stream")).to_be_disabled()
    with httpx.Client(timeout=10) as client:
        assert client.head(stream_url).headers["stream-closed"] == "true"

    shot = tmp_path / "console.png"
    page.screenshot(path=str(shot), full_page=True)
    ARTIFACT.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACT)
    assert ARTIFACT.read_bytes()[:8] == PNG_SIGNATURE
    assert browser.errors == []  # nothing refused by the CSP, no script errors


def test_json_and_binary_streams_from_the_page(dev_server: ServerProcess, browser: Browser) -> None:
    page = browser.page
    page.goto(f"{dev_server.base_url}/")
    page.fill("#create-name", "console/json")
    page.select_option("#create-type", "application/json")
    page.click("#create")
    expect(page.locator("#message")).to_have_text("created console/json (application/json)")

    page.fill("#append-body", "{not json")
    page.click("#append")
    expect(page.locator("#message")).to_contain_text("not JSON")
    expect(page.locator("#message")).to_have_attribute("data-kind", "error")
    page.fill("#append-body", '{"msg": "hi", "n": 1}')
    page.click("#append")
    expect(page.locator("#message")).to_contain_text("appended to console/json")
    page.click("#tail-start")
    expect(page.locator("#events li.data pre")).to_have_text(['{"msg":"hi","n":1}'])

    page.fill("#create-name", "console/bytes")
    page.select_option("#create-type", "application/octet-stream")
    page.click("#create")
    expect(page.locator("#selected-name")).to_have_text("console/bytes")
    page.fill("#append-body", "raw bytes")
    page.click("#append")
    expect(page.locator("#message")).to_contain_text("appended to console/bytes")
    page.fill("#tail-offset", "-1")
    page.click("#tail-start")  # the data arrives base64-encoded and is shown decoded
    expect(page.locator("#events li.data .field")).to_have_text(["9 bytes, base64-decoded:"])
    expect(page.locator("#events li.data pre")).to_have_text(["raw bytes"])
    assert browser.errors == []

    page.fill("#tail-offset", "not-an-offset")
    page.click("#tail-start")  # EventSource cannot say why; the page asks and stops
    expect(page.locator("#tail-status")).to_have_attribute("data-state", "error")
    expect(page.locator("#tail-status")).to_contain_text("cannot tail console/bytes: 400")
    expect(page.locator("#tail-stop")).to_be_disabled()
