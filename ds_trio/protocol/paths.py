"""Stream names: validating and canonicalising the path below the stream root.

Rule: a stream has exactly one canonical name, so two spellings of a URL never
reach two streams and one stream is never reached by a traversal trick. The
raw (still percent-encoded) path is split on literal `/`; each segment is
percent-decoded, checked, and re-encoded the one canonical way: unreserved
characters literal, everything else as upper-case `%XX`. An encoded slash
(`%2F`) therefore stays part of its segment and never aliases a real `/`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final
from urllib.parse import quote

from .errors import BadRequest, QuotaExceeded

__all__ = [
    "MAX_NAME_BYTES",
    "RESERVED_PREFIX",
    "canonical_stream_name",
    "glob_covers",
    "glob_match",
    "check_stream_quota",
    "quota_prefix",
]

MAX_NAME_BYTES: Final = 1024  # decoded bytes in the whole name
MAX_SEGMENTS: Final = 32
RESERVED_PREFIX: Final = "__ds"  # the first segment reserved for server APIs
_HEX: Final = frozenset("0123456789abcdefABCDEF")
_SAFE: Final = "-._~!$&'()*+,;=:@"


def _decode_segment(raw: str) -> bytes:
    out = bytearray()
    index = 0
    while index < len(raw):
        char = raw[index]
        if char == "%":
            pair = raw[index + 1 : index + 3]
            if len(pair) != 2 or not set(pair) <= _HEX:
                raise BadRequest("malformed percent-encoding in stream path")
            out.append(int(pair, 16))
            index += 3
        else:
            try:
                out.extend(char.encode("utf-8"))
            except UnicodeEncodeError as exc:  # a lone surrogate
                raise BadRequest("stream path is not valid UTF-8") from exc
            index += 1
    return bytes(out)


def canonical_stream_name(raw_path: str) -> str:
    """The canonical stream name for the raw path below the stream root.

    Raises:
        BadRequest: empty, too long or too deep; an empty, `.` or `..` segment;
            a NUL or other control character; invalid UTF-8 or percent-encoding.
    """
    if raw_path == "":
        raise BadRequest("missing stream name")
    segments = raw_path.split("/")
    if len(segments) > MAX_SEGMENTS:
        raise BadRequest("stream path has too many segments")
    total = 0
    canonical: list[str] = []
    for raw in segments:
        decoded = _decode_segment(raw)
        total += len(decoded)
        if total > MAX_NAME_BYTES:
            raise BadRequest("stream path is too long")
        if decoded in (b"", b".", b".."):
            raise BadRequest("stream path has an empty, '.' or '..' segment")
        try:
            text = decoded.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest("stream path is not valid UTF-8") from exc
        if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text):  # C0, DEL, C1
            raise BadRequest("stream path contains a control character")
        canonical.append(quote(decoded, safe=_SAFE))
    return "/".join(canonical)


def glob_match(pattern: str, path: str) -> bool:
    """Whether `path` matches `pattern`: `*` is exactly one segment, `**` any number.

    Other segments must equal the path's. Time is linear in the product of the
    segment counts, however many `**` the pattern holds.
    """
    return _segments_match(pattern, path, lambda head, segment: head in ("*", segment))


def glob_covers(outer: str, inner: str) -> bool:
    """Whether every name the glob `inner` matches is matched by the glob `outer`.

    Conservative: an `inner` `**` is covered only by an `outer` `**`.
    """

    def covers(head: str, segment: str) -> bool:
        return segment != "**" and head in ("*", segment)

    return _segments_match(outer, inner, covers)


def _segments_match(pattern: str, path: str, matches: Callable[[str, str], bool]) -> bool:
    pat = pattern.split("/")
    segs = path.split("/")
    # reachable[j]: pattern segments consumed so far can match the first j path segments.
    reachable = [True] + [False] * len(segs)
    for head in pat:
        if head == "**":
            for j in range(1, len(segs) + 1):
                reachable[j] = reachable[j] or reachable[j - 1]
        else:
            for j in range(len(segs), 0, -1):
                reachable[j] = reachable[j - 1] and matches(head, segs[j - 1])
            reachable[0] = False
    return reachable[-1]


def quota_prefix(name: str) -> str | None:
    """The prefix a stream counts under for `max_streams_per_prefix`: its first segment and `/`.

    Top-level names (no `/`) count under none.
    """
    head, slash, _ = name.partition("/")
    return head + slash if slash else None


def check_stream_quota(name: str, quota: int, count: Callable[[str, int], int]) -> None:
    """Refuse to add a stream at `name` when its prefix already holds `quota` streams.

    `count(prefix, limit)` counts the names under `prefix`, and may stop at `limit`.
    A `quota` of 0 is no limit.

    Raises:
        QuotaExceeded: the prefix is full (403).
    """
    prefix = quota_prefix(name)
    if quota and prefix is not None and count(prefix, quota) >= quota:
        raise QuotaExceeded(f"{prefix} already holds its limit of {quota} streams")
