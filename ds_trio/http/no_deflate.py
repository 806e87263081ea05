"""Turning down WebSocket compression (permessage-deflate), which Hypercorn 0.18 always accepts.

Every browser offers permessage-deflate, and Hypercorn accepts whatever is
offered. Each connection then keeps a compressor of about 300 KiB for its
whole life, and compresses every message on the event loop by itself: one
batch of a live read (up to `max_read_bytes`) woken for a thousand WebSocket
readers would be compressed a thousand times, and messages from clients are
inflated before their size is checked. RFC 7692 lets a server decline the
offer; `install()` makes Hypercorn's handshake ignore extension offers, so it
accepts none and every frame goes out as it is.
"""

from __future__ import annotations

from typing import Any

from hypercorn.protocol import ws_stream

from .idle_close import HypercornInternalsChanged

__all__ = ["install"]

_PROBE_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example Sec-WebSocket-Key


def _no_extensions(handshake_class: Any) -> Any:
    class NoExtensionsHandshake(handshake_class):  # type: ignore[misc, valid-type]
        """Hypercorn's handshake, blind to Sec-WebSocket-Extensions."""

        ds_trio_no_deflate = True

        def __init__(self, headers: list[tuple[bytes, bytes]], http_version: str) -> None:
            super().__init__(headers, http_version)
            self.extensions = None  # what accept() negotiates from: nothing

    return NoExtensionsHandshake


def _self_test(handshake_class: Any) -> None:
    headers = [
        (b"connection", b"Upgrade"),
        (b"upgrade", b"websocket"),
        (b"sec-websocket-key", _PROBE_KEY),
        (b"sec-websocket-version", b"13"),
        (b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits"),
    ]
    handshake = handshake_class(headers, "1.1")
    _, response_headers, _ = handshake.accept(None, [])
    if any(name == b"sec-websocket-extensions" for name, _ in response_headers):
        raise HypercornInternalsChanged("Hypercorn's handshake still accepts permessage-deflate")


def install() -> None:
    """Patch Hypercorn's WebSocket handshake class (idempotent).

    Raises:
        HypercornInternalsChanged: the class, or the code that makes it, moved.
    """
    current = getattr(ws_stream, "Handshake", None)
    if getattr(current, "ds_trio_no_deflate", False):
        return
    stream_class = getattr(ws_stream, "WSStream", None)
    handle = getattr(stream_class, "handle", None)
    if current is None or handle is None or "Handshake" not in handle.__code__.co_names:
        raise HypercornInternalsChanged("hypercorn.protocol.ws_stream.Handshake has changed")
    patched = _no_extensions(current)
    _self_test(patched)
    ws_stream.Handshake = patched
