"""The subscription manager: state in memory, persisted through the host, delivery in tasks.

Rules:
- The manager sees streams only through a `SubscriptionHost` (tails, names,
  appending a wake event, saving records); it never imports a store.
- Every change is a pure transition of the `Subscription` read from
  `self._subs` *after* the last await, then `_commit`: the dict is updated and
  the record is queued for saving before any other task can run, so saves
  reach the store in the order the changes were made. Callers answer only
  after the save committed.
- Webhook POSTs and wake-event appends run as tasks in the manager's nursery
  (started in the server's nursery), under a capacity limiter and a timeout,
  so appends never wait for a receiver.
- One sweeper task starts due deliveries and expires leases; anything that
  changes a deadline pokes it.
"""

from __future__ import annotations

import json
import logging
import math
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx
import trio

from .codec import decode_record, encode_record, stream_views
from .errors import (
    Fenced,
    InvalidSubscriptionRequest,
    NoPendingWork,
    SubscriptionExists,
    SubscriptionNotFound,
    TokenInvalid,
    WebhookUrlRejected,
)
from .model import MAX_ID_BYTES, ZERO, Link, Subscription, backoff_delay, parse_config
from .signing import Signer
from .urls import Resolver, system_resolver, validate_webhook_url

__all__ = ["DeliverySettings", "SubscriptionHost", "SubscriptionManager"]

log = logging.getLogger("ds_trio.subscriptions")


class SubscriptionHost(Protocol):
    """What the manager needs from the rest of the server."""

    async def tail_offset(self, path: str) -> str | None:
        """The stream's tail offset, or None if it does not exist."""
        ...

    async def stream_names(self) -> list[str]:
        """Every live stream, for backfilling a new pattern."""
        ...

    async def append_wake(self, path: str, message: bytes) -> bool:
        """Append one JSON wake event to a wake stream; False (logged) if it failed."""
        ...

    async def load_subscriptions(self) -> dict[str, bytes]:
        """Every saved subscription record."""
        ...

    async def save_subscription(self, sub_id: str, record: bytes | None) -> None:
        """Save (None: delete) a record; queued before the first checkpoint."""
        ...


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """Webhook delivery limits; durations in seconds."""

    stream_root: str = "/v1/stream"
    timeout: float = 10.0
    concurrency: int = 16
    retry_base: float = 1.0
    retry_max: float = 60.0
    allow_http_loopback: bool = True


class SubscriptionManager:
    """All subscriptions of one server."""

    def __init__(
        self,
        host: SubscriptionHost,
        signer: Signer,
        settings: DeliverySettings,
        canonical: Callable[[str], str],
        *,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.signer = signer
        self.settings = settings
        self.resolver = resolver
        self._host = host
        self._canonical = canonical
        self._clock = clock
        self._rand = rand
        self._subs: dict[str, Subscription] = {}
        self._delivering: set[str] = set()
        self._poke = trio.Event()
        self._limiter = trio.CapacityLimiter(settings.concurrency)
        self._nursery: trio.Nursery | None = None
        self._client: httpx.AsyncClient | None = None
        self.delivery_attempts = 0  # webhook POSTs tried, for tests and metrics

    # -- lifecycle ------------------------------------------------------------------

    async def load(self) -> None:
        """Read the saved subscriptions and repair what a crash left (before `run`).

        A kill can land between two commits of one change; start-up finishes it:
        - a matching stream created or appended to, but not yet linked, is
          linked from its start (`Subscription.reconcile`), and the repaired
          records are committed before the server answers anything;
        - a pull wake issued but whose wake event was never appended gets its
          event (re)written as soon as `run` starts (`_write_wake_event`).
        """
        for sub_id, raw in (await self._host.load_subscriptions()).items():
            try:
                self._subs[sub_id] = decode_record(raw)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("skipping damaged subscription record %s: %r", sub_id, exc)
        if any(sub.config.pattern is not None for sub in self._subs.values()):
            names = await self._host.stream_names()
            for sub in list(self._subs.values()):
                repaired = sub.reconcile(names)
                if repaired is not sub:
                    added = sorted({l.path for l in repaired.links} - {l.path for l in sub.links})
                    log.info("subscription %s: linked %d unlinked matching streams: %s",
                             sub.sub_id, len(added), added[:10])
                    await self._commit(repaired)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver and sweep until cancelled."""
        timeout = httpx.Timeout(self.settings.timeout)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            async with trio.open_nursery() as nursery:
                self._client, self._nursery = client, nursery
                for sub_id, sub in list(self._subs.items()):
                    wake = sub.wake
                    if sub.config.kind == "pull-wake" and wake is not None and wake.holder is None:
                        # Issued but perhaps never announced (killed before the append).
                        nursery.start_soon(self._write_wake_event, sub_id, None)
                    nursery.start_soon(self._evaluate, sub_id, None)
                task_status.started()
                await self._sweep()

    def get(self, sub_id: str) -> Subscription:
        sub = self._subs.get(sub_id)
        if sub is None:
            raise SubscriptionNotFound(f"no subscription {sub_id}")
        return sub

    def _spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    async def _commit(self, sub: Subscription) -> None:
        self._subs[sub.sub_id] = sub
        await self._host.save_subscription(sub.sub_id, encode_record(sub))

    async def _tails(self, sub: Subscription) -> dict[str, str | None]:
        return {link.path: await self._host.tail_offset(link.path) for link in sub.links}

    def _same(self, sub_id: str, incarnation: str) -> Subscription:
        sub = self._subs.get(sub_id)
        if sub is None or sub.incarnation != incarnation:
            raise SubscriptionNotFound(f"subscription {sub_id} was deleted")
        return sub

    # -- configuration ----------------------------------------------------------------

    async def put(self, sub_id: str, body: Any, base_url: str) -> tuple[bool, Subscription]:
        """Create (True) or re-confirm (False) a subscription.

        Raises:
            InvalidSubscriptionRequest, SubscriptionExists, WebhookUrlRejected.
        """
        if len(sub_id.encode("utf-8")) > MAX_ID_BYTES:
            raise InvalidSubscriptionRequest(f"subscription ids have at most {MAX_ID_BYTES} bytes")
        config = parse_config(body, self._canonical)
        existing = self._subs.get(sub_id)
        if existing is not None:
            if existing.config.digest != config.digest:
                raise SubscriptionExists(f"subscription {sub_id} exists with another configuration")
            return False, existing
        if config.webhook_url is not None:
            await validate_webhook_url(
                config.webhook_url,
                allow_http_loopback=self.settings.allow_http_loopback,
                resolver=self.resolver,
            )
        sub = Subscription(sub_id, config, secrets.token_hex(8), self._clock(), base_url)
        paths = set(config.streams)
        if config.pattern is not None:
            paths.update(name for name in await self._host.stream_names() if sub.matches(name))
        tails = {path: await self._host.tail_offset(path) for path in sorted(paths)}
        existing = self._subs.get(sub_id)
        if existing is not None:  # created while we looked at the streams
            if existing.config.digest != config.digest:
                raise SubscriptionExists(f"subscription {sub_id} exists with another configuration")
            return False, existing
        links = {p: Link(p, p in config.streams, tail or ZERO) for p, tail in tails.items()}
        sub = sub.with_links(links)
        await self._commit(sub)
        return True, sub

    async def delete(self, sub_id: str) -> None:
        """Forget the subscription; its in-flight tokens stop working."""
        if self._subs.pop(sub_id, None) is not None:
            await self._host.save_subscription(sub_id, None)

    async def add_streams(self, sub_id: str, paths: Any) -> None:
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
            raise InvalidSubscriptionRequest("streams must be a non-empty list of stream paths")
        sub = self.get(sub_id)
        names = [self._canonical(p) for p in paths]
        tails = {name: await self._host.tail_offset(name) for name in names}
        await self._commit(self._same(sub_id, sub.incarnation).add_explicit(tails))

    async def remove_stream(self, sub_id: str, path: str) -> None:
        sub = self.get(sub_id)
        await self._commit(sub.remove_explicit(self._canonical(path)))

    # -- stream hooks ---------------------------------------------------------------

    async def on_append(self, name: str) -> None:
        """`name` got new data: link it where it now matches, then wake idle subscribers."""
        for sub_id in [s.sub_id for s in self._subs.values() if s.link(name) is None]:
            sub = self._subs.get(sub_id)
            if sub is not None and (new := sub.link_discovered(name)) is not sub:
                await self._commit(new)
        for sub in list(self._subs.values()):
            if sub.wake is None and sub.link(name) is not None:
                self._spawn(self._evaluate, sub.sub_id, name)

    async def on_delete(self, name: str) -> None:
        """`name` was deleted or expired: drop its links."""
        for sub_id in [s.sub_id for s in self._subs.values() if s.link(name) is not None]:
            sub = self._subs.get(sub_id)
            if sub is not None:
                await self._commit(sub.drop_stream(name))

    # -- wakes ------------------------------------------------------------------------

    async def _evaluate(self, sub_id: str, trigger: str | None) -> None:
        """Issue a wake if the subscription is idle and has pending work."""
        sub = self._subs.get(sub_id)
        if sub is None or sub.wake is not None:
            return
        tails = await self._tails(sub)
        sub = self._subs.get(sub_id)
        if sub is None or sub.wake is not None:
            return
        pending = sub.pending(tails)
        if not pending:
            return
        sub = sub.issue_wake(tails, "w_" + secrets.token_hex(12), self._clock())
        await self._commit(sub)
        if sub.config.kind == "webhook":
            self._poke.set()
            return
        await self._write_wake_event(sub_id, trigger if trigger in pending else pending[0])

    async def _write_wake_event(self, sub_id: str, stream: str | None) -> None:
        """Append the wake event of the current unclaimed pull wake, retrying until written.

        The wake is committed before its event is appended, so a kill or a failed
        append in between would leave a wake nobody hears of; `run` calls this
        at start-up for every unclaimed pull wake, and a failed append is retried
        with capped backoff for as long as that wake is still in flight and
        unclaimed. Writing an event twice (a restart after the append committed)
        is harmless: events only announce work, and a claim is fenced by the
        wake id and generation, so a duplicate at most makes a worker try a
        claim that gets ALREADY_CLAIMED or NO_PENDING_WORK.
        """
        sub = self._subs.get(sub_id)
        if sub is None or sub.wake is None:
            return
        incarnation, generation, wake_id = sub.incarnation, sub.generation, sub.wake.wake_id
        attempt = 0
        while True:
            sub = self._subs.get(sub_id)
            wake = None if sub is None else sub.wake
            if (
                sub is None
                or wake is None
                or sub.incarnation != incarnation
                or sub.generation != generation
                or wake.wake_id != wake_id
                or wake.holder is not None
            ):
                return  # superseded, ended or claimed: no announcement needed
            assert sub.config.wake_stream is not None
            if stream is None:
                snapshot = dict(wake.snapshot)
                pending = [l.path for l in sub.links if snapshot.get(l.path, l.acked) > l.acked]
                stream = pending[0] if pending else (sub.links[0].path if sub.links else None)
            event = {
                "type": "wake",
                "subscription_id": sub.sub_id,
                "stream": stream,
                "generation": generation,
                "ts": int(self._clock() * 1000),
            }
            if await self._host.append_wake(sub.config.wake_stream, json.dumps(event).encode()):
                return
            attempt += 1
            delay = backoff_delay(attempt, self.settings.retry_base, self.settings.retry_max, self._rand())
            log.warning("retrying the wake event of %s in %.1fs (attempt %d)", sub_id, delay, attempt)
            await trio.sleep(delay)

    async def _sweep(self) -> None:
        while True:
            self._poke = poke = trio.Event()
            now = self._clock()
            next_at = math.inf
            for sub in list(self._subs.values()):
                busy = sub.sub_id in self._delivering
                if sub.lease_expired(now) and not busy:
                    current = self._subs.get(sub.sub_id)
                    if current is sub:
                        await self._commit(sub.end_wake())
                        self._spawn(self._evaluate, sub.sub_id, None)
                    continue
                due = sub.next_attempt_at
                if sub.wake is not None and due is not None and not busy:
                    if due <= now:
                        self._delivering.add(sub.sub_id)
                        self._spawn(self._deliver, sub.sub_id)
                        continue
                    next_at = min(next_at, due)
                if sub.wake is not None and sub.wake.lease_expires_at is not None:
                    next_at = min(next_at, sub.wake.lease_expires_at)
            with trio.move_on_after(max(0.0, min(next_at - self._clock(), 60.0))):
                await poke.wait()

    async def _deliver(self, sub_id: str) -> None:
        try:
            async with self._limiter:
                sub = self._subs.get(sub_id)
                if sub is None or sub.wake is None:
                    return
                wake_id, incarnation = sub.wake.wake_id, sub.incarnation
                outcome = await self._post(sub)
            current = self._subs.get(sub_id)
            if current is None or current.incarnation != incarnation:
                return
            if current.wake is None or current.wake.wake_id != wake_id:
                return  # the callback finished this wake first
            now = self._clock()
            if outcome == "failed":
                delay = backoff_delay(
                    current.attempts + 1, self.settings.retry_base, self.settings.retry_max, self._rand()
                )
                await self._commit(current.delivery_failed(now, delay))
            elif outcome == "done":
                await self._commit(current.ack_snapshot().end_wake())
                self._spawn(self._evaluate, sub_id, None)
            else:
                await self._commit(current.delivered(now))
        finally:
            self._delivering.discard(sub_id)
            self._poke.set()

    def callback_url(self, sub: Subscription) -> str:
        root = self.settings.stream_root
        return f"{sub.base_url}{root}/__ds/subscriptions/{quote(sub.sub_id, safe='')}/callback"

    async def _post(self, sub: Subscription) -> str:
        """POST the wake; "done", "ok" (2xx) or "failed"."""
        assert sub.wake is not None and sub.config.webhook_url is not None and self._client is not None
        now = self._clock()
        body = json.dumps(
            {
                "subscription_id": sub.sub_id,
                "wake_id": sub.wake.wake_id,
                "generation": sub.generation,
                "streams": stream_views(sub, dict(sub.wake.snapshot)),
                "callback_url": self.callback_url(sub),
                "callback_token": self.signer.mint_token(sub.sub_id, sub.incarnation, sub.generation, now),
            }
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "Webhook-Signature": self.signer.signature_header(body, now),
        }
        url = sub.config.webhook_url
        self.delivery_attempts += 1
        try:
            await validate_webhook_url(
                url, allow_http_loopback=self.settings.allow_http_loopback, resolver=self.resolver
            )
            with trio.fail_after(self.settings.timeout):
                response = await self._client.post(url, content=body, headers=headers)
        except (httpx.HTTPError, OSError, trio.TooSlowError, WebhookUrlRejected) as exc:
            log.warning("webhook delivery for %s failed: %s", sub.sub_id, exc or type(exc).__name__)
            return "failed"
        if not 200 <= response.status_code < 300:
            log.warning("webhook delivery for %s got status %d", sub.sub_id, response.status_code)
            return "failed"
        try:
            reply = response.json()
        except ValueError:
            return "ok"
        return "done" if isinstance(reply, dict) and reply.get("done") is True else "ok"

    # -- worker actions -----------------------------------------------------------------

    def _fence(self, sub_id: str, token: str | None, body: Any, kind: str) -> tuple[Subscription, int]:
        sub = self.get(sub_id)
        if not isinstance(body, dict):
            raise InvalidSubscriptionRequest("body must be a JSON object")
        if sub.config.kind != kind:
            raise InvalidSubscriptionRequest(f"this action is for {kind} subscriptions")
        if not token:
            raise TokenInvalid("an Authorization: Bearer token is required")
        claims = self.signer.verify_token(token, sub_id, self._clock())
        if claims.incarnation != sub.incarnation:
            raise Fenced("the token belongs to a deleted subscription")
        sub.fence(claims.generation, body.get("generation"), body.get("wake_id"))
        return sub, claims.generation

    @staticmethod
    def _acks(body: dict[str, Any]) -> tuple[list[tuple[str, str]], bool]:
        raw = body.get("acks", [])
        done = body.get("done", False)
        if not isinstance(raw, list) or not isinstance(done, bool):
            raise InvalidSubscriptionRequest("acks must be a list and done a boolean")
        acks = []
        for ack in raw:
            if not isinstance(ack, dict) or not all(isinstance(ack.get(k), str) for k in ("stream", "offset")):
                raise InvalidSubscriptionRequest("each ack needs a stream and an offset")
            acks.append((ack["stream"], ack["offset"]))
        return acks, done

    async def acknowledge(self, sub_id: str, token: str | None, body: Any, kind: str) -> bool:
        """A webhook callback or a pull-wake ack; returns `next_wake`.

        Raises:
            SubscriptionNotFound, TokenInvalid, TokenExpired, Fenced, AckOffsetInvalid.
        """
        sub, generation = self._fence(sub_id, token, body, kind)
        acks, done = self._acks(body)
        acks = [(self._canonical(path), offset) for path, offset in acks]
        tails = await self._tails(sub)
        sub, _ = self._fence(sub_id, token, body, kind)  # still current after the await?
        sub = sub.apply_acks(acks, tails)
        now = self._clock()
        sub = sub.end_wake() if done else sub.extend_lease(now)
        await self._commit(sub)
        self._poke.set()
        next_wake = done and bool(sub.pending(tails))
        if next_wake:
            self._spawn(self._evaluate, sub_id, None)
        return next_wake

    async def claim(self, sub_id: str, worker: Any) -> tuple[Subscription, str]:
        """Take the pull wake (issuing one if work is pending); the sub and a token.

        Raises:
            SubscriptionNotFound, InvalidSubscriptionRequest, AlreadyClaimed, NoPendingWork.
        """
        sub = self.get(sub_id)
        if sub.config.kind != "pull-wake":
            raise InvalidSubscriptionRequest("claim is for pull-wake subscriptions")
        if not isinstance(worker, str) or not worker:
            raise InvalidSubscriptionRequest("worker must be a non-empty string")
        now = self._clock()
        if sub.wake is not None:
            sub = sub.claim(worker, now)  # fails fast when held
        tails = await self._tails(sub)
        sub = self._same(sub_id, sub.incarnation)
        now = self._clock()
        if sub.wake is None:
            if not sub.pending(tails):
                raise NoPendingWork("every linked stream is acknowledged up to its tail")
            sub = sub.issue_wake(tails, "w_" + secrets.token_hex(12), now)
        sub = sub.claim(worker, now)
        await self._commit(sub)
        self._poke.set()
        return sub, self.signer.mint_token(sub_id, sub.incarnation, sub.generation, now)

    async def release(self, sub_id: str, token: str | None, body: Any) -> None:
        """Give the pull wake back; another wake follows if work remains."""
        sub, _ = self._fence(sub_id, token, body, "pull-wake")
        await self._commit(sub.end_wake())
        self._poke.set()
        self._spawn(self._evaluate, sub_id, None)
