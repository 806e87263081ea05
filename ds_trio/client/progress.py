"""An upload progress bar for stderr, without I/O: it returns the text to draw.

Rule: each drawing starts with a carriage return and pads over whatever the
previous one left, so the bar redraws in place on a terminal; drawings come at
most every `min_interval` seconds (the caller passes the clock), so a fast
upload costs a handful of writes, not one per chunk.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ProgressBar", "human_bytes"]

_UNITS: Final = ("B", "KiB", "MiB", "GiB", "TiB")
BAR_WIDTH: Final = 24  # characters between the brackets
MIN_INTERVAL: Final = 0.1  # seconds between drawings


def human_bytes(count: int) -> str:
    """`512 B`, `1.5 KiB`, `12.0 MiB`: binary units, one decimal past bytes."""
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in _UNITS[1:-1]:
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} {_UNITS[-1]}"


class ProgressBar:
    """Bytes sent out of `total` (None when the size is unknown, e.g. a pipe)."""

    def __init__(self, total: int | None, *, min_interval: float = MIN_INTERVAL) -> None:
        self.total = total
        self.sent = 0
        self._min_interval = min_interval
        self._last_drawn: float | None = None
        self._width = 0  # length of the last drawing, to pad over it

    @property
    def drawn(self) -> bool:
        """Whether anything was drawn yet (nothing is, before the first bytes go)."""
        return self._last_drawn is not None

    def advance(self, count: int, now: float) -> str | None:
        """Count `count` more bytes sent; the text to draw, or None if it is too soon."""
        self.sent += count
        if self._last_drawn is not None and now - self._last_drawn < self._min_interval:
            return None
        self._last_drawn = now
        return self._draw()

    def finish(self) -> str:
        """The final drawing and the line break that leaves it on screen."""
        return self._draw() + "\n"

    def render(self) -> str:
        """The bar as it stands, without the carriage return."""
        if self.total is None:
            return f"{human_bytes(self.sent)} sent"
        fraction = 1.0 if self.total == 0 else min(self.sent / self.total, 1.0)
        filled = int(BAR_WIDTH * fraction)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        return (
            f"[{bar}] {fraction * 100:3.0f}% {human_bytes(self.sent)} / {human_bytes(self.total)}"
        )

    def _draw(self) -> str:
        text = self.render()
        padding = " " * max(0, self._width - len(text))
        self._width = len(text)
        return "\r" + text + padding
