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
    "JITTER_MAX_SECONDS",
    "cacheable",
    "etag_for",
    "etag_matches",
    "next_cursor",
]

CURSOR_EPOCH: Final = 1728432000.0  # 2024-10-09T00:00:00Z, Unix seconds
CURSOR_INTERVAL: Final = 20.0  # seconds
JITTER_MAX_SECONDS: Final = 3600
CACHE_NO_STORE: Final = "no-store"


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
    try:
        echoed = int(client_cursor) if client_cursor is not None else None
    except ValueError:
        echoed = None
    if echoed is not None and echoed >= current:
        return str(echoed + max(1, math.ceil(jitter_seconds / interval)))
    return str(current)


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
