"""The ASGI application for running under Hypercorn directly:

    hypercorn --worker-class trio --bind 127.0.0.1:4437 ds_trio.asgi:app

Settings come from `DS_TRIO_*` environment variables (and a TOML file named by
`DS_TRIO_CONFIG`, which they override). The store is opened when Hypercorn
starts the app and closed when it stops it. `python -m ds_trio serve` is the
better way to run a server: it also releases live readers at once on shutdown,
where here they end when Hypercorn's graceful timeout runs out.
"""

from __future__ import annotations

import os
from typing import Any

from quart_trio import QuartTrio

from .config import Config, env_settings
from .http import StreamService, create_app
from .live import StreamWatchers
from .protocol.errors import StorageFailure
from .http.subscriptions import build_manager
from .server import observe_commits, open_store, sweep_expired, tune_gc

__all__ = ["app", "create_asgi_app"]


class _StoreNotOpen:
    """Stands in for the store until the app's startup has opened it."""

    def __getattr__(self, name: str) -> Any:
        async def unavailable(*args: object, **kwargs: object) -> None:
            raise StorageFailure("the store is not open")

        return unavailable


def config_from_environment() -> Config:
    """`DS_TRIO_CONFIG` (a TOML file), overridden by the other `DS_TRIO_*` variables."""
    settings = env_settings()
    path = os.environ.get("DS_TRIO_CONFIG")
    base = Config.from_toml(path) if path else Config()
    return base.with_changes(**settings)


def create_asgi_app(config: Config | None = None, *, tune_gc_at_start: bool = False) -> QuartTrio:
    """An app that opens its store (and starts the expiry sweep) at startup.

    `tune_gc_at_start` is for the process's own app (`app` below): see `tune_gc`.
    """
    config = config or config_from_environment()
    service = StreamService(config, _StoreNotOpen(), StreamWatchers())  # type: ignore[arg-type]
    application = create_app(service)

    @application.before_serving
    async def open_the_store() -> None:
        service.store = await open_store(config)
        observe_commits(service)
        service.subscriptions = build_manager(service)
        await service.subscriptions.load()
        application.nursery.start_soon(sweep_expired, service)
        await application.nursery.start(service.subscriptions.run)
        if tune_gc_at_start:
            tune_gc()

    @application.after_serving
    async def close_the_store() -> None:
        service.watchers.close()
        await service.store.aclose()

    return application


app = create_asgi_app(tune_gc_at_start=True)
