"""Stricter reading of HTTP/1.1 request heads than h11's, against request smuggling.

Behind a front proxy (Caddy's reverse_proxy, a load balancer) one upstream
connection carries many clients' requests. If the proxy and this server
disagree about where a request's body ends, bytes that one client sent as a
body are read here as a request of their own (request smuggling): it runs
unseen by the proxy's rules and can capture the next client's request. h11
0.16, as a server, resolves the ambiguous cases on its own instead of
refusing them:

- Content-Length together with Transfer-Encoding: h11 reads the body as chunked
  and keeps the connection. RFC 9112 6.1 and 6.3 call this "ought to be handled
  as an error" and require the connection to be closed after responding.
- several Content-Length lines, or a list value (`5, 5`): h11 merges identical
  values. RFC 9112 6.3 makes an invalid Content-Length an unrecoverable error
  (400, then close); RFC 9110 8.6 allows, but does not require, the merging.
- Content-Length with leading zeros or beyond 2**63 - 1: digits that other
  parsers read in another base or wrap around.
- Transfer-Encoding in an HTTP/1.0 request: RFC 9112 6.1 says to treat the
  framing as faulty; h11 reads it as chunked.
- obs-fold (a field line continued on the next line): h11 unfolds it; RFC 9112
  5.2 lets a server reject it with 400 instead, which no legitimate client
  notices (RFC 9112 forbids sending it).
- a bare LF ending a line of the head: h11 accepts it (RFC 9112 2.2 allows
  either); a proxy that does not sees a different set of header fields.
- `Upgrade: h2c`: Hypercorn switches the connection to HTTP/2, and a proxy
  that forwards Upgrade (Caddy does, for WebSockets) then passes on HTTP/2
  requests its rules never see (h2c smuggling). The h2c offer and its
  HTTP2-Settings are dropped from the request instead, so it is served as
  HTTP/1.1 (RFC 9110 7.8 lets a server ignore Upgrade); other offers stay.
- the HTTP/2 preface (`PRI * HTTP/2.0`, prior knowledge): Hypercorn's h2
  code let one request with a non-ASCII path or method end the whole process,
  and a client that opens no flow-control window could hold a send forever.
  ds_trio serves HTTP/1.1 only (a proxy in front speaks HTTP/2 and 3 to
  clients), so the preface is refused with 400.

`install()` makes h11 refuse all but h2c upgrades with 400, which Hypercorn sends
with `Connection: close` before closing the connection. Only the reader of
request heads changes: the one h11 uses when the peer is a client (`(CLIENT,
IDLE)` in `h11._readers.READERS`). Responses this server sends, and responses
received by httpx (which uses h11 in this process for webhooks and
forwarding), are untouched. What h11 already refuses keeps its own status
(conflicting lengths, bad chunk sizes: 400; a coding other than chunked: 501).

This patches h11 internals. `install()` checks that they are where this
module expects, and that the patched parser refuses a smuggling request, and
raises `H11InternalsChanged` if not, rather than serve unprotected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol

import h11
from h11 import _connection as h11_connection
from h11 import _readers as h11_readers

__all__ = ["H11InternalsChanged", "install"]

MAX_CONTENT_LENGTH: Final = 2**63 - 1

FOLD_STARTS: Final = frozenset(b" \t")  # a field line starting so continues the one before
FRAMING_STARTS: Final = frozenset(b"cCtT")  # Content-Length and Transfer-Encoding start so

# The key in h11's reader table: the peer's role and state when it sends a request head.
REQUEST_HEAD: Final = (h11.CLIENT, h11.IDLE)


class H11InternalsChanged(RuntimeError):
    """h11 no longer has the internals `install()` patches: update this module."""


class ReceiveBuffer(Protocol):
    """The part of h11's receive buffer the request-head reader uses."""

    def __len__(self) -> int: ...

    def maybe_extract_lines(self) -> list[bytearray] | None: ...


RequestHeadReader = Callable[[ReceiveBuffer], h11.Request | None]


class _RecordingBuffer:
    """h11's receive buffer, remembering the head lines it hands out and their size."""

    __slots__ = ("_buffer", "consumed", "lines")

    def __init__(self, buffer: ReceiveBuffer) -> None:
        self._buffer = buffer
        self.lines: list[bytearray] | None = None
        self.consumed = 0  # bytes taken from the buffer, line ends included

    def __len__(self) -> int:
        return len(self._buffer)

    def __getattr__(self, name: str) -> object:
        return getattr(self._buffer, name)

    def maybe_extract_lines(self) -> list[bytearray] | None:
        before = len(self._buffer)
        self.lines = self._buffer.maybe_extract_lines()
        self.consumed = before - len(self._buffer)
        return self.lines


def _refused(reason: str) -> h11.LocalProtocolError:
    # Raised while reading, h11 turns it into the RemoteProtocolError Hypercorn answers.
    return h11.LocalProtocolError(reason, error_status_hint=400)


def _check_request_head(lines: list[bytearray], consumed: int, http_version: bytes) -> None:
    """Refuse a head h11 accepted but a front proxy could frame differently.

    `lines` are the head's lines as h11's buffer returned them (request line
    first, line ends removed), `consumed` the bytes they took on the wire.

    Raises:
        h11.LocalProtocolError: with status hint 400.
    """
    if consumed != sum(map(len, lines)) + 2 * len(lines) + 2:  # + 2: the empty line
        raise _refused("request head lines must end in CRLF")
    content_lengths: list[bytes] = []
    transfer_encoding = False
    for line in lines[1:]:
        first = line[0]  # no line is empty: an empty line ends the head
        if first in FOLD_STARTS:
            raise _refused("obsolete line folding in a request")
        if first not in FRAMING_STARTS:
            continue
        name, _, value = line.partition(b":")
        name = name.lower()
        if name == b"content-length":
            content_lengths.append(bytes(value.strip(b" \t")))
        elif name == b"transfer-encoding":
            transfer_encoding = True
    if transfer_encoding and content_lengths:
        raise _refused("both Transfer-Encoding and Content-Length")
    if transfer_encoding and http_version < b"1.1":
        raise _refused("Transfer-Encoding in an HTTP/1.0 request")
    if len(content_lengths) > 1:
        raise _refused("more than one Content-Length")
    if content_lengths:
        length = content_lengths[0]
        if not length.isdigit() or (length.startswith(b"0") and length != b"0"):
            raise _refused("Content-Length must be one decimal number")
        if len(length) > 19 or int(length) > MAX_CONTENT_LENGTH:
            raise _refused("Content-Length too large")


def _names_h2c(protocol: bytes) -> bool:
    # As Hypercorn reads the value: a str strip, so b"\xa0h2c" is h2c too.
    return protocol.decode("latin1").strip().lower() == "h2c"


def _ignore_h2c(request: h11.Request) -> h11.Request:
    """`request` without its offer to switch to cleartext HTTP/2, or `request` if none."""
    offered = False
    headers: list[tuple[bytes, bytes]] = []
    for name, value in request.headers.raw_items():
        lowered = name.lower()
        if lowered == b"http2-settings":
            continue
        if lowered == b"upgrade":
            protocols = [p.strip(b" \t") for p in value.split(b",") if p.decode("latin1").strip()]
            kept = [protocol for protocol in protocols if not _names_h2c(protocol)]
            if len(kept) < len(protocols):
                offered = True
                if not kept:
                    continue
                value = b", ".join(kept)
        headers.append((name, value))
    if not offered:
        return request
    return h11.Request(
        method=request.method,
        target=request.target,
        headers=headers,
        http_version=request.http_version,
    )


def _strict(read_request_head: RequestHeadReader) -> RequestHeadReader:
    def read_strict_request_head(buffer: ReceiveBuffer) -> h11.Request | None:
        recording = _RecordingBuffer(buffer)
        request = read_request_head(recording)
        if request is not None:
            if recording.lines is None:
                raise H11InternalsChanged("h11 read a request head without extracting its lines")
            if request.method == b"PRI":  # the HTTP/2 connection preface
                raise _refused("HTTP/2 over cleartext is not served; use HTTP/1.1")
            _check_request_head(recording.lines, recording.consumed, request.http_version)
            request = _ignore_h2c(request)
        return request

    read_strict_request_head.strict_h11 = True  # type: ignore[attr-defined]
    return read_strict_request_head


def _check_internals() -> None:
    original = getattr(h11_readers, "maybe_read_from_IDLE_client", None)
    readers = getattr(h11_readers, "READERS", None)
    if not isinstance(readers, dict) or getattr(h11_connection, "READERS", None) is not readers:
        raise H11InternalsChanged("h11._connection no longer reads h11._readers.READERS")
    if original is None or readers.get(REQUEST_HEAD) is not original:
        raise H11InternalsChanged("h11's request-head reader is not READERS[(CLIENT, IDLE)]")
    if "maybe_extract_lines" not in original.__code__.co_names:
        raise H11InternalsChanged("h11's request-head reader no longer uses maybe_extract_lines")


def _self_test() -> None:
    head = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
    accepted = h11.Connection(h11.SERVER)
    accepted.receive_data(head + b"\r\n")
    if not isinstance(accepted.next_event(), h11.Request):
        raise H11InternalsChanged("the patched h11 refuses a plain request")
    refused = h11.Connection(h11.SERVER)
    refused.receive_data(head + b"Transfer-Encoding: chunked\r\n\r\n")
    try:
        refused.next_event()
    except h11.RemoteProtocolError as exc:
        if exc.error_status_hint == 400:
            return
    raise H11InternalsChanged("the patched h11 accepts Content-Length with Transfer-Encoding")


def install() -> None:
    """Make h11 refuse ambiguously framed requests with 400 (see the module docstring).

    Idempotent; affects every h11 server connection in the process.

    Raises:
        H11InternalsChanged: this h11 is not the one this module patches.
    """
    readers = getattr(h11_readers, "READERS", {})
    if getattr(readers.get(REQUEST_HEAD), "strict_h11", False):
        return
    _check_internals()
    original = readers[REQUEST_HEAD]
    readers[REQUEST_HEAD] = _strict(original)
    try:
        _self_test()
    except BaseException:
        readers[REQUEST_HEAD] = original
        raise
