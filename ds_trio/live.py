"""Live-read notification: the one place readers wait and writers wake them.

Each stream that has readers waiting gets a slot holding a `trio.Event` for the
current generation. A reader opens a `watch` *before* it reads the store, then
waits on the watch's event if the read found nothing new; any notification
after the watch opened sets that event, so no wake-up can be lost between the
read and the wait. `notify` sets the generation's event and starts a new one
(events are never cleared). Slots disappear when their last watcher leaves, so
`statistics()` counts exactly the readers still inside a watch.

Readers woken together mostly want the same thing: the bytes after the offset
they all waited at. `Watch.read_once` lets them share one store read per
generation and position instead of one each, so waking N readers costs one
read, not N.

With several worker processes, `relay` carries each notification to the other
workers (see `ds_trio.workers`), which `wake` their own readers; the store
stays the source of truth, so a relayed notification that is late or lost
only delays a reader, whose own timeout then ends its wait.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

import trio

__all__ = ["StreamWatchers", "Watch", "WatcherStatistics"]

T = TypeVar("T")


class _SharedRead:
    """One store read that every reader of a generation at one key may use."""

    __slots__ = ("done", "failed", "value")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.failed = False
        self.value: Any = None


class _Generation:
    """The notifications between two `notify` calls: an event, and its shared reads."""

    __slots__ = ("event", "reads")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.reads: dict[Hashable, _SharedRead] = {}


class _Slot:
    __slots__ = ("generation", "watchers")

    def __init__(self) -> None:
        self.generation = _Generation()
        self.watchers = 0


@dataclass(frozen=True, slots=True)
class WatcherStatistics:
    """How many readers are watching: per stream, and in all."""

    per_stream: dict[str, int]
    total: int


class Watch:
    """A reader's hold on one generation of a stream's notifications.

    `StreamWatchers.watch` makes one; it counts as watching from `with` to
    the end of the block.
    """

    __slots__ = ("_generation", "_hub", "_name", "_slot")

    def __init__(self, hub: StreamWatchers, name: str) -> None:
        self._hub = hub
        self._name = name

    def __enter__(self) -> Watch:
        slots = self._hub._slots
        slot = slots.get(self._name)
        if slot is None:
            slot = slots[self._name] = _Slot()
        slot.watchers += 1
        if self._hub.closed:
            slot.generation.event.set()
        self._slot = slot
        self._generation = slot.generation
        return self

    def __exit__(self, *exc_info: object) -> None:
        slot = self._slot
        slot.watchers -= 1
        slots = self._hub._slots
        if slot.watchers == 0 and slots.get(self._name) is slot:
            del slots[self._name]

    @property
    def changed(self) -> bool:
        """Whether the stream changed (or the hub closed) since the watch opened."""
        return self._generation.event.is_set()

    async def wait(self) -> None:
        """Wait until the stream changes or the hub closes; cancel-safe."""
        await self._generation.event.wait()

    async def read_once(self, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> T:
        """`await fetch()`, or the value another reader of this generation got for `key`.

        A shared value was fetched after this generation began, so it holds
        everything notified before this watch opened; whatever it misses was
        notified since, and sets this watch's event. A fetch that fails or is
        cancelled is not shared: the readers waiting on it fetch for themselves.
        """
        reads = self._generation.reads
        while True:
            shared = reads.get(key)
            if shared is None:
                break
            if not shared.done.is_set():  # most readers find it done: no reschedule then
                await shared.done.wait()
            if not shared.failed:
                return shared.value  # type: ignore[no-any-return]
        shared = reads[key] = _SharedRead()
        try:
            shared.value = await fetch()
        except BaseException:
            shared.failed = True
            if reads.get(key) is shared:
                del reads[key]
            raise
        finally:
            shared.done.set()
        return shared.value  # type: ignore[no-any-return]


class StreamWatchers:
    """Per-stream wake-ups for long-poll, SSE and producer-gap waiters."""

    def __init__(self) -> None:
        self._slots: dict[str, _Slot] = {}
        self._closed = trio.Event()
        self.relay: Callable[[str], None] | None = None  # to the other workers' watchers

    @property
    def closed(self) -> bool:
        """True once `close` was called: the server is shutting down."""
        return self._closed.is_set()

    def watch(self, name: str) -> Watch:
        """Watch `name` for the duration of a `with` block."""
        return Watch(self, name)

    def notify(self, name: str) -> None:
        """Wake everyone watching `name`: it was appended to, closed, deleted or expired."""
        self.wake(name)
        if self.relay is not None:
            self.relay(name)

    def wake(self, name: str) -> None:
        """Wake the watchers of `name` in this process only (another worker changed it)."""
        slot = self._slots.get(name)
        if slot is not None:
            slot.generation.event.set()
            slot.generation = _Generation()

    def close(self) -> None:
        """Wake every watcher, now and in future: the server is shutting down."""
        self._closed.set()
        for slot in self._slots.values():
            slot.generation.event.set()

    def statistics(self) -> WatcherStatistics:
        """Current watcher counts, for tests and metrics."""
        per_stream = {name: slot.watchers for name, slot in self._slots.items()}
        return WatcherStatistics(per_stream, sum(per_stream.values()))
