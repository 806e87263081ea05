"""Parsing and validating the protocol's request headers.

Rule: every header value is validated here, before any store is touched, and
each malformed value raises `BadRequest` with a short reason. Callers pass raw
strings (or None when absent), so nothing here knows about a web framework.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

from .errors import BadRequest

__all__ = [
    "STREAM_SEQ_MAX_LENGTH",
    "ExpiresAt",
    "is_true_flag",
    "media_type",
    "parse_expires_at",
    "parse_stream_seq",
    "parse_ttl",
]

STREAM_SEQ_MAX_LENGTH: Final = 1024  # bytes
_TTL_MAX: Final = 10**12  # seconds: ~31,700 years; anything larger is a typo
_TTL_RE: Final = re.compile(r"0|[1-9][0-9]*")
_RFC3339_RE: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,  # `\d` is [0-9] only: RFC 3339 digits are ASCII
)
_TOKEN_RE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def is_true_flag(value: str | None) -> bool:
    """A presence flag such as Stream-Closed: only `true` (any case) counts."""
    return value is not None and value.strip().lower() == "true"


def parse_ttl(value: str | None) -> int | None:
    """Stream-TTL: a non-negative decimal integer of seconds, strictly spelled.

    Raises:
        BadRequest: signs, leading zeros, decimals, exponents or junk.
    """
    if value is None:
        return None
    if not _TTL_RE.fullmatch(value):
        raise BadRequest("Stream-TTL must be a non-negative integer without leading zeros")
    ttl = int(value) if len(value) <= 20 else _TTL_MAX + 1  # int() refuses 4301+ digits
    if ttl > _TTL_MAX:
        raise BadRequest("Stream-TTL is too large")
    return ttl


class ExpiresAt:
    """A validated Stream-Expires-At: the client's text and its instant."""

    __slots__ = ("text", "timestamp")

    def __init__(self, text: str, timestamp: float) -> None:
        self.text = text
        self.timestamp = timestamp

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExpiresAt) and self.timestamp == other.timestamp

    def __hash__(self) -> int:
        return hash(self.timestamp)

    def __repr__(self) -> str:
        return f"ExpiresAt({self.text!r})"


def parse_expires_at(value: str | None) -> ExpiresAt | None:
    """Stream-Expires-At: an RFC 3339 timestamp with an explicit offset.

    Raises:
        BadRequest: not RFC 3339, or not a real date and time.
    """
    if value is None:
        return None
    text = value.strip()
    match = _RFC3339_RE.fullmatch(text)
    if not match:
        raise BadRequest("Stream-Expires-At must be an RFC 3339 timestamp")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zone = match.group(7), match.group(8)
    if zone in ("Z", "z"):
        tz = UTC
    else:
        sign = 1 if zone[0] == "+" else -1
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            raise BadRequest("Stream-Expires-At has an invalid UTC offset")
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        # A leap second (":60") is read as the next instant.
        leap = second == 60
        moment = datetime(year, month, day, hour, minute, 59 if leap else second, tzinfo=tz)
    except ValueError as exc:
        raise BadRequest("Stream-Expires-At is not a valid date and time") from exc
    timestamp = moment.timestamp() + (1 if leap else 0)
    if fraction:
        timestamp += float(fraction)
    return ExpiresAt(text, timestamp)


def parse_stream_seq(value: str | None) -> bytes | None:
    """Stream-Seq: an opaque, non-empty string compared byte-wise.

    Raises:
        BadRequest: empty or too long.
    """
    if value is None:
        return None
    if value == "":
        raise BadRequest("Stream-Seq must not be empty")
    raw = value.encode("latin-1", errors="replace")
    if len(raw) > STREAM_SEQ_MAX_LENGTH:
        raise BadRequest("Stream-Seq is too long")
    return raw


def media_type(content_type: str) -> str:
    """The lower-cased `type/subtype` of a Content-Type, parameters dropped.

    Raises:
        BadRequest: the value is not `token/token[; params]`.
    """
    essence = content_type.split(";", 1)[0].strip()
    kind, slash, subtype = essence.partition("/")
    if not slash or not _TOKEN_RE.fullmatch(kind) or not _TOKEN_RE.fullmatch(subtype):
        raise BadRequest("malformed Content-Type")
    return essence.lower()
