"""One worker's part in a server of several processes sharing one data dir.

What each worker does here:
- listens on a private loopback port, serving the same app: the leader takes
  forwarded subscription requests there, and tests can reach one worker;
- joins the peer bus: every notification of its watchers goes to the other
  workers, whose readers it wakes; subscription events go there too;
- competes for leadership; the leader runs the duties (subscriptions, expiry)
  and takes the subscription events of the others; the rest forward the
  `__ds` APIs to it. When the leader dies, a waiting worker takes over.

Appends, reads and producer checks need none of this: the store decides them
inside its write transactions, whichever worker serves the request.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Final

import httpx
import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve as hypercorn_serve

from ..http import StreamService
from ..http.forward import Forwarding
from ..http.subscriptions import APPENDED, DELETED, notify_append, notify_delete
from .bus import PeerBus, PendingEvents
from .duties import start_duties
from .leader import LeaderLock, read_leader

__all__ = ["WorkerGroup"]

log = logging.getLogger("ds_trio.workers")

CHANGED: Final = "N"  # a stream changed: wake its readers
_PRIVATE_LOG: Final = logging.getLogger("ds_trio.workers.private")
_PRIVATE_LOG.setLevel(logging.WARNING)
ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


def _without_lifespan(app: ASGIApp) -> ASGIApp:
    """`app` for a second listener: the first one already ran its startup."""

    async def serve(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    return serve


class WorkerGroup:
    """Run with `nursery.start(group.run)`; it returns once this worker is ready to serve."""

    def __init__(self, service: StreamService, app: ASGIApp) -> None:
        assert service.config.data_dir is not None, "workers share a data dir"
        self.service = service
        self.data_dir = service.config.data_dir
        self.secret = secrets.token_urlsafe(24)
        self.private_url = ""
        self.is_leader = False
        self._app = app
        self._bus = PeerBus(self.data_dir, self._on_event)
        self._hooks = PendingEvents()  # the other workers' subscription events, for the leader

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        service = self.service
        lock = LeaderLock(self.data_dir)
        try:
            # trust_env=False: the leader is on loopback; never send its secret via a proxy
            async with httpx.AsyncClient(timeout=service.config.webhook_timeout, trust_env=False) as client:
                async with trio.open_nursery() as nursery:
                    self.private_url = (await nursery.start(self._serve_privately))[0]
                    log.info("worker pid %d also listens privately on %s", os.getpid(), self.private_url)
                    service.forwarding = Forwarding(self.secret, self._leader, client)
                    about = {"pid": os.getpid(), "url": self.private_url}
                    await nursery.start(self._bus.run, about)
                    service.watchers.relay = self._relay
                    service.peer_events = self._bus.publish
                    if lock.try_acquire():
                        await self._lead(lock, nursery)
                    else:
                        nursery.start_soon(self._wait_to_lead, lock, nursery)
                    task_status.started()
        finally:
            service.watchers.relay = None
            service.peer_events = None
            lock.close()

    async def _serve_privately(self, *, task_status: trio.TaskStatus[list[str]]) -> None:
        hyper = HyperConfig()
        hyper.bind = ["127.0.0.1:0"]
        hyper.accesslog = None
        hyper.errorlog = _PRIVATE_LOG  # not Hypercorn's "Running on": clients never use this port
        hyper.include_server_header = False
        hyper.graceful_timeout = self.service.config.shutdown_grace
        await hypercorn_serve(_without_lifespan(self._app), hyper, task_status=task_status)  # type: ignore[arg-type]

    async def _wait_to_lead(self, lock: LeaderLock, nursery: trio.Nursery) -> None:
        await lock.acquire()
        if self.service.watchers.closed:
            return  # the leader went because the whole server is stopping
        log.info("worker pid %d takes over the subscriptions and the expiry sweep", os.getpid())
        await self._lead(lock, nursery)

    async def _lead(self, lock: LeaderLock, nursery: trio.Nursery) -> None:
        # From here on every worker's subscription events are ours: they queue,
        # this worker's own included, until the manager has loaded, then go to it.
        self.is_leader = True
        self.service.peer_events = self._hooks.add
        await start_duties(self.service, nursery)
        self.service.peer_events = None
        nursery.start_soon(self._run_hooks)
        info = {"pid": os.getpid(), "url": self.private_url, "secret": self.secret}
        await trio.to_thread.run_sync(lock.publish, info)

    async def _leader(self) -> tuple[str, str] | None:
        info = await trio.to_thread.run_sync(read_leader, self.data_dir)  # disk: never on the loop
        if info is None or info.get("pid") == os.getpid():
            return None
        url, secret = info.get("url"), info.get("secret")
        return (url, secret) if isinstance(url, str) and isinstance(secret, str) else None

    def _relay(self, name: str) -> None:
        self._bus.publish(CHANGED, name)

    def _on_event(self, kind: str, name: str) -> None:
        if kind == CHANGED:
            self.service.watchers.wake(name)
        elif kind in (APPENDED, DELETED) and self.is_leader:
            self._hooks.add(kind, name)

    async def _run_hooks(self) -> None:
        """Hand the other workers' stream events to the subscriptions, in order."""
        while True:
            for kind, name in await self._hooks.take():
                if kind == APPENDED:
                    await notify_append(self.service, name)
                else:
                    await notify_delete(self.service, name)
