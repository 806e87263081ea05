"""The work a server does once, whatever its number of workers: subscriptions and expiry."""

from __future__ import annotations

import trio

from ..http import StreamService
from ..http.subscriptions import build_manager, notify_delete
from ..subscriptions import load_or_create_key

__all__ = ["start_duties", "sweep_expired"]


async def sweep_expired(service: StreamService) -> None:
    """Remove expired streams on a timer and release their live readers."""
    while True:
        await trio.sleep(service.config.expiry_sweep_interval)
        for name in await service.store.expire(service.clock()):
            service.watchers.notify(name)
            await notify_delete(service, name)


async def start_duties(service: StreamService, nursery: trio.Nursery) -> None:
    """Take on the subscriptions (load, repair, deliver) and the expiry sweep in `nursery`.

    `service.subscriptions` is set only once the manager has loaded: until
    then the __ds APIs are not answered from a half-loaded manager.
    """
    key = await trio.to_thread.run_sync(load_or_create_key, service.config.data_dir)  # disk
    manager = build_manager(service, key)
    await manager.load()
    service.subscriptions = manager
    await nursery.start(manager.run)  # webhook deliveries and lease expiry live here
    nursery.start_soon(sweep_expired, service)
