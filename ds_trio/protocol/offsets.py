"""Offsets: the opaque, fixed-width position tokens of a stream.

Rule: every offset this server mints has exactly `WIDTH` characters, two
16-digit decimal fields joined by `_`, so comparing two tokens as strings
orders them the same way as the positions they encode. The second field is the
position: the count of stored bytes before it. Every append adds at least one
byte, so offsets strictly increase. The first field is reserved and always
zero; it keeps the shape other Durable Streams servers mint, so the zero offset
`0000000000000000_0000000000000000` that clients hard-code means the start here
too. The sentinels `-1` (start) and `now` (tail) are recognised on input and
never minted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from .errors import InvalidOffset

__all__ = ["BEGINNING", "NOW", "WIDTH", "Offset", "ReadFrom", "format_offset", "parse_read_offset"]

FIELD_DIGITS: Final = 16
WIDTH: Final = 2 * FIELD_DIGITS + 1  # characters in a token
BEGINNING: Final = "-1"
NOW: Final = "now"
_MAX_POSITION: Final = 10**FIELD_DIGITS - 1  # ~10 PB
_TOKEN_RE: Final = re.compile(r"(\d{16})_(\d{16})", re.ASCII)
_RESERVED: Final = "0" * FIELD_DIGITS


@dataclass(frozen=True, order=True, slots=True)
class Offset:
    """A position in a stream: the number of stored bytes before it."""

    position: int

    def __post_init__(self) -> None:
        if not 0 <= self.position <= _MAX_POSITION:
            raise ValueError(f"offset position out of range: {self.position}")

    def __str__(self) -> str:
        return format_offset(self.position)

    @classmethod
    def parse(cls, token: str) -> Offset:
        """Parse a minted token. Raises ValueError for anything else."""
        match = _TOKEN_RE.fullmatch(token)
        if match is None or match.group(1) != _RESERVED:
            raise ValueError(f"not an offset: {token!r}")
        return cls(int(match.group(2)))


def format_offset(position: int) -> str:
    """The token for `position`."""
    return f"{_RESERVED}_{position:0{FIELD_DIGITS}d}"


@dataclass(frozen=True, slots=True)
class ReadFrom:
    """Where a read starts: a concrete offset, or the tail (`now`)."""

    offset: Offset | None  # None means the tail at the time of the read

    @property
    def is_now(self) -> bool:
        return self.offset is None


def parse_read_offset(raw: str | None) -> ReadFrom:
    """Parse the `offset` query parameter of a read.

    Omitted and `-1` mean the start of the stream, `now` the tail.

    Raises:
        InvalidOffset: the token is malformed.
    """
    if raw is None or raw == BEGINNING:
        return ReadFrom(Offset(0))
    if raw == NOW:
        return ReadFrom(None)
    try:
        return ReadFrom(Offset.parse(raw))
    except ValueError as exc:
        raise InvalidOffset("malformed offset") from exc
