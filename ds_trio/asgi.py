"""The ASGI application for running under Hypercorn directly:

    hypercorn --worker-class trio --bind 127.0.0.1:4437 ds_trio.asgi:app

Settings come from `DS_TRIO_*` environment variables (and a TOML file named by
`DS_TRIO_CONFIG`, which they override). The store is opened when Hypercorn
starts the app and closed when it stops it. With an LMDB data dir every
Hypercorn worker (`--workers N`) joins the others as in `serve --workers`;
the in-memory store refuses to run in more than one. `python -m ds_trio serve` is the
better way to run a server: it also releases live readers at once on shutdown,
where here they end when Hypercorn's graceful timeout runs out.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
from typing import Any

import trio
from quart_trio import QuartTrio

from .config import Config, env_settings, read_toml
from .http import StreamService, create_app
from .http import idle_close, no_deflate, strict_h11
from .live import StreamWatchers
from .protocol.errors import StorageFailure
from .server import observe_commits, open_store, tune_gc
from .store.lmdb import StoreOpenError
from .workers import WorkerGroup, start_duties

__all__ = ["app", "create_asgi_app"]

log = logging.getLogger("ds_trio")


class _StoreNotOpen:
    """Stands in for the store until the app's startup has opened it."""

    def __getattr__(self, name: str) -> Any:
        async def unavailable(*args: object, **kwargs: object) -> None:
            raise StorageFailure("the store is not open")

        return unavailable


def config_from_environment() -> Config:
    """`DS_TRIO_CONFIG` (a TOML file), overridden by the other `DS_TRIO_*` variables."""
    path = os.environ.get("DS_TRIO_CONFIG")
    settings = read_toml(path) if path else {}
    return Config.from_mapping({**settings, **env_settings()})


def create_asgi_app(config: Config | None = None, *, tune_gc_at_start: bool = False) -> QuartTrio:
    """An app that opens its store (and starts the expiry sweep) at startup.

    `tune_gc_at_start` is for the process's own app (`app` below): see `tune_gc`.
    """
    config = config or config_from_environment()
    service = StreamService(config, _StoreNotOpen(), StreamWatchers())  # type: ignore[arg-type]
    application = create_app(service)

    @application.before_serving
    async def open_the_store() -> None:
        try:
            if config.data_dir is None:
                _refuse_sibling_workers()
            service.store = await open_store(config)
        except (StoreOpenError, SiblingWorker) as exc:
            # One clear line and a failing exit status. Raised, this became
            # pages of traceback and Hypercorn's master still exited 0; nothing
            # is open yet, so the worker may end on the spot.
            log.error("ds_trio cannot start: %s", exc)
            logging.shutdown()
            os._exit(2)
        observe_commits(service)
        await application.nursery.start(run_in_background)
        if tune_gc_at_start:
            tune_gc()

    background = trio.CancelScope()  # the duties (or this worker's part in a group)
    background_done = trio.Event()

    async def run_in_background(*, task_status: trio.TaskStatus[None]) -> None:
        with background:
            try:
                async with trio.open_nursery() as nursery:
                    if config.data_dir is not None:
                        await nursery.start(WorkerGroup(service, application).run)
                    else:
                        await start_duties(service, nursery)
                    task_status.started()
            finally:
                background_done.set()

    @application.after_serving
    async def close_the_store() -> None:
        service.watchers.close()
        background.cancel()  # nothing may use the store once it is closed
        await background_done.wait()
        await service.store.aclose()

    return application


_sibling_guard: list[socket.socket] = []


class SiblingWorker(RuntimeError):
    """Another Hypercorn worker of this master already holds the in-memory store."""


def _refuse_sibling_workers() -> None:
    """Fail the start of a second Hypercorn worker holding an in-memory store.

    Each worker would have a store of its own: clients would see streams come
    and go with the worker they reach. The first worker of a Hypercorn master
    holds an abstract socket named after the master; its siblings cannot bind it.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    guard = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        guard.bind(f"\0ds_trio/memory-store/{parent.pid}")
    except OSError:
        guard.close()
        raise SiblingWorker(
            "the in-memory store lives in one process: set DS_TRIO_DATA_DIR "
            "to run several Hypercorn workers"
        ) from None
    _sibling_guard.append(guard)  # held until the process ends


strict_h11.install()
idle_close.install()
no_deflate.install()
app = create_asgi_app(tune_gc_at_start=True)
