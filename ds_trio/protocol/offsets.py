"""Offsets: the opaque, fixed-width position tokens of a stream.

Rule: every offset this server mints is exactly `WIDTH` decimal digits, so
comparing two tokens as strings orders them the same way as the positions they
encode. A position is the count of stored bytes before it; every append adds at
least one byte, so offsets strictly increase. The sentinels `-1` (start) and
`now` (tail) are recognised on input and never minted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .errors import InvalidOffset

__all__ = ["BEGINNING", "NOW", "WIDTH", "Offset", "ReadFrom", "format_offset", "parse_read_offset"]

WIDTH: Final = 20  # digits: enough for any 64-bit position
BEGINNING: Final = "-1"
NOW: Final = "now"
_MAX_POSITION: Final = 10**WIDTH - 1


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
        if len(token) != WIDTH or not token.isascii() or not token.isdigit():
            raise ValueError(f"not an offset: {token!r}")
        return cls(int(token))


def format_offset(position: int) -> str:
    """The token for `position`."""
    return f"{position:0{WIDTH}d}"


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
