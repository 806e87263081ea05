"""Live-read notification: the one place readers wait and writers wake them.

Each stream that has readers waiting gets a slot holding a `trio.Event` for the
current generation. A reader opens a `watch` *before* it reads the store, then
waits on the watch's event if the read found nothing new; any notification
after the watch opened sets that event, so no wake-up can be lost between the
read and the wait. `notify` sets the generation's event and starts a new one
(events are never cleared). Slots disappear when their last watcher leaves, so
`statistics()` counts exactly the readers still inside a watch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import trio

__all__ = ["StreamWatchers", "Watch", "WatcherStatistics"]


class _Slot:
    __slots__ = ("event", "watchers")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.watchers = 0


@dataclass(frozen=True, slots=True)
class WatcherStatistics:
    """How many readers are watching: per stream, and in all."""

    per_stream: dict[str, int]
    total: int


class Watch:
    """A reader's hold on one generation of a stream's notifications."""

    __slots__ = ("_event", "_hub")

    def __init__(self, hub: StreamWatchers, event: trio.Event) -> None:
        self._hub = hub
        self._event = event

    @property
    def changed(self) -> bool:
        """Whether the stream changed (or the hub closed) since the watch opened."""
        return self._event.is_set()

    async def wait(self) -> None:
        """Wait until the stream changes or the hub closes; cancel-safe."""
        await self._event.wait()


class StreamWatchers:
    """Per-stream wake-ups for long-poll, SSE and producer-gap waiters."""

    def __init__(self) -> None:
        self._slots: dict[str, _Slot] = {}
        self._closed = trio.Event()

    @property
    def closed(self) -> bool:
        """True once `close` was called: the server is shutting down."""
        return self._closed.is_set()

    @contextmanager
    def watch(self, name: str) -> Iterator[Watch]:
        """Watch `name` for the duration of the block."""
        slot = self._slots.get(name)
        if slot is None:
            slot = self._slots[name] = _Slot()
        slot.watchers += 1
        if self.closed:
            slot.event.set()
        try:
            yield Watch(self, slot.event)
        finally:
            slot.watchers -= 1
            if slot.watchers == 0 and self._slots.get(name) is slot:
                del self._slots[name]

    def notify(self, name: str) -> None:
        """Wake everyone watching `name`: it was appended to, closed, deleted or expired."""
        slot = self._slots.get(name)
        if slot is not None:
            slot.event.set()
            slot.event = trio.Event()

    def close(self) -> None:
        """Wake every watcher, now and in future: the server is shutting down."""
        self._closed.set()
        for slot in self._slots.values():
            slot.event.set()

    def statistics(self) -> WatcherStatistics:
        """Current watcher counts, for tests and metrics."""
        per_stream = {name: slot.watchers for name, slot in self._slots.items()}
        return WatcherStatistics(per_stream, sum(per_stream.values()))
