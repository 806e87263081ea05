"""The subscription model: configuration, links, wakes, fencing, as pure transitions.

Rules: nothing here does I/O or reads a clock; time (`now`, Unix seconds),
tails (path → offset token) and fresh ids are passed in. A `Subscription` is
frozen; every transition returns a new one, which the manager persists before
it answers. Offsets are fixed-width tokens, so string order is stream order.
A wake is "in flight" from the moment it is issued until it is acked with
done, released, or its lease expires; a subscription with no wake is idle,
and only an idle subscription with pending work gets a new wake. Every wake
bumps the generation, and anything carrying an older generation or wake id
is fenced.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from ..protocol.offsets import Offset, format_offset
from ..protocol.paths import glob_match
from .errors import (
    AckOffsetInvalid,
    AlreadyClaimed,
    Fenced,
    InvalidSubscriptionRequest,
)

__all__ = [
    "MAX_ID_BYTES",
    "ZERO",
    "Link",
    "Subscription",
    "SubscriptionConfig",
    "Wake",
    "backoff_delay",
    "parse_config",
]

ZERO: Final = format_offset(0)  # before the first byte
DEFAULT_LEASE_MS: Final = 30_000
MIN_LEASE_MS: Final = 1_000
MAX_LEASE_MS: Final = 600_000
MAX_ID_BYTES: Final = 256  # of a subscription id, UTF-8; ids are store keys
Kind = Literal["webhook", "pull-wake"]


@dataclass(frozen=True, slots=True)
class SubscriptionConfig:
    """What a PUT configures; `digest` decides 201 / 200 / 409 on re-PUT."""

    kind: Kind
    pattern: str | None
    streams: tuple[str, ...]  # sorted, unique
    webhook_url: str | None
    wake_stream: str | None
    lease_ttl_ms: int
    description: str | None

    @property
    def digest(self) -> str:
        """A hash of the normalized configuration, for idempotent re-creation."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "pattern": self.pattern,
            "streams": list(self.streams),
            "webhook": {"url": self.webhook_url} if self.webhook_url else None,
            "wake_stream": self.wake_stream,
            "lease_ttl_ms": self.lease_ttl_ms,
            "description": self.description,
        }


def _string(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise InvalidSubscriptionRequest(f"{key} must be a non-empty string")
    return value


def parse_config(body: Any, canonical: Any) -> SubscriptionConfig:
    """Validate a PUT body; `canonical` maps a body path to a stream name.

    Raises:
        InvalidSubscriptionRequest: any field is missing, mistyped or out of range.
    """
    if not isinstance(body, dict):
        raise InvalidSubscriptionRequest("body must be a JSON object")
    kind = body.get("type")
    if kind not in ("webhook", "pull-wake"):
        raise InvalidSubscriptionRequest("type must be 'webhook' or 'pull-wake'")
    pattern = _string(body, "pattern")
    raw_streams = body.get("streams", [])
    if not isinstance(raw_streams, list) or not all(isinstance(s, str) and s for s in raw_streams):
        raise InvalidSubscriptionRequest("streams must be a list of stream paths")
    if pattern is None and not raw_streams:
        raise InvalidSubscriptionRequest("give a pattern, streams, or both")
    lease = body.get("lease_ttl_ms", DEFAULT_LEASE_MS)
    if isinstance(lease, bool) or not isinstance(lease, int) or not MIN_LEASE_MS <= lease <= MAX_LEASE_MS:
        raise InvalidSubscriptionRequest(f"lease_ttl_ms must be an integer {MIN_LEASE_MS}..{MAX_LEASE_MS}")
    url = wake_stream = None
    if kind == "webhook":
        webhook = body.get("webhook")
        if not isinstance(webhook, dict) or not isinstance(webhook.get("url"), str):
            raise InvalidSubscriptionRequest("webhook.url is required for a webhook subscription")
        url = webhook["url"]
    else:
        wake_stream = _string(body, "wake_stream")
        if wake_stream is None:
            raise InvalidSubscriptionRequest("wake_stream is required for a pull-wake subscription")
        wake_stream = canonical(wake_stream)
    description = body.get("description")
    if description is not None and not isinstance(description, str):
        raise InvalidSubscriptionRequest("description must be a string")
    streams = tuple(sorted({canonical(s) for s in raw_streams}))
    return SubscriptionConfig(kind, pattern, streams, url, wake_stream, lease, description)


@dataclass(frozen=True, slots=True)
class Link:
    """A stream linked to a subscription and how far the consumer has acked it."""

    path: str
    explicit: bool
    acked: str

    @property
    def link_type(self) -> str:
        return "explicit" if self.explicit else "glob"


@dataclass(frozen=True, slots=True)
class Wake:
    """The wake in flight: its id, the tails it covers, who holds it and until when."""

    wake_id: str
    snapshot: tuple[tuple[str, str], ...]  # (path, tail) when the wake was issued
    holder: str | None = None
    lease_expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class Subscription:
    """One subscription's whole state; `incarnation` tells re-creations apart."""

    sub_id: str
    config: SubscriptionConfig
    incarnation: str
    created_at: float
    base_url: str
    links: tuple[Link, ...] = ()
    generation: int = 0
    wake: Wake | None = None
    attempts: int = 0  # failed webhook deliveries of the current wake
    next_attempt_at: float | None = None  # a webhook delivery is due then
    # Paths taken out through the membership-removal API and not linked again
    # since; start-up reconciliation never re-links them (sorted, unique).
    removed: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        return "failed" if self.attempts else "active"

    def link(self, path: str) -> Link | None:
        return next((link for link in self.links if link.path == path), None)

    def matches(self, path: str) -> bool:
        pattern = self.config.pattern
        return pattern is not None and path != self.config.wake_stream and glob_match(pattern, path)

    # -- links --------------------------------------------------------------------

    def with_links(self, links: dict[str, Link]) -> Subscription:
        linked = tuple(links[p] for p in sorted(links))
        removed = tuple(p for p in self.removed if p not in links)  # linked again: no longer removed
        return replace(self, links=linked, removed=removed)

    def link_discovered(self, path: str) -> Subscription:
        """Link a newly seen matching stream from its start; unchanged if not new."""
        if self.link(path) is not None or not self.matches(path):
            return self
        return self.with_links({**{l.path: l for l in self.links}, path: Link(path, False, ZERO)})

    def reconcile(self, names: list[str]) -> Subscription:
        """Link every live matching stream in `names` that has no link, from its start.

        For start-up after a crash: a stream created or appended to is linked in
        a commit after the stream's own, so a kill in between leaves it unlinked.
        Such a stream was created after the subscription (creation links the
        streams that exist then, at their tail, in the same commit), so all of
        its data is unseen: the link starts at offset zero. Paths removed via
        the membership API stay out.
        """
        links = {l.path: l for l in self.links}
        removed = set(self.removed)
        for name in names:
            if name not in links and name not in removed and self.matches(name):
                links[name] = Link(name, False, ZERO)
        if len(links) == len(self.links):
            return self
        return self.with_links(links)

    def add_explicit(self, tails: dict[str, str | None]) -> Subscription:
        """Link `tails`' paths explicitly; new links start at the current tail."""
        links = {l.path: l for l in self.links}
        for path, tail in tails.items():
            old = links.get(path)
            acked = old.acked if old else (tail or ZERO)
            links[path] = Link(path, True, acked)
        return self.with_links(links)

    def remove_explicit(self, path: str) -> Subscription:
        """Drop an explicit link; a glob link survives while the pattern matches."""
        links = {l.path: l for l in self.links}
        old = links.pop(path, None)
        if old is not None and self.matches(path):
            links[path] = replace(old, explicit=False)
        sub = self.with_links(links)
        if path in links:  # still linked (by the pattern): nothing to remember
            return sub
        return replace(sub, removed=tuple(sorted({*sub.removed, path})))

    def drop_stream(self, path: str) -> Subscription:
        """The stream was deleted: forget the link."""
        return self.with_links({l.path: l for l in self.links if l.path != path})

    # -- wakes ----------------------------------------------------------------------

    def pending(self, tails: dict[str, str | None]) -> list[str]:
        """Paths with data past their acked offset."""
        return [l.path for l in self.links if (tails.get(l.path) or ZERO) > l.acked]

    def issue_wake(self, tails: dict[str, str | None], wake_id: str, now: float) -> Subscription:
        """Start a new wake covering `tails` (the caller checked: idle and pending)."""
        snapshot = tuple((l.path, tails.get(l.path) or l.acked) for l in self.links)
        lease = None
        if self.config.kind == "webhook":
            lease = now + self.config.lease_ttl_ms / 1000
        wake = Wake(wake_id, snapshot, None, lease)
        due = now if self.config.kind == "webhook" else None
        return replace(self, generation=self.generation + 1, wake=wake, attempts=0, next_attempt_at=due)

    def fence(self, token_generation: int, generation: Any, wake_id: Any) -> Wake:
        """The wake in flight, if all three match it.

        Raises:
            Fenced: a stale token generation, body generation or wake id.
        """
        wake = self.wake
        if wake is None or token_generation != self.generation or generation != self.generation:
            raise Fenced("stale generation: a newer wake superseded this one")
        if wake_id != wake.wake_id:
            raise Fenced("stale wake id: a newer wake superseded this one")
        return wake

    def apply_acks(self, acks: list[tuple[str, str]], tails: dict[str, str | None]) -> Subscription:
        """Advance acked offsets (last processed, inclusive).

        Raises:
            AckOffsetInvalid: unlinked stream, malformed token, regression, or past the tail.
        """
        links = {l.path: l for l in self.links}
        for path, offset in acks:
            link = links.get(path)
            if link is None:
                raise AckOffsetInvalid(f"stream {path} is not linked to this subscription")
            try:
                Offset.parse(offset)
            except ValueError:
                raise AckOffsetInvalid(f"not an offset: {offset!r}") from None
            if offset < link.acked:
                raise AckOffsetInvalid(f"offset {offset} is before the acked offset {link.acked}")
            if offset > (tails.get(path) or ZERO):
                raise AckOffsetInvalid(f"offset {offset} is beyond the tail of {path}")
            links[path] = replace(link, acked=offset)
        return self.with_links(links)

    def ack_snapshot(self) -> Subscription:
        """Auto-ack (webhook `{done: true}`): every tail of the wake's snapshot."""
        assert self.wake is not None
        tails = dict(self.wake.snapshot)
        links = [replace(l, acked=max(l.acked, tails.get(l.path, l.acked))) for l in self.links]
        return replace(self, links=tuple(links))

    def end_wake(self) -> Subscription:
        """Done, released or expired: idle again (the generation stays)."""
        return replace(self, wake=None, attempts=0, next_attempt_at=None)

    def extend_lease(self, now: float) -> Subscription:
        assert self.wake is not None
        expires = now + self.config.lease_ttl_ms / 1000
        return replace(self, wake=replace(self.wake, lease_expires_at=expires))

    def claim(self, worker: str, now: float) -> Subscription:
        """Take the in-flight pull wake for `worker` and start its lease.

        Raises:
            AlreadyClaimed: another worker holds it.
        """
        assert self.wake is not None
        if self.wake.holder is not None:
            raise AlreadyClaimed(
                "another worker holds this subscription",
                current_holder=self.wake.holder,
                generation=self.generation,
            )
        return replace(self, wake=replace(self.wake, holder=worker)).extend_lease(now)

    def lease_expired(self, now: float) -> bool:
        wake = self.wake
        return wake is not None and wake.lease_expires_at is not None and wake.lease_expires_at <= now

    def delivered(self, now: float) -> Subscription:
        """The webhook answered 2xx: no retry due, the lease runs from now."""
        return replace(self, attempts=0, next_attempt_at=None).extend_lease(now)

    def delivery_failed(self, now: float, delay: float) -> Subscription:
        """Schedule a retry of the same wake; the lease waits for it."""
        assert self.wake is not None
        due = now + delay
        expires = due + self.config.lease_ttl_ms / 1000
        return replace(
            self,
            attempts=self.attempts + 1,
            next_attempt_at=due,
            wake=replace(self.wake, lease_expires_at=expires),
        )


def backoff_delay(attempt: int, base: float, cap: float, unit_random: float) -> float:
    """Seconds before retry `attempt` (1-based): base·2^(n-1), capped, ±20% jitter."""
    delay = min(cap, base * 2 ** min(attempt - 1, 32))
    return delay * (0.8 + 0.4 * unit_random)
