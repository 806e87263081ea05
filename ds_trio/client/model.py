"""The command-line client's pure part: exit codes, errors, URLs, headers, output.

Rule: nothing here does I/O. Every outcome a shell user sees is decided here:
which exit code an answer maps to, what the one-line message says, which
request headers a command sends and how metadata and JSON messages print.
Header validation reuses the server's own parsers (`ds_trio.protocol`), so the
client refuses exactly what the server would, before sending anything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from http import HTTPStatus
from typing import Final
from urllib.parse import quote, urlsplit

from ..protocol.errors import BadRequest
from ..protocol.headers import is_true_flag, parse_expires_at, parse_ttl
from ..protocol.json_mode import JSON_MEDIA_TYPE, flatten_json_body
from ..protocol.producers import MAX_PRODUCER_INT

__all__ = [
    "DEFAULT_SERVER",
    "EXIT_CODES_HELP",
    "ClientError",
    "Exit",
    "Position",
    "Producer",
    "Refused",
    "Stalled",
    "Unavailable",
    "UsageError",
    "append_headers",
    "control_position",
    "create_headers",
    "describe_stream",
    "failure_for",
    "is_json",
    "json_lines",
    "position_from",
    "stream_url",
]

DEFAULT_SERVER: Final = "http://127.0.0.1:4437/v1/stream"
_PATH_SAFE: Final = "/%:@!$&'()*+,;=-._~"  # kept as typed: a name may already be percent-encoded
_MESSAGE_MAX: Final = 200  # characters of a server's error text worth one stderr line
# Body-less answers (HEAD, or a proxy's empty error) still deserve a reason.
_FALLBACK_TEXT: Final = {
    404: "stream not found",
    410: "stream was deleted",
    401: "credentials required",
}
_DESCRIPTION_RE: Final = re.compile(r'error_description="([^"]*)"')


class Exit(IntEnum):
    """What a command's exit status tells the shell."""

    OK = 0
    REFUSED = 1  # the server answered 4xx: not found, closed, conflict, bad token, ...
    USAGE = 2  # the command line itself is wrong; nothing was sent
    UNAVAILABLE = 3  # no answer: cannot connect, timed out, 5xx, or a garbled answer
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
    BROKEN_PIPE = 141  # stdout's reader went away, as for any tool killed by SIGPIPE


EXIT_CODES_HELP: Final = """\
exit status:
  0    success
  1    the server refused (4xx), e.g. "ds-trio: 404 stream not found"
  2    usage error: bad arguments (nothing was written)
  3    cannot connect, timed out, or the server failed (5xx)
  130  interrupted (Ctrl-C); tail prints the offset to resume from
  141  stdout was closed by its reader (e.g. `| head`)"""


class ClientError(Exception):
    """Base class: a command ends with `message` on stderr and exit status `code`."""

    code: Exit = Exit.REFUSED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(ClientError):
    """The arguments cannot make a valid request."""

    code = Exit.USAGE


class Refused(ClientError):
    """The server answered with a 4xx status."""

    code = Exit.REFUSED

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status} {text}")
        self.status = status


class Unavailable(ClientError):
    """The server could not be reached, timed out, failed (5xx) or answered nonsense."""

    code = Exit.UNAVAILABLE


class Stalled(Unavailable):
    """A response stopped arriving; a live read asks again instead of failing."""


def failure_for(status: int, body: bytes, headers: Mapping[str, str]) -> ClientError:
    """The error for a non-2xx answer, with the server's short text when it sent one."""
    plain = headers.get("content-type", "").startswith("text/plain")  # not a proxy's HTML page
    text = _first_line(body) if plain else ""
    if not text and (match := _DESCRIPTION_RE.search(headers.get("www-authenticate", ""))):
        text = match.group(1)
    if not text:
        text = _FALLBACK_TEXT.get(status) or _phrase(status)
    if status >= 500:
        return Unavailable(f"{status} {text}")
    return Refused(status, text)


def _first_line(body: bytes) -> str:
    line = body.decode("utf-8", errors="replace").strip().split("\n", 1)[0].strip()
    return line[:_MESSAGE_MAX]


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "unexpected status"


def stream_url(target: str, server: str) -> str:
    """The URL of a stream given as a full URL, or as a name under `server`.

    Raises:
        UsageError: not http(s), no host, or an empty name.
    """
    if "://" in target:
        return _checked_url(target, "stream URL")
    base = _checked_url(server, "server URL (--server or DS_TRIO_URL)").rstrip("/")
    name = target.strip("/")
    if not name:
        raise UsageError("the stream name is empty")
    return f"{base}/{quote(name, safe=_PATH_SAFE)}"


def _checked_url(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"bad {what}: {url!r} (expected http://host[:port]/...)")
    return url


@dataclass(frozen=True)
class Producer:
    """An idempotent producer's identity for one request (spec 5.2.1)."""

    id: str
    epoch: int
    seq: int

    def __post_init__(self) -> None:
        if not self.id:
            raise UsageError("--producer must not be empty")
        for name, value in (("--epoch", self.epoch), ("--seq", self.seq)):
            if not 0 <= value <= MAX_PRODUCER_INT:
                raise UsageError(f"{name} must be an integer from 0 to {MAX_PRODUCER_INT}")

    @classmethod
    def from_options(
        cls, producer_id: str | None, epoch: int | None, seq: int | None
    ) -> Producer | None:
        """None when no producer option was given; all three or none, like the server.

        Raises:
            UsageError: only some of --producer, --epoch and --seq.
        """
        given = (producer_id, epoch, seq)
        if all(value is None for value in given):
            return None
        if producer_id is None or epoch is None or seq is None:
            raise UsageError("--producer, --epoch and --seq go together")
        return cls(producer_id, epoch, seq)

    def headers(self) -> dict[str, str]:
        return {
            "Producer-Id": self.id,
            "Producer-Epoch": str(self.epoch),
            "Producer-Seq": str(self.seq),
        }


def create_headers(
    content_type: str, *, ttl: str | None, expires_at: str | None, closed: bool
) -> dict[str, str]:
    """Headers of a create (PUT), checked as the server checks them.

    Raises:
        UsageError: a TTL or expiry time the server would refuse, or both.
    """
    headers = {"Content-Type": content_type}
    try:
        if ttl is not None and expires_at is not None:
            raise BadRequest("give --ttl or --expires-at, not both")
        if ttl is not None:
            parse_ttl(ttl)
            headers["Stream-TTL"] = ttl
        if expires_at is not None:
            parse_expires_at(expires_at)
            headers["Stream-Expires-At"] = expires_at.strip()
    except BadRequest as exc:
        raise UsageError(exc.message) from None
    if closed:
        headers["Stream-Closed"] = "true"
    return headers


def append_headers(
    content_type: str | None, *, close: bool, producer: Producer | None
) -> dict[str, str]:
    """Headers of an append (POST); `content_type` is None for a close without data."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    if close:
        headers["Stream-Closed"] = "true"
    if producer is not None:
        headers.update(producer.headers())
    return headers


@dataclass(frozen=True)
class Position:
    """Where a reader stands after one response: what to ask for next."""

    offset: str
    cursor: str | None = None
    up_to_date: bool = False
    closed: bool = False


def position_from(headers: Mapping[str, str], previous: str) -> Position:
    """The position a read response's headers announce (spec 5.6, 5.7)."""
    closed = is_true_flag(headers.get("stream-closed"))
    return Position(
        offset=headers.get("stream-next-offset") or previous,
        cursor=headers.get("stream-cursor"),
        up_to_date=closed or is_true_flag(headers.get("stream-up-to-date")),
        closed=closed,
    )


def control_position(data: str, previous: str) -> Position:
    """The position an SSE `control` event announces (spec 5.8).

    Raises:
        Unavailable: the event is not the JSON object the spec describes.
    """
    try:
        control = json.loads(data)
        offset = control.get("streamNextOffset", previous) if isinstance(control, dict) else None
    except ValueError:
        offset = None
    if not isinstance(offset, str) or not offset:
        raise Unavailable(f"the server sent a malformed SSE control event: {data[:_MESSAGE_MAX]!r}")
    cursor = control.get("streamCursor")
    closed = control.get("streamClosed") is True
    return Position(
        offset=offset,
        cursor=cursor if isinstance(cursor, str) else None,
        up_to_date=closed or control.get("upToDate") is True,
        closed=closed,
    )


def is_json(content_type: str | None) -> bool:
    """Whether a Content-Type names a JSON-mode stream (spec 9.1)."""
    return (content_type or "").split(";", 1)[0].strip().lower() == JSON_MEDIA_TYPE


def json_lines(body: bytes) -> bytes:
    """A JSON-mode read's array as one message per line, each exactly as stored.

    A raw CR or LF can only be whitespace between JSON tokens (inside strings
    they must be escaped), so removing them keeps every message's meaning and
    puts it on one line.

    Raises:
        Unavailable: the body is not a JSON array.
    """
    try:
        messages = flatten_json_body(body, allow_empty_array=True)
    except BadRequest:
        raise Unavailable("the server sent a JSON read that is not valid JSON") from None
    if not body.lstrip().startswith(b"["):
        raise Unavailable("the server sent a JSON read that is not an array")
    return b"".join(m.replace(b"\r", b"").replace(b"\n", b"") + b"\n" for m in messages)


def describe_stream(headers: Mapping[str, str]) -> str:
    """A HEAD answer as `key: value` lines, stable for scripts (spec 5.5)."""
    lines = [
        f"content-type: {headers.get('content-type', 'application/octet-stream')}",
        f"next-offset: {headers.get('stream-next-offset', '')}",
        f"closed: {'true' if is_true_flag(headers.get('stream-closed')) else 'false'}",
    ]
    if (ttl := headers.get("stream-ttl")) is not None:
        lines.append(f"ttl: {ttl}")
    if (expires_at := headers.get("stream-expires-at")) is not None:
        lines.append(f"expires-at: {expires_at}")
    return "\n".join(lines) + "\n"
