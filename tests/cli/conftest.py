"""Fixtures for the command-line client's tests: a console a test can read and wait on.

Rules as everywhere: loopback and port 0 only, every wait bounded, and no
sleeps standing in for events (a test waits for output the client wrote).
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from ds_trio.client import run
from ds_trio.client.console import Console

from ..conftest import RunningServer

WAIT: float = 10.0  # seconds: the bound on any wait for output


class FakeStdout:
    """Binary stdout that wakes waiters whenever it grows."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._grew = trio.Event()

    def write(self, data: bytes) -> int:
        self.data += data
        self._grew.set()
        self._grew = trio.Event()
        return len(data)

    def flush(self) -> None:
        pass

    async def wait_for(self, expected: bytes) -> None:
        with trio.fail_after(WAIT):
            while expected not in self.data:
                await self._grew.wait()


class FakeStderr(io.StringIO):
    def __init__(self, *, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@dataclass
class Run:
    """One client command's outcome."""

    code: int
    out: bytes
    err: str


@dataclass
class Terminal:
    """Runs client commands in process against one server, as a shell would."""

    server_root: str
    environ: dict[str, str] = field(default_factory=dict)

    async def __call__(
        self,
        *argv: str,
        stdin: bytes = b"",
        tty: bool = False,
        stdout: FakeStdout | None = None,
        interrupted: Callable[[], Awaitable[object]] = trio.sleep_forever,
    ) -> Run:
        """Run `ds-trio ARGV`; a tail is interrupted when `interrupted` returns (never, by default)."""
        out = FakeStdout() if stdout is None else stdout
        err = FakeStderr(tty=tty)
        console = Console(out, err, io.BytesIO(stdin))
        environ = {"DS_TRIO_URL": self.server_root, **self.environ}
        with trio.fail_after(WAIT):
            code = await run(argv, console, environ=environ, interrupted=interrupted)
        return Run(code, bytes(out.data), err.getvalue())


@pytest.fixture(params=["memory", "lmdb"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, object]:
    """Settings for a server on each store: none for memory, a data dir for LMDB."""
    return {} if request.param == "memory" else {"data_dir": tmp_path / "data"}


def terminal(server: RunningServer, **environ: str) -> Terminal:
    return Terminal(server.stream_root, environ)
