"""Protocol errors: each carries the HTTP status and headers it maps to.

The HTTP layer renders every `ProtocolError` in one place, so a store or a
parser only has to raise the right subclass.
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "ConfigMismatch",
    "ContentTypeMismatch",
    "Forbidden",
    "HeadersTooLarge",
    "InvalidEpochSeq",
    "InvalidOffset",
    "MethodNotAllowed",
    "NotImplementedYet",
    "OriginNotAllowed",
    "Overloaded",
    "PayloadTooLarge",
    "ProtocolError",
    "QuotaExceeded",
    "SeqConflict",
    "SeqGap",
    "StaleEpoch",
    "StorageFailure",
    "StorageFull",
    "StreamClosed",
    "StreamGone",
    "StreamNotFound",
    "TooManyRequests",
    "Unauthorized",
]


class ProtocolError(Exception):
    """Base class: a request the protocol answers with a 4xx/5xx status.

    Args:
        message: a short human-readable reason, sent as the text body.
        headers: extra response headers the status requires.
    """

    status: int = 400

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})


class BadRequest(ProtocolError):
    """Malformed header, query parameter, path or body."""

    status = 400


class InvalidOffset(BadRequest):
    """An offset token that this server never minted and is not a sentinel."""


class InvalidEpochSeq(BadRequest):
    """A new producer epoch that does not start at sequence 0."""


class StreamNotFound(ProtocolError):
    """No stream exists at the path (or it has expired)."""

    status = 404


class StreamGone(ProtocolError):
    """The stream was deleted but is kept for its forks (soft-deleted)."""

    status = 410


class MethodNotAllowed(ProtocolError):
    """The HTTP method is not one the stream resource supports."""

    status = 405


class StaleEpoch(ProtocolError):
    """A producer epoch older than the one the server holds (zombie fencing)."""

    status = 403


class ConfigMismatch(ProtocolError):
    """PUT on an existing stream whose configuration differs."""

    status = 409


class ContentTypeMismatch(ProtocolError):
    """An append whose content type differs from the stream's."""

    status = 409


class StreamClosed(ProtocolError):
    """An append to a closed stream; carries Stream-Closed and the final offset."""

    status = 409


class SeqConflict(ProtocolError):
    """A Stream-Seq that does not increase on the last one."""

    status = 409


class SeqGap(ProtocolError):
    """A producer sequence number past the next expected one."""

    status = 409

    def __init__(self, expected: int, received: int) -> None:
        super().__init__(
            f"producer sequence gap: expected {expected}, received {received}",
            {"Producer-Expected-Seq": str(expected), "Producer-Received-Seq": str(received)},
        )
        self.expected = expected
        self.received = received


class PayloadTooLarge(ProtocolError):
    """A request body over the configured limit."""

    status = 413


class NotImplementedYet(ProtocolError):
    """A protocol feature this server does not implement."""

    status = 501


class Unauthorized(ProtocolError):
    """No credentials, or credentials that are not valid (401 with a Bearer challenge)."""

    status = 401

    def __init__(self, message: str, *, invalid: bool) -> None:
        challenge = 'Bearer realm="ds_trio"'
        if invalid:
            challenge += f', error="invalid_token", error_description="{_quotable(message)}"'
        super().__init__(message, {"WWW-Authenticate": challenge})


class Forbidden(ProtocolError):
    """Valid credentials without the scope the request needs (403)."""

    status = 403

    def __init__(self, message: str, scope: str) -> None:
        challenge = f'Bearer realm="ds_trio", error="insufficient_scope", scope="{scope}"'
        super().__init__(message, {"WWW-Authenticate": challenge})


class TooManyRequests(ProtocolError):
    """A client over its rate or concurrency limit (429 with Retry-After)."""

    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, {"Retry-After": str(max(1, retry_after))})


class HeadersTooLarge(ProtocolError):
    """A request line and headers over the configured size (431)."""

    status = 431


class OriginNotAllowed(ProtocolError):
    """A WebSocket opened by a page from an origin outside `cors_origin` (403)."""

    status = 403


class QuotaExceeded(ProtocolError):
    """A create that would take a prefix past its stream quota (403)."""

    status = 403


class Overloaded(ProtocolError):
    """The server is at a capacity limit shared by all clients (503 with Retry-After)."""

    status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message, {"Retry-After": str(max(1, retry_after))})


def _quotable(text: str) -> str:
    """`text` as a quoted-string's content: printable ASCII, no quote or backslash."""
    return "".join(c for c in text if " " <= c <= "~" and c not in '"\\')


class StorageFailure(ProtocolError):
    """The storage layer failed or is unavailable; nothing was changed."""

    status = 503


class StorageFull(ProtocolError):
    """The store has no room left for the write; nothing was written."""

    status = 507
