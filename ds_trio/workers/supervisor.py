"""`serve --workers N`: one listening socket, N worker processes, each restarted if it dies.

The supervisor joins the data dir's owner lock (so a second server is still
refused), binds the listening socket, and starts each worker as
`python -m ds_trio <same arguments>` with the socket and a readiness pipe
passed down. Workers accept from the one socket, so a worker that dies takes
only its own connections with it. The supervisor never opens the store.

A worker ignores SIGINT (Ctrl-C reaches the whole process group; the
supervisor decides) and ends when the supervisor sends SIGTERM, or when the
supervisor dies: the worker holds the read end of a pipe only the supervisor
writes to, and its end of file means the supervisor is gone.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Final

import trio

from .. import __version__
from ..config import Config
from ..store.lmdb_env import SERVER_PID_ENV, claim_data_dir

__all__ = ["WorkerSocket", "become_worker", "report_ready", "supervise"]

log = logging.getLogger("ds_trio.workers")

LISTEN_FD_ENV: Final = "DS_TRIO_LISTEN_FD"
READY_FD_ENV: Final = "DS_TRIO_READY_FD"
LIFELINE_FD_ENV: Final = "DS_TRIO_LIFELINE_FD"
STARTUP_TIMEOUT: Final = 60.0  # seconds for a worker to open the store and listen
RESTART_DELAY: Final = (0.5, 10.0)  # seconds before restarting a dead worker: first, most
STABLE_AFTER: Final = 30.0  # seconds of running after which the restart delay starts over
_WORKER_ENV: Final = (LISTEN_FD_ENV, READY_FD_ENV, LIFELINE_FD_ENV)


@dataclass(frozen=True, slots=True)
class WorkerSocket:
    """What a worker got from its supervisor."""

    listen_fd: int
    ready_fd: int
    lifeline_fd: int

    async def wait_for_stop(self, signals: AsyncIterator[int]) -> None:
        """Return on the first of `signals` (SIGTERM), or when the supervisor is gone.

        The caller keeps `signals` open until the process ends, so a second
        SIGTERM (systemd signals the whole group, then the supervisor passes
        its own on) cannot kill the worker mid-shutdown.
        """
        async with trio.open_nursery() as nursery:

            async def supervisor_gone() -> None:
                while True:
                    await trio.lowlevel.wait_readable(self.lifeline_fd)
                    try:
                        if not os.read(self.lifeline_fd, 64):
                            break
                    except BlockingIOError:
                        continue
                log.warning("the supervisor is gone; this worker stops")
                nursery.cancel_scope.cancel()

            nursery.start_soon(supervisor_gone)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


def become_worker() -> WorkerSocket | None:
    """If a supervisor started this process, set it up as a worker and say how to serve."""
    values = [os.environ.get(name, "") for name in _WORKER_ENV]
    if not all(value.isdigit() for value in values) or not os.environ.get(SERVER_PID_ENV):
        return None
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    listen, ready, lifeline = (int(value) for value in values)
    os.set_blocking(lifeline, False)
    return WorkerSocket(listen, ready, lifeline)


def report_ready(worker: WorkerSocket) -> None:
    """Tell the supervisor this worker serves."""
    os.write(worker.ready_fd, b"ready\n")
    os.close(worker.ready_fd)


def _ending(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _listen(config: Config) -> socket.socket:
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.create_server((config.host, config.port), family=family, backlog=2048)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it
    sock.set_inheritable(True)
    return sock


class _Workers:
    def __init__(self, config: Config, argv: Sequence[str], sock: socket.socket) -> None:
        self.config = config
        self.argv = list(argv)
        self.sock = sock
        self.running: dict[int, trio.Process] = {}
        self.lifelines: dict[int, int] = {}  # write ends of the workers' lifeline pipes
        self.stopping = False

    async def start(self, index: int) -> trio.Process | None:
        """Start worker `index`; the process once it serves, None if it failed to start."""
        try:
            return await self._start(index)
        except OSError as exc:  # out of processes or file descriptors: retried, not fatal
            log.error("cannot start worker %d: %s", index, exc)
            return None

    async def _start(self, index: int) -> trio.Process | None:
        read_end, write_end = os.pipe()
        try:
            life_read, life_write = os.pipe()  # the supervisor keeps the write end until it dies
        except OSError:
            os.close(read_end)
            os.close(write_end)
            raise
        env = dict(
            os.environ,
            **{
                SERVER_PID_ENV: str(os.getpid()),
                LISTEN_FD_ENV: str(self.sock.fileno()),
                READY_FD_ENV: str(write_end),
                LIFELINE_FD_ENV: str(life_read),
            },
        )
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "ds_trio", *self.argv],
                env=env,
                pass_fds=(self.sock.fileno(), write_end, life_read),
            )
        except BaseException:
            os.close(life_write)
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
            os.close(life_read)
        self.lifelines[index] = life_write
        self.running[index] = process
        ready = b""
        async with trio.lowlevel.FdStream(read_end) as pipe:
            with trio.move_on_after(STARTUP_TIMEOUT):
                while b"\n" not in ready and (chunk := await pipe.receive_some(64)):
                    ready += chunk
        if ready.startswith(b"ready"):
            log.info("worker %d serving (pid %d)", index, process.pid)
            return process
        process.kill()
        await process.wait()
        self.running.pop(index, None)
        self._drop_lifeline(index)
        return None

    def _drop_lifeline(self, index: int) -> None:
        fd = self.lifelines.pop(index, None)
        if fd is not None:
            os.close(fd)

    async def keep(self, index: int, process: trio.Process) -> None:
        """Restart worker `index` whenever it dies, until the server stops."""
        delay = RESTART_DELAY[0]
        while True:
            started = time.monotonic()
            code = await process.wait()
            if self.stopping:
                return
            self.running.pop(index, None)
            self._drop_lifeline(index)
            if time.monotonic() - started > STABLE_AFTER:
                delay = RESTART_DELAY[0]
            log.warning("worker %d (pid %d) %s; restarting in %.1fs", index, process.pid, _ending(code), delay)
            await trio.sleep(delay)
            delay = min(delay * 2, RESTART_DELAY[1])
            while not self.stopping and (restarted := await self.start(index)) is None:
                log.error("worker %d failed to start; retrying in %.1fs", index, delay)
                await trio.sleep(delay)
                delay = min(delay * 2, RESTART_DELAY[1])
            if self.stopping:
                return
            process = restarted

    async def stop(self) -> None:
        """SIGTERM every worker; SIGKILL those still running after the grace period."""
        self.stopping = True
        for process in list(self.running.values()):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        with trio.move_on_after(self.config.shutdown_grace + 10):
            for process in list(self.running.values()):
                await process.wait()
        for process in list(self.running.values()):
            if process.returncode is None:
                log.error("worker pid %d did not stop in time; killing it", process.pid)
                process.kill()
                await process.wait()
        for index in list(self.lifelines):
            self._drop_lifeline(index)


async def supervise(config: Config, argv: Sequence[str]) -> int:
    """Run `config.workers` workers until SIGINT or SIGTERM; the exit status.

    Raises:
        StoreOpenError: the data dir is not usable, or another server holds it.
        OSError: the address cannot be listened on.
    """
    assert config.data_dir is not None
    owner_fd = await trio.to_thread.run_sync(claim_data_dir, config.data_dir, os.getpid())
    try:
        sock = _listen(config)
    except BaseException:
        os.close(owner_fd)
        raise
    workers = _Workers(config, argv, sock)
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            started: dict[int, trio.Process | None] = {}

            async def start(index: int) -> None:
                started[index] = await workers.start(index)

            async with trio.open_nursery() as nursery:
                for index in range(config.workers):
                    nursery.start_soon(start, index)
            if not all(started.values()):
                print("ds-trio: a worker failed to start; stopping", file=sys.stderr)
                await workers.stop()
                return 2
            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            print(
                f"ds_trio {__version__}: streams at http://{shown}:{port}{config.stream_root}/ "
                f"({config.workers} workers)",
                flush=True,
            )
            print(f"store: {config.data_dir}; Ctrl-C to stop", flush=True)
            async with trio.open_nursery() as nursery:
                for index, process in started.items():
                    assert process is not None
                    nursery.start_soon(workers.keep, index, process)
                async for _ in signals:
                    break
                log.info("shutting down %d workers", len(workers.running))
                await workers.stop()
                nursery.cancel_scope.cancel()
        return 0
    finally:
        sock.close()
        os.close(owner_fd)
