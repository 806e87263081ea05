"""A real webhook receiver on loopback (trio + h11) that records every request."""

from __future__ import annotations

import json
from functools import partial
from dataclasses import dataclass, field

import h11
import trio

__all__ = ["Delivery", "Receiver", "start_receiver"]


@dataclass(frozen=True)
class Delivery:
    """One webhook request as received."""

    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Replies with the queued (status, JSON) replies in turn, then `default`."""

    url: str = ""
    default: tuple[int, object] = (200, {})
    replies: list[tuple[int, object]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # trio.current_time() per request
    _send: trio.MemorySendChannel[Delivery] | None = None
    inbox: trio.MemoryReceiveChannel[Delivery] | None = None

    async def next(self, timeout: float = 5.0) -> Delivery:
        assert self.inbox is not None
        with trio.fail_after(timeout):
            return await self.inbox.receive()

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        headers: dict[str, str] = {}
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                status, reply = self.replies.pop(0) if self.replies else self.default
                self.arrivals.append(trio.current_time())
                assert self._send is not None
                self._send.send_nowait(Delivery(headers, body))
                payload = json.dumps(reply).encode()
                response = h11.Response(
                    status_code=status,
                    headers=[
                        ("Content-Type", "application/json"),
                        ("Content-Length", str(len(payload))),
                        ("Connection", "close"),
                    ],
                )
                await stream.send_all(conn.send(response) + conn.send(h11.Data(data=payload)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                await stream.aclose()
                return
            else:
                return


async def start_receiver(nursery: trio.Nursery, **fields: object) -> Receiver:
    """A receiver listening on 127.0.0.1 port 0 inside `nursery`."""
    receiver = Receiver(**fields)  # type: ignore[arg-type]
    receiver._send, receiver.inbox = trio.open_memory_channel[Delivery](1000)
    listeners = await nursery.start(partial(trio.serve_tcp, receiver.handle, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    receiver.url = f"http://127.0.0.1:{port}/webhook"
    return receiver
