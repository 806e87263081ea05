"""Where a client command's data, messages and input go.

Rule: stdout gets data only, flushed as it is written so a pipe sees it at
once; every message goes to stderr as one `ds-trio: ...` line.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Console"]


class _Output(Protocol):
    def write(self, data: bytes, /) -> object: ...
    def flush(self) -> object: ...


class _Messages(Protocol):
    def write(self, text: str, /) -> object: ...
    def flush(self) -> object: ...
    def isatty(self) -> bool: ...


class _Input(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass
class Console:
    """Where a command's data, messages and stdin go; tests pass in-memory files."""

    stdout: _Output
    stderr: _Messages
    stdin: _Input

    @classmethod
    def from_sys(cls) -> Console:
        return cls(sys.stdout.buffer, sys.stderr, sys.stdin.buffer)

    def say(self, message: str) -> None:
        """One line on stderr, prefixed like every message of ours."""
        self.stderr.write(f"ds-trio: {message}\n")
        self.stderr.flush()

    def emit(self, data: bytes) -> None:
        """Data on stdout, flushed so that a pipe sees it at once."""
        if data:
            self.stdout.write(data)
            self.stdout.flush()
