"""The stack's ceiling: a bare Quart-Trio app on Hypercorn doing the least per route.

It speaks just enough of the protocol's shape for the benchmark's clients:
PUT creates a stream, POST appends its body and wakes live readers, HEAD and
GET report `Stream-Next-Offset` (plain byte positions), GET reads at most
1 MiB, `live=long-poll` waits (204 on timeout) and `live=sse` sends
`event: data` / `event: control` frames as data arrives. No validation, no
JSON framing, no base64: whatever ds_trio does beyond this is its own cost.
Hypercorn and the garbage collector are set up by ds_trio's own functions,
so both serve alike.

    python scripts/bench/ceiling_app.py --host 127.0.0.1 --port 0 --long-poll-timeout 60
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial

import trio
from hypercorn.trio import serve
from quart import Response, request
from quart_trio import QuartTrio

from ds_trio.config import Config
from ds_trio.server import hypercorn_config, tune_gc, wait_for_signal

MAX_READ_BYTES = 1 << 20  # as ds_trio's default max-read-bytes


@dataclass(slots=True)
class Stream:
    """One stream's bytes, and an event set (and replaced) on each append."""

    content_type: str
    data: bytearray = field(default_factory=bytearray)
    changed: trio.Event = field(default_factory=trio.Event)

    def append(self, body: bytes) -> None:
        self.data += body
        self.changed.set()
        self.changed = trio.Event()

    def read(self, start: int) -> tuple[bytes, int]:
        """Up to MAX_READ_BYTES from `start` (one copy), and where they end."""
        end = min(len(self.data), start + MAX_READ_BYTES)
        with memoryview(self.data) as view:
            return bytes(view[start:end]), end

    def position(self, offset: str | None) -> int:
        if offset is None or offset == "-1":
            return 0
        return len(self.data) if offset == "now" else int(offset)


def create_app(long_poll_timeout: float) -> QuartTrio:
    """The ceiling app; streams live under /v1/stream/."""
    app = QuartTrio(__name__)
    app.config.update(RESPONSE_TIMEOUT=None, MAX_CONTENT_LENGTH=64 << 20)
    streams: dict[str, Stream] = {}

    def tail_headers(stream: Stream, position: int) -> dict[str, str]:
        headers = {"Stream-Next-Offset": str(position)}
        if position >= len(stream.data):
            headers["Stream-Up-To-Date"] = "true"
        return headers

    @app.route("/v1/stream/<path:name>", methods=["PUT"])
    async def create(name: str) -> Response:
        content_type = request.headers.get("Content-Type", "application/octet-stream")
        created = name not in streams
        stream = streams.setdefault(name, Stream(content_type))
        return Response(b"", 201 if created else 200, tail_headers(stream, len(stream.data)))

    @app.route("/v1/stream/<path:name>", methods=["POST"])
    async def append(name: str) -> Response:
        stream = streams[name]
        stream.append(await request.get_data(cache=False))
        return Response(b"", 204, {"Stream-Next-Offset": str(len(stream.data))})

    @app.route("/v1/stream/<path:name>", methods=["HEAD"])
    async def head(name: str) -> Response:
        stream = streams[name]
        return Response(b"", 200, tail_headers(stream, len(stream.data)))

    @app.route("/v1/stream/<path:name>", methods=["GET"])
    async def read(name: str) -> Response:
        stream = streams[name]
        position = stream.position(request.args.get("offset"))
        live = request.args.get("live")
        if live == "sse":
            response = Response(sse_frames(stream, position), 200)
            response.headers["Content-Type"] = "text/event-stream"
            response.timeout = None
            return response
        if live == "long-poll" and position >= len(stream.data):
            with trio.move_on_after(long_poll_timeout):
                await stream.changed.wait()
            if position >= len(stream.data):
                return Response(b"", 204, tail_headers(stream, position))
        body, end = stream.read(position)
        headers = tail_headers(stream, end)
        headers["Content-Type"] = stream.content_type
        return Response(body, 200, headers)

    return app


async def sse_frames(stream: Stream, position: int) -> AsyncIterator[bytes]:
    """A control frame now, then a data and a control frame per batch of new bytes."""
    yield control_frame(stream, position)
    while True:
        if position >= len(stream.data):
            await stream.changed.wait()
            continue
        body, position = stream.read(position)
        lines = body.decode().split("\n")
        data = "".join(f"data:{line}\n" for line in lines)
        yield f"event: data\n{data}\n".encode() + control_frame(stream, position)


def control_frame(stream: Stream, position: int) -> bytes:
    control: dict[str, object] = {"streamNextOffset": str(position)}
    if position >= len(stream.data):
        control["upToDate"] = True
    return f"event: control\ndata:{json.dumps(control)}\n\n".encode()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--long-poll-timeout", type=float, default=30.0, help="seconds")
    args = parser.parse_args()
    hyper = hypercorn_config(Config(host=args.host, port=args.port))
    app = create_app(args.long_poll_timeout)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, app, hyper, shutdown_trigger=wait_for_signal))
        for bind in binds:
            print(f"ceiling at {bind}", flush=True)
        tune_gc()  # as ds_trio's own processes do


if __name__ == "__main__":
    trio.run(main)
