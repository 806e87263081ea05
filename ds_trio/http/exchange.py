"""An ASGI wrapper that lets Hypercorn finish every HTTP exchange cleanly."""

from __future__ import annotations

import trio
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)

__all__ = ["end_response_after_request"]


def end_response_after_request(asgi_app: ASGIFramework, timeout: float) -> ASGIFramework:
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
    shielded from that cancellation.
    """

    async def app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await asgi_app(scope, receive, send)
            return
        request_done = trio.Event()

        async def tracking_receive() -> ASGIReceiveEvent:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                request_done.set()
            return message

        async def holding_send(message: ASGISendEvent) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with trio.move_on_after(timeout):
                    await request_done.wait()
                if request_done.is_set():
                    with trio.CancelScope(shield=True):  # see the docstring
                        await send(message)
                    return
            await send(message)

        await asgi_app(scope, tracking_receive, holding_send)

    return app
