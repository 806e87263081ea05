"""The client's commands against a real in-process server, on both stores.

Each test runs `ds-trio ...` command lines through `ds_trio.client.run` with
stdout, stderr and stdin in memory. Reads are capped at 4 KiB per response,
so a read of a few KiB already follows Stream-Next-Offset several times.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
import trio

from ds_trio.auth import hash_token, new_token

from ..conftest import RunningServer, start_server
from ..http.helpers import wait_for_watchers
from .conftest import WAIT, FakeStdout, Run, Terminal, terminal

# Every byte value, and line endings that a text mode would rewrite: 16 KiB + 4.
BINARY = bytes(range(256)) * 64 + b"\r\n\r\x00"
OFFSET_RE = re.compile(rb"[0-9]{16}_[0-9]{16}\n")


@pytest.fixture(name="server")
async def _server(nursery: trio.Nursery, store_settings: dict[str, object]) -> RunningServer:
    return await start_server(nursery, **store_settings, max_read_bytes=4096)


@pytest.fixture(name="sh")
def _sh(server: RunningServer) -> Terminal:
    return terminal(server)


class Background:
    """A client command running alongside the test, e.g. a tail."""

    def __init__(self) -> None:
        self.stdout = FakeStdout()
        self.interrupt = trio.Event()
        self._done = trio.Event()
        self._result: Run | None = None

    def start(self, nursery: trio.Nursery, sh: Terminal, *argv: str) -> Background:
        async def go() -> None:
            self._result = await sh(*argv, stdout=self.stdout, interrupted=self.interrupt.wait)
            self._done.set()

        nursery.start_soon(go)
        return self

    async def result(self) -> Run:
        with trio.fail_after(WAIT):
            await self._done.wait()
        assert self._result is not None
        return self._result


async def test_create_append_and_read_keep_bytes_exact(
    sh: Terminal, server: RunningServer, tmp_path: Path
) -> None:
    created = await sh("create", "blob", "--data", "start:")
    assert created.code == 0
    assert created.err == ""
    assert OFFSET_RE.fullmatch(created.out)  # the next offset, for `read --from`
    path = tmp_path / "blob.bin"
    path.write_bytes(BINARY)
    for argv, stdin in (
        (("blob", "arg;"), b""),
        (("blob", "--file", str(path)), b""),
        (("blob", "-"), BINARY[::-1]),
    ):
        appended = await sh("append", *argv, stdin=stdin)
        assert (appended.code, appended.err) == (0, "")
        assert OFFSET_RE.fullmatch(appended.out)
    everything = b"start:arg;" + BINARY + BINARY[::-1]
    assert await sh("read", "blob") == Run(0, everything, "")
    after_create = created.out.decode().strip()
    assert await sh("read", "blob", "--from", after_create) == Run(0, everything[6:], "")
    by_url = Terminal("http://127.0.0.1:1/unused")  # a full URL ignores the server setting
    assert await by_url("read", server.url("blob")) == Run(0, everything, "")


async def test_json_streams_read_one_message_per_line(sh: Terminal) -> None:
    assert (await sh("create", "events", "--content-type", "application/json")).code == 0
    assert (await sh("append", "events", '{"n": 1}')).code == 0
    assert (await sh("append", "events", '[{"n": 2}, {"n":\n 3}]')).code == 0  # a batch of two
    assert await sh("read", "events", "--json") == Run(0, b'{"n": 1}\n{"n": 2}\n{"n": 3}\n', "")
    raw = await sh("read", "events")
    assert json.loads(raw.out) == [{"n": 1}, {"n": 2}, {"n": 3}]
    await sh("create", "notes", "--content-type", "text/plain")
    for command in ("read", "tail"):
        refused = await sh(command, "notes", "--json")
        assert refused.code == 2
        assert (
            refused.err
            == "ds-trio: --json needs an application/json stream; this one is text/plain\n"
        )


async def test_head_prints_metadata(sh: Terminal) -> None:
    created = await sh(
        "create", "h", "--content-type", "text/plain", "--ttl", "3600", "--data", "abc"
    )
    offset = created.out.decode().strip()
    head = await sh("head", "h")
    assert head == Run(
        0,
        f"content-type: text/plain\nnext-offset: {offset}\nclosed: false\nttl: 3600\n".encode(),
        "",
    )
    assert (await sh("close", "h")).code == 0
    assert b"closed: true\n" in (await sh("head", "h")).out
    await sh("create", "e", "--expires-at", "2099-01-01T00:00:00Z")
    assert b"\nexpires-at: 2099-01-01T00:00:00Z\n" in (await sh("head", "e")).out


async def test_a_closed_stream_refuses_appends_with_exit_1(sh: Terminal) -> None:
    created = await sh("create", "c", "--content-type", "text/plain")
    closed = await sh("close", "c")
    assert closed == Run(0, created.out, "")  # the final offset
    refused = await sh("append", "c", "more")
    assert refused == Run(1, b"", "ds-trio: 409 stream is closed\n")
    assert await sh("close", "c") == Run(0, created.out, "")  # closing again is fine
    final = await sh("create", "f", "--closed", "--data", "all of it")
    assert final.code == 0
    assert (await sh("append", "f", "--data=-x")).code == 1
    assert (await sh("append", "g", "last", "--close")).code == 1  # no such stream
    await sh("create", "g")
    assert (await sh("append", "g", "last", "--close")).code == 0
    assert await sh("read", "g") == Run(0, b"last", "")
    assert (await sh("head", "g")).out.endswith(b"closed: true\n")


async def test_deleted_streams_are_not_found_with_exit_1(sh: Terminal) -> None:
    await sh("create", "d")
    assert await sh("delete", "d") == Run(0, b"", "")
    for argv in (
        ("read", "d"),
        ("head", "d"),
        ("append", "d", "x"),
        ("tail", "d"),
        ("delete", "d"),
        ("close", "d"),
    ):
        assert await sh(*argv) == Run(1, b"", "ds-trio: 404 stream not found\n"), argv


async def test_create_is_idempotent_and_a_different_config_is_refused(sh: Terminal) -> None:
    first = await sh("create", "k", "--content-type", "text/plain")
    again = await sh("create", "k", "--content-type", "text/plain")
    assert again == Run(
        0, first.out, "ds-trio: the stream already exists with this configuration\n"
    )
    conflict = await sh("create", "k", "--content-type", "application/json")
    assert conflict.code == 1
    assert conflict.err.startswith("ds-trio: 409 ")


async def test_a_producer_retry_appends_once(sh: Terminal) -> None:
    await sh("create", "p", "--content-type", "text/plain")
    producer = ("--producer", "writer-1", "--epoch", "0")
    first = await sh("append", "p", "one", *producer, "--seq", "0")
    retry = await sh("append", "p", "one", *producer, "--seq", "0")
    assert (first.code, first.err) == (0, "")
    assert retry == Run(
        0,
        first.out,
        "ds-trio: duplicate: producer writer-1 epoch 0 seq 0 was already appended; "
        "nothing new was written\n",
    )
    gap = await sh("append", "p", "three", *producer, "--seq", "2")
    assert gap.code == 1
    assert gap.err.startswith("ds-trio: 409 ")
    assert await sh("read", "p") == Run(0, b"one", "")


@pytest.mark.parametrize("mode", ["long-poll", "sse"])
async def test_tail_prints_appends_until_the_stream_closes(
    sh: Terminal, nursery: trio.Nursery, mode: str
) -> None:
    offset = (await sh("create", "live")).out.decode().strip()  # binary: SSE sends base64
    tail = Background().start(nursery, sh, "tail", "live", "--from", offset, "--mode", mode)
    await sh("append", "live", "-", stdin=BINARY)
    await tail.stdout.wait_for(BINARY)
    await sh("append", "live", "--close", "--data", "end")
    assert await tail.result() == Run(0, BINARY + b"end", "")


async def test_tail_from_now_prints_only_new_data(
    sh: Terminal, server: RunningServer, nursery: trio.Nursery
) -> None:
    await sh("create", "n", "--data", "old")
    tail = Background().start(nursery, sh, "tail", "n")
    await wait_for_watchers(server, "n", 1)  # its long-poll waits at the tail
    await sh("append", "n", "new")
    await sh("close", "n")
    assert await tail.result() == Run(0, b"new", "")
    assert await sh("tail", "n") == Run(0, b"", "")  # closed: ends at once


@pytest.mark.parametrize("mode", ["long-poll", "sse"])
async def test_an_interrupted_tail_says_where_to_resume(
    sh: Terminal, nursery: trio.Nursery, mode: str
) -> None:
    await sh("create", "r", "--content-type", "text/plain", "--data", "first\n")
    tail = Background().start(nursery, sh, "tail", "r", "--from", "-1", "--mode", mode)
    await tail.stdout.wait_for(b"first\n")
    tail.interrupt.set()
    stopped = await tail.result()
    assert (stopped.code, stopped.out) == (130, b"first\n")
    match = re.fullmatch(r"ds-trio: interrupted; resume with --from (\S+)\n", stopped.err)
    assert match is not None, stopped.err
    await sh("append", "r", "second\n")
    await sh("close", "r")
    assert await sh("tail", "r", "--from", match.group(1), "--mode", mode) == Run(
        0, b"second\n", ""
    )


@pytest.mark.parametrize("mode", ["long-poll", "sse"])
async def test_tail_json_prints_one_message_per_line(sh: Terminal, mode: str) -> None:
    await sh("create", "j", "--content-type", "application/json", "--data", '[{"a": 1}, {"b": 2}]')
    await sh("append", "j", '{"c": 3}', "--close")
    expected = b'{"a": 1}\n{"b": 2}\n{"c": 3}\n'
    assert await sh("tail", "j", "--from", "-1", "--json", "--mode", mode) == Run(0, expected, "")


async def test_progress_bar_on_stderr(sh: Terminal, tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(BINARY * 64)  # 1 MiB and a bit: several chunks
    await sh("create", "up")
    shown = await sh("append", "up", "--file", str(path), "--progress")
    assert shown.code == 0
    assert shown.err.startswith("\r[")
    assert shown.err.endswith("\n")
    final = shown.err.rsplit("\r", 1)[1].rstrip()  # padded over the longer drawing before
    assert final == "[########################] 100% 1.0 MiB / 1.0 MiB"
    assert (await sh("append", "up", "--file", str(path))).err == ""  # stderr is no terminal
    assert (await sh("append", "up", "--file", str(path), "--no-progress", tty=True)).err == ""
    piped = await sh("append", "up", "-", stdin=b"x" * 1000, tty=True)  # no size known
    assert piped.err.endswith("\r1000 B sent\n")
    created = await sh("create", "up2", "--file", str(path), "--progress")
    assert created.err.rstrip().endswith("100% 1.0 MiB / 1.0 MiB")


async def test_bearer_tokens(nursery: trio.Nursery, store_settings: dict[str, object]) -> None:
    secret = new_token()
    token = {"name": "cli", "sha256": hash_token(secret), "scopes": ["admin"], "streams": ["**"]}
    server = await start_server(nursery, **store_settings, tokens=[token])
    sh = terminal(server)
    assert await sh("create", "s") == Run(1, b"", "ds-trio: 401 credentials required\n")
    assert await sh("head", "s") == Run(1, b"", "ds-trio: 401 credentials required\n")
    wrong = await sh("create", "s", "--token", new_token())
    assert wrong == Run(1, b"", "ds-trio: 401 unknown token\n")
    assert (await sh("create", "s", "--token", secret)).code == 0
    assert (await terminal(server, DS_TRIO_TOKEN=secret)("head", "s")).code == 0


def _closed_port() -> int:
    with socket.socket() as probe:  # nothing listens here once it is closed
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_an_unreachable_server_exits_3() -> None:
    origin = f"http://127.0.0.1:{_closed_port()}"
    sh = Terminal(f"{origin}/v1/stream")
    for argv in (
        ("read", "x"),
        ("head", "x"),
        ("create", "x"),
        ("append", "x", "y"),
        ("tail", "x"),
    ):
        result = await sh(*argv)
        assert (result.code, result.out) == (3, b""), argv
        assert result.err.startswith(f"ds-trio: cannot connect to {origin}: "), result.err
    assert (await sh("tail", "x", "--from", "-1")).err.endswith("; resume with --from -1\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("create", "x", "--ttl", "1.5"), "Stream-TTL must be a non-negative integer"),
        (
            ("create", "x", "--expires-at", "soon"),
            "Stream-Expires-At must be an RFC 3339 timestamp",
        ),
        (("create", "x", "--ttl", "1", "--expires-at", "2030-01-01T00:00:00Z"), None),  # argparse
        (("append", "x"), "give DATA, --data TEXT, --file FILE or - for stdin"),
        (("append", "x", "a", "--data", "b"), "give only one of DATA, --data and --file"),
        (("append", "x", "a", "--producer", "p"), "--producer, --epoch and --seq go together"),
        (("append", "x", "a", "--producer", "p", "--epoch", "0", "--seq", "-1"), "--seq must be"),
        (("append", "x", "a", "--seq", "one"), None),
        (("append", "x", "--file", "/nonexistent/input"), "cannot read /nonexistent/input"),
        (("read", "x", "--server", "ftp://host/"), "bad server URL"),
        (("frobnicate", "x"), None),
    ],
)
async def test_usage_errors_exit_2_before_sending(
    argv: tuple[str, ...], message: str | None
) -> None:
    sh = Terminal(f"http://127.0.0.1:{_closed_port()}/v1/stream")  # anything sent would exit 3
    result = await sh(*argv)
    assert result.code == 2, result.err
    if message is not None:
        assert result.err.startswith(f"ds-trio: {message}"), result.err


async def test_data_may_follow_the_options(sh: Terminal) -> None:
    assert (await sh("create", "late", "--content-type", "text/plain", "first;")).code == 0
    assert (await sh("append", "late", "--content-type", "text/plain", "second;")).code == 0
    assert (await sh("append", "late", "--content-type", "text/plain", "-", stdin=b"third")).code == 0
    assert await sh("read", "late") == Run(0, b"first;second;third", "")
    refused = await sh("append", "late", "--content-type", "text/plain", "a", "b")
    assert refused.code == 2  # argparse names the extra argument on stderr
