"""Per-client limits with no I/O: token-bucket rates and concurrent live readers."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from .protocol.errors import Overloaded, TooManyRequests

__all__ = ["LiveReaderLimit", "RateLimiter"]

MAX_TRACKED_CLIENTS: Final = 100_000  # buckets kept; the least recently seen are forgotten


class RateLimiter:
    """A token bucket per client: `rate` requests a second, `burst` at once.

    Buckets refill lazily when used. Past `max_clients` the least recently
    seen bucket is dropped (it comes back full), so a flood of new addresses
    costs bounded memory.
    """

    def __init__(self, rate: float, burst: int, max_clients: int = MAX_TRACKED_CLIENTS) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def check(self, client: str, now: float) -> None:
        """Take one request's token from `client`'s bucket.

        Raises:
            TooManyRequests: the bucket is empty; Retry-After says when it is not.
        """
        tokens, at = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        self._buckets[client] = (tokens - 1 if tokens >= 1 else tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        if tokens < 1:
            wait = math.ceil((1 - tokens) / self.rate)
            raise TooManyRequests(f"rate limit of {self.rate:g} requests/s exceeded", wait)

    def __len__(self) -> int:
        return len(self._buckets)


class LiveReaderLimit:
    """Counts live readers (long-polls, SSE) in total and per client."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self._held: dict[str, int] = {}
        self._count = 0

    def check(self, client: str) -> None:
        """Whether one more live reader of `client` would fit.

        Raises:
            Overloaded: the process holds `total` live readers (503).
            TooManyRequests: the client holds `per_client` (429).
        """
        if self._count >= self.total:
            raise Overloaded("too many live readers on this server; retry", 1)
        if self._held.get(client, 0) >= self.per_client:
            raise TooManyRequests(f"at most {self.per_client} live reads per client", 1)

    @contextmanager
    def hold(self, client: str) -> Iterator[None]:
        """Count one live reader of `client` while the block runs.

        Raises:
            Overloaded, TooManyRequests: as `check`.
        """
        self.check(client)
        self._held[client] = self._held.get(client, 0) + 1
        self._count += 1
        try:
            yield
        finally:
            self._count -= 1
            remaining = self._held[client] - 1
            if remaining:
                self._held[client] = remaining
            else:
                del self._held[client]

    def held(self, client: str | None = None) -> int:
        """Live readers held by `client`, or by everyone."""
        return self._count if client is None else self._held.get(client, 0)
