"""An ASGI wrapper that lets Hypercorn finish every HTTP exchange cleanly.

It also runs the callbacks a route left for after its response: a writer's
acknowledgement is on the wire before the live readers it wakes get to run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

import trio
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)

__all__ = ["AFTER_RESPONSE", "end_response_after_request"]

AFTER_RESPONSE: Final = "ds_trio.after_response"  # scope key: callbacks for after the response


def _run_callbacks(callbacks: list[Callable[[], None]]) -> None:
    """Run and forget the callbacks, in the order they were added."""
    while callbacks:
        callbacks.pop(0)()


def end_response_after_request(
    asgi_app: ASGIFramework, timeout: float, send_timeout: float = 0.0
) -> ASGIFramework:
    """Let Hypercorn finish each exchange: hold the response's end, then shield it.

    Hypercorn (trio) recycles or closes the connection inside the app's last
    `send`, and first queues `http.disconnect` for the app; Quart-Trio's receive
    loop sees it and cancels the task still inside that `send`. Cut short, the
    recycling never restarts the keep-alive timer (idle connections then live
    until the client leaves, and hold shutdown for the whole grace period), and
    if the client was still sending a body, as after an early 400 or 413, the
    connection is neither reused nor closed, leaking its task and socket.

    So the last message waits (bounded) until the request body is in (Quart
    keeps reading, and discards past MAX_CONTENT_LENGTH), and is then sent
    shielded from that cancellation, even when the body never finished
    arriving: Hypercorn then closes the connection, inside that `send`.

    The shield has a deadline of its own, `send_timeout` (0: none): over HTTP/2
    a client that opens no flow-control window would otherwise hold the send,
    and the server's shutdown, forever.

    The callbacks a route adds to `scope[AFTER_RESPONSE]` run once the last
    message is sent, or when the exchange ends without it.
    """
    send_limit = send_timeout if send_timeout > 0 else math.inf

    async def app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await asgi_app(scope, receive, send)
            return
        request_done = trio.Event()
        after_response: list[Callable[[], None]] = []
        scope[AFTER_RESPONSE] = after_response  # type: ignore[literal-required]

        async def tracking_receive() -> ASGIReceiveEvent:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                request_done.set()
            return message

        status = 0

        async def holding_send(message: ASGISendEvent) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                if not request_done.is_set() and status != 408:  # 408: the body timed out already
                    with trio.move_on_after(timeout):
                        await request_done.wait()
                deadline = trio.current_time() + send_limit
                with trio.CancelScope(shield=True, deadline=deadline):  # see the docstring
                    await send(message)
                if request_done.is_set():
                    _run_callbacks(after_response)
                return
            await send(message)

        try:
            await asgi_app(scope, tracking_receive, holding_send)
        finally:
            _run_callbacks(after_response)

    return app
