"""`python -m ds_trio <command>` as a shell runs it, against `python -m ds_trio dev`.

One dev server process serves the module; every test uses its own streams.
Every child process runs under a timeout, and no test sleeps: a tail's
output is read until the expected bytes arrive.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from ..e2e.conformance import ServerProcess
from .conftest import WAIT

TIMEOUT = 30.0  # seconds for one command (a cold interpreter start included)
BINARY = bytes(range(256)) * 16 + b"\r\n\r\x00"


def _environment(**extra: str) -> dict[str, str]:
    """This process's environment without the client's variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ("DS_TRIO_URL", "DS_TRIO_TOKEN")}
    return {**env, **extra}


@pytest.fixture(name="env", scope="module")
def _env() -> Iterator[dict[str, str]]:
    server = ServerProcess()
    try:
        yield _environment(DS_TRIO_URL=f"{server.base_url}/v1/stream")
    finally:
        assert server.stop() == 0


async def ds(
    env: dict[str, str], *argv: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    """`python -m ds_trio ARGV`, with its exit status and both outputs."""
    with trio.fail_after(TIMEOUT):
        return await trio.run_process(
            [sys.executable, "-m", "ds_trio", *argv],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
        )


def outcome(done: subprocess.CompletedProcess[bytes]) -> tuple[int, bytes, bytes]:
    return done.returncode, done.stdout, done.stderr


async def test_round_trip_through_the_shell(env: dict[str, str], tmp_path: Path) -> None:
    created = await ds(env, "create", "shell/blob", "--content-type", "application/octet-stream")
    assert outcome(created)[::2] == (0, b"")
    path = tmp_path / "part.bin"
    path.write_bytes(BINARY)
    assert (await ds(env, "append", "shell/blob", "arg;")).returncode == 0
    assert (await ds(env, "append", "shell/blob", "--file", str(path))).returncode == 0
    assert (await ds(env, "append", "shell/blob", "-", stdin=BINARY[::-1])).returncode == 0
    everything = b"arg;" + BINARY + BINARY[::-1]
    assert outcome(await ds(env, "read", "shell/blob")) == (0, everything, b"")
    head = await ds(env, "head", "shell/blob")
    assert head.stdout.decode().splitlines()[::2] == [
        "content-type: application/octet-stream",
        "closed: false",
    ]
    await ds(env, "create", "shell/json", "--content-type", "application/json", "--data", "[1, 2]")
    assert outcome(await ds(env, "read", "shell/json", "--json")) == (0, b"1\n2\n", b"")


async def test_exit_statuses(env: dict[str, str]) -> None:
    await ds(env, "create", "shell/closed", "--data", "x")
    assert (await ds(env, "close", "shell/closed")).returncode == 0
    refused = await ds(env, "append", "shell/closed", "more")
    assert outcome(refused) == (1, b"", b"ds-trio: 409 stream is closed\n")
    assert (await ds(env, "delete", "shell/closed")).returncode == 0
    gone = await ds(env, "read", "shell/closed")
    assert outcome(gone) == (1, b"", b"ds-trio: 404 stream not found\n")
    usage = await ds(env, "append", "shell/closed")
    assert usage.returncode == 2
    assert (await ds(env, "read")).returncode == 2  # argparse: URL is missing
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    unreachable = await ds(env, "head", "x", "--server", f"http://127.0.0.1:{port}/v1/stream")
    assert unreachable.returncode == 3
    assert unreachable.stderr.startswith(
        f"ds-trio: cannot connect to http://127.0.0.1:{port}".encode()
    )
    for done in (refused, gone, usage, unreachable):
        assert b"Traceback" not in done.stderr


class Tail:
    """`python -m ds_trio tail ARGV` running, its output readable as it comes."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.seen = b""

    async def read_until(self, expected: bytes) -> None:
        assert self.process.stdout is not None
        with trio.fail_after(WAIT):
            while expected not in self.seen:
                chunk = await self.process.stdout.receive_some(65536)
                assert chunk, f"tail ended before printing {expected!r}: {self.seen!r}"
                self.seen += chunk

    async def finish(self) -> tuple[int, bytes, bytes]:
        """Wait for the exit; (status, all of stdout, all of stderr)."""
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        with trio.fail_after(WAIT):
            while chunk := await self.process.stdout.receive_some(65536):
                self.seen += chunk
            errors = b""
            while chunk := await self.process.stderr.receive_some(65536):
                errors += chunk
            await self.process.wait()
        return self.process.returncode, self.seen, errors


async def tail(nursery: trio.Nursery, env: dict[str, str], *argv: str) -> Tail:
    command = [sys.executable, "-m", "ds_trio", "tail", *argv]
    process = await trio.lowlevel.open_process(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    nursery.start_soon(_kill_at_exit, process)
    return Tail(process)


async def _kill_at_exit(process: trio.Process) -> None:
    try:
        await trio.sleep_forever()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(WAIT):
                await process.wait()


async def test_tail_follows_and_resumes_after_ctrl_c(env: dict[str, str]) -> None:
    start = (await ds(env, "create", "shell/tail", "--content-type", "text/plain")).stdout
    async with trio.open_nursery() as nursery:
        first = await tail(nursery, env, "shell/tail", "--from", start.decode().strip())
        await ds(env, "append", "shell/tail", "one\n")
        await first.read_until(b"one\n")
        first.process.send_signal(signal.SIGINT)
        code, out, err = await first.finish()
        assert (code, out) == (130, b"one\n")
        match = re.fullmatch(rb"ds-trio: interrupted; resume with --from (\S+)\n", err)
        assert match is not None, err

        second = await tail(
            nursery, env, "shell/tail", "--from", match.group(1).decode(), "--mode", "sse"
        )
        await ds(env, "append", "shell/tail", "two\n")
        await second.read_until(b"two\n")
        await ds(env, "close", "shell/tail")
        assert await second.finish() == (0, b"two\n", b"")
        nursery.cancel_scope.cancel()


async def test_progress_and_idempotent_producers(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(BINARY * 256)  # 1 MiB and a bit
    await ds(env, "create", "shell/up")
    shown = await ds(env, "append", "shell/up", "--file", str(path), "--progress")
    assert shown.returncode == 0
    assert shown.stderr.rstrip().endswith(b"] 100% 1.0 MiB / 1.0 MiB")
    quiet = await ds(env, "append", "shell/up", "--file", str(path))  # stderr is a pipe here
    assert quiet.stderr == b""

    await ds(env, "create", "shell/once", "--content-type", "text/plain")
    producer = ("--producer", "job-7", "--epoch", "3", "--seq", "0")
    first = await ds(env, "append", "shell/once", "hello", *producer)
    retry = await ds(env, "append", "shell/once", "hello", *producer)
    assert (first.returncode, retry.returncode) == (0, 0)
    assert retry.stdout == first.stdout
    assert b"duplicate" in retry.stderr
    assert outcome(await ds(env, "read", "shell/once")) == (0, b"hello", b"")


async def test_bearer_tokens(tmp_path: Path) -> None:
    made = await ds(_environment(), "token", "cli", "--scopes", "admin")
    assert made.returncode == 0
    secret = re.search(rb": (dst_\S+)$", made.stderr, re.MULTILINE)  # on the terminal only
    assert secret is not None and secret.group(1) not in made.stdout, made.stderr
    tokens = tmp_path / "tokens.toml"
    tokens.write_bytes(made.stdout)
    server = ServerProcess("--tokens-file", str(tokens))
    try:
        env = _environment(DS_TRIO_URL=f"{server.base_url}/v1/stream")
        refused = await ds(env, "create", "locked")
        assert outcome(refused) == (1, b"", b"ds-trio: 401 credentials required\n")
        wrong = await ds(env, "create", "locked", "--token", "dst_not-a-real-token")
        assert wrong.returncode == 1
        assert wrong.stderr.startswith(b"ds-trio: 401 ")
        allowed = {**env, "DS_TRIO_TOKEN": secret.group(1).decode()}
        assert (await ds(allowed, "create", "locked")).returncode == 0
        assert outcome(await ds(allowed, "read", "locked")) == (0, b"", b"")
    finally:
        assert server.stop() == 0
