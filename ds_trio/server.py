"""Running ds_trio: open the store, build the app, serve it with Hypercorn."""

from __future__ import annotations

import gc
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Final

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.config import Sockets
from hypercorn.trio import serve as hypercorn_serve

from .config import Config
from .http import StreamService, create_app
from .http import idle_close, no_deflate, strict_h11
from .live import StreamWatchers
from .store import MemoryStore, Store
from .store.lmdb import LmdbStore
from .workers import WorkerGroup, start_duties, sweep_expired

__all__ = [
    "hypercorn_config",
    "open_store",
    "serve",
    "sweep_expired",
    "tune_gc",
    "wait_for_signal",
]

log = logging.getLogger("ds_trio")


async def open_store(config: Config) -> Store:
    """The store the configuration asks for: LMDB with a data dir, else memory.

    Raises:
        StoreOpenError: the data dir is not a usable ds_trio store.
    """
    store: MemoryStore | LmdbStore
    if config.data_dir is None:
        store = MemoryStore()
    else:
        store = await LmdbStore.open(
            config.data_dir,
            map_size=config.lmdb_map_size,
            sync=config.lmdb_sync,
            threads=config.store_threads,
        )
    store.stream_quota = config.max_streams_per_prefix
    return store


GC_THRESHOLDS: Final = (50_000, 20, 100)
WEBSOCKET_MAX_MESSAGE: Final = 64 * 1024  # bytes a client message may have; live reads drop them


def tune_gc() -> None:
    """Set the cyclic garbage collector up for a server process: rarer, cheaper runs.

    With the default thresholds a server holding thousands of live readers
    spent about a third of its CPU collecting: every few hundred allocations
    a young collection, and frequent full ones walking every connection's
    objects. Objects that exist at start-up (modules, the app) are frozen out
    of collection, and collections run about seventy times less often; short
    reference cycles (trio's cancellations make some per request) are still
    collected. Call once per process, after start-up, never in a test run.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def observe_commits(service: StreamService) -> None:
    """Feed the store's commit times (LMDB) into the service's metrics."""
    if isinstance(service.store, LmdbStore):
        service.store.commit_observer = service.metrics.commit_seconds.observe


async def wait_for_signal(*signals: int) -> None:
    """Return when the process receives one of `signals` (default SIGINT, SIGTERM)."""
    with trio.open_signal_receiver(*(signals or (signal.SIGINT, signal.SIGTERM))) as received:
        async for _ in received:
            return


class _HyperConfig(HyperConfig):
    """Hypercorn's settings, and a send timeout on the sockets it listens on."""

    send_timeout: float = 0.0  # seconds; 0: none

    def create_sockets(self) -> Sockets:
        sockets = super().create_sockets()
        if self.send_timeout > 0:
            # Accepted connections inherit it: the kernel drops a connection whose
            # client leaves sent data unread (a zero window) or unacknowledged this long.
            # Hypercorn's sends are shielded, so nothing above the socket could bound them.
            milliseconds = max(1, round(self.send_timeout * 1000))
            for sock in [*sockets.insecure_sockets, *sockets.secure_sockets]:
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, milliseconds)
        return sockets


def hypercorn_config(config: Config, listen_fd: int | None = None) -> HyperConfig:
    """Hypercorn's settings for serving `config`: bind, timeouts, logs, backlog.

    `listen_fd` is a listening socket to serve instead of binding host:port
    (a worker of `serve --workers` shares its supervisor's).
    """
    hyper = _HyperConfig()
    hyper.send_timeout = config.send_timeout
    host = f"[{config.host}]" if ":" in config.host else config.host
    hyper.bind = [f"{host}:{config.port}" if listen_fd is None else f"fd://{listen_fd}"]
    hyper.graceful_timeout = config.shutdown_grace
    hyper.accesslog = logging.getLogger("hypercorn.access") if config.access_log else None
    hyper.errorlog = logging.getLogger("hypercorn.error")
    hyper.keep_alive_timeout = config.keep_alive_timeout  # h11 also counts header reading as idle
    hyper.h11_max_incomplete_size = config.max_header_bytes
    hyper.h2_max_header_list_size = config.max_header_bytes
    hyper.websocket_max_message_size = WEBSOCKET_MAX_MESSAGE  # Hypercorn buffers up to this
    hyper.backlog = 2048  # live readers reconnect in bursts
    hyper.include_server_header = False  # names the software to anyone who asks, per response
    return hyper


async def serve(
    config: Config,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    store: Store | None = None,
    listen_fd: int | None = None,
    task_status: trio.TaskStatus[StreamService] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until `shutdown_trigger` returns (default: run until cancelled).

    On shutdown, live readers are released at once and in-flight requests get
    `config.shutdown_grace` seconds to finish. `task_status.started` receives
    the `StreamService`, whose `bound_urls` name the listening addresses.
    With `config.workers` above 1 this process is one worker of several (see
    `ds_trio.workers`) serving `listen_fd`; otherwise it does everything itself.
    """
    strict_h11.install()  # before Hypercorn reads a request
    idle_close.install()
    no_deflate.install()
    service = StreamService(config, store or await open_store(config), StreamWatchers())
    observe_commits(service)
    app = create_app(service)

    async def trigger() -> None:
        if shutdown_trigger is None:
            await trio.sleep_forever()
        else:
            await shutdown_trigger()
        log.info("shutting down: releasing %d live readers", service.watchers.statistics().total)
        service.watchers.close()

    async def run_hypercorn(
        nursery: trio.Nursery, *, task_status: trio.TaskStatus[list[str]]
    ) -> None:
        hyper = hypercorn_config(config, listen_fd)
        await hypercorn_serve(app, hyper, shutdown_trigger=trigger, task_status=task_status)
        nursery.cancel_scope.cancel()  # the sweepers and deliveries end with the server

    try:
        async with trio.open_nursery() as nursery:
            if config.workers > 1:
                await nursery.start(WorkerGroup(service, app).run)
            else:
                await start_duties(service, nursery)
            service.bound_urls = list(await nursery.start(run_hypercorn, nursery))
            task_status.started(service)
    finally:
        await service.store.aclose()
