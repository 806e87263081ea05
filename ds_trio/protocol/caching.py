"""Cursors, ETags and Cache-Control choices (spec sections 5.6 and 10).

Cursor algorithm: time is cut into fixed intervals (20 s by default) counted
from an epoch (2024-10-09T00:00:00Z); a cursor is the current interval number
in decimal. Cursors must never go backwards for a client: when the client's
echoed cursor is at or past the current interval (it may have been jittered
forward before), the answer is the client's cursor plus a random jitter of 1 to
3600 seconds, rounded up to whole intervals, so it is always strictly greater.
Randomness is passed in, keeping this module deterministic under test.
"""

from __future__ import annotations

import math
from typing import Final

__all__ = [
    "CACHE_NO_STORE",
    "CURSOR_EPOCH",
    "CURSOR_INTERVAL",
    "GZIP_MIN_BYTES",
    "JITTER_MAX_SECONDS",
    "accepts_gzip",
    "cacheable",
    "cursor_at_least",
    "etag_for",
    "etag_matches",
    "gzip_etag",
    "next_cursor",
]

CURSOR_EPOCH: Final = 1728432000.0  # 2024-10-09T00:00:00Z, Unix seconds
CURSOR_INTERVAL: Final = 20.0  # seconds
JITTER_MAX_SECONDS: Final = 3600
CACHE_NO_STORE: Final = "no-store"
GZIP_MIN_BYTES: Final = 1024  # smaller bodies gain too little to be worth compressing


def next_cursor(
    now: float,
    client_cursor: str | None,
    jitter_seconds: int,
    *,
    interval: float = CURSOR_INTERVAL,
    epoch: float = CURSOR_EPOCH,
) -> str:
    """The cursor for a live response at `now`.

    Args:
        now: Unix time in seconds.
        client_cursor: the `cursor` query parameter, if any; junk is ignored.
        jitter_seconds: a random integer in [1, 3600] from the caller.
    """
    current = max(0, math.floor((now - epoch) / interval))
    try:  # 20 digits outlast the clock; more would be a number too big to print
        fits = client_cursor is not None and len(client_cursor) <= 20
        echoed = int(client_cursor) if fits else None
    except ValueError:
        echoed = None
    if echoed is not None and echoed >= current:
        return str(echoed + max(1, math.ceil(jitter_seconds / interval)))
    return str(current)


def cursor_at_least(
    now: float,
    floor: str,
    *,
    interval: float = CURSOR_INTERVAL,
    epoch: float = CURSOR_EPOCH,
) -> str:
    """The current interval's cursor, or `floor` (a cursor already handed out) if greater.

    An SSE response decides its first cursor with `next_cursor` and each later
    one with this, so its cursors never go backwards and do not run ahead of
    the clock event by event; readers of one interval share one cursor.
    """
    current = max(0, math.floor((now - epoch) / interval))
    return floor if int(floor) >= current else str(current)


def cacheable(visibility: str) -> str:
    """Cache-Control for catch-up and long-poll data: `public` or `private`."""
    return f"{visibility}, max-age=60, stale-while-revalidate=300"


def etag_for(stream_id: str, start: str, end: str, closed: bool) -> str:
    """A strong ETag naming the stream incarnation, the range and its closure."""
    suffix = ":c" if closed else ""
    return f'"{stream_id}:{start}:{end}{suffix}"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header value matches `etag` (weak comparison)."""
    if if_none_match is None:
        return False
    wanted = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == wanted:
            return True
    return False


def gzip_etag(etag: str) -> str:
    """The ETag of the gzip-encoded form of the response tagged `etag`.

    A strong ETag names exact bytes, so each content coding gets its own.
    """
    return etag[:-1] + ':gz"'


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an Accept-Encoding header value admits gzip (RFC 9110 12.5.3).

    `gzip` (or its alias `x-gzip`) with a q-value above zero admits it, and so
    does `*` when gzip is not named; a malformed q-value counts as refusal.
    """
    if not accept_encoding:
        return False
    named: float | None = None
    wildcard: float | None = None
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        quality = _quality(params)
        if coding in ("gzip", "x-gzip"):
            named = quality if named is None else max(named, quality)
        elif coding == "*":
            wildcard = quality
    if named is not None:
        return named > 0
    return wildcard is not None and wildcard > 0


def _quality(params: str) -> float:
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                quality = float(value.strip())
            except ValueError:
                return 0.0
            return quality if 0.0 <= quality <= 1.0 else 0.0
    return 1.0
