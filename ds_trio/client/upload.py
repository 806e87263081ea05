"""Request bodies for create and append: literal bytes, a file, or stdin.

Rule: a file is opened before any request is sent, so a bad path is a usage
error that writes nothing; files and stdin are streamed in chunks (with a
Content-Length when the size is known), never read whole into memory.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import trio

from .console import Console
from .model import UsageError
from .progress import ProgressBar

__all__ = ["Body", "Upload", "opened"]

UPLOAD_CHUNK: Final = 256 * 1024  # bytes read and sent at a time


class _AsyncReader(Protocol):
    async def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Upload:
    """A request body: literal bytes, a file, or stdin (neither `data` nor `path`)."""

    data: bytes | None = None
    path: Path | None = None
    progress: bool | None = None  # None: draw a bar only when stderr is a terminal


@dataclass(frozen=True)
class Body:
    """What httpx sends: the content, and the headers that describe it."""

    content: bytes | AsyncIterator[bytes] | None
    headers: dict[str, str]


@asynccontextmanager
async def opened(upload: Upload | None, console: Console) -> AsyncIterator[Body]:
    """`upload` ready to send: a file is opened first, so a bad path fails before any
    request; files and stdin stream in chunks, with a progress bar when asked."""
    if upload is None or upload.data is not None:
        yield Body(None if upload is None else upload.data, {})
        return
    if upload.path is None:
        source, owned = trio.wrap_file(console.stdin), False
        size = _regular_file_size(console.stdin)
    else:
        try:
            source, owned = await trio.open_file(upload.path, "rb"), True
        except OSError as exc:
            raise UsageError(f"cannot read {upload.path}: {exc.strerror or exc}") from None
        size = _regular_file_size(source.wrapped)
    draw = console.stderr.isatty() if upload.progress is None else upload.progress
    bar = ProgressBar(size) if draw else None
    # A known length lets the server refuse an oversized body before reading it.
    headers = {} if size is None else {"Content-Length": str(size)}
    try:
        yield Body(_chunks(source, size, bar, console), headers)
    finally:
        if bar is not None and bar.drawn:
            console.stderr.write(bar.finish())
            console.stderr.flush()
        if owned:
            await source.aclose()


def _regular_file_size(file: object) -> int | None:
    """Bytes left in a regular file (also stdin redirected from one); None for pipes."""
    fileno = getattr(file, "fileno", None)
    if fileno is None:
        return None
    try:
        fd = fileno()
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        return max(0, info.st_size - os.lseek(fd, 0, os.SEEK_CUR))
    except (AttributeError, OSError, ValueError):
        return None


async def _chunks(
    source: _AsyncReader, size: int | None, bar: ProgressBar | None, console: Console
) -> AsyncIterator[bytes]:
    remaining = size
    while remaining is None or remaining > 0:
        chunk = await source.read(
            UPLOAD_CHUNK if remaining is None else min(UPLOAD_CHUNK, remaining)
        )
        if not chunk:
            break
        yield chunk
        if remaining is not None:
            remaining -= len(chunk)
        if bar is not None and (text := bar.advance(len(chunk), trio.current_time())) is not None:
            console.stderr.write(text)
            console.stderr.flush()
    if remaining:  # Content-Length promised more: the request cannot be completed honestly
        raise UsageError("the input shrank while it was being sent")
