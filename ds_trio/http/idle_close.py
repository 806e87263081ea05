"""Closing a connection as soon as its client leaves it idle (a Hypercorn fix).

Hypercorn 0.18 (trio) keeps a connection's keep-alive timer running after the
client closed the connection between requests: the connection's task group
waits for the timer, so its socket (in CLOSE-WAIT) and two tasks stay for the
whole `keep_alive_timeout`. Clients that open and close connections quickly
pile them up, file descriptors included. `install()` stops the timer once the
client's side has ended; a request still in flight finishes as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from hypercorn.trio import tcp_server

__all__ = ["HypercornInternalsChanged", "install"]


class HypercornInternalsChanged(RuntimeError):
    """Hypercorn's connection class is not what this fix patches."""


def install() -> None:
    """Patch Hypercorn's trio connection class (idempotent).

    Raises:
        HypercornInternalsChanged: the method or attribute it relies on moved.
    """
    server_class: Any = tcp_server.TCPServer
    read_data: Callable[[Any], Awaitable[None]] | None = getattr(server_class, "_read_data", None)
    if read_data is None or "idle_task" not in server_class.__init__.__code__.co_names:
        raise HypercornInternalsChanged("hypercorn.trio.tcp_server.TCPServer has changed")
    if getattr(read_data, "ds_trio_idle_close", False):
        return

    async def read_data_then_stop_idle_timer(self: Any) -> None:
        await read_data(self)
        await self.idle_task.stop()

    read_data_then_stop_idle_timer.ds_trio_idle_close = True  # type: ignore[attr-defined]
    server_class._read_data = read_data_then_stop_idle_timer
