"""Crash recovery of subscriptions: SIGKILL a real ds_trio process mid-delivery.

One LMDB data dir for the whole test; each cycle runs, against
`python -m ds_trio dev --data-dir DIR`:

- writers appending JSON messages to streams matching `jobs/*`, and a creator
  making new matching streams (created with a body, so they carry work);
- two pull-wake workers claiming the `pull` subscription (lease 1 s), reading
  each pending stream from its acked offset and acking the `Stream-Next-Offset`
  of that read (the offsets they processed), with `done`, as a heartbeat, or
  releasing the wake instead;
- a webhook subscription `hook` on the same glob, delivered to a loopback h11
  receiver in this test that answers `{"done": true}` (auto-ack);

and SIGKILLs the server at a seeded random moment. After each restart:

- both subscriptions still exist with their configuration, and every stream
  that exists (answered or not: start-up links those the kill left unlinked)
  is linked to both;
- per stream and subscription, `acked_offset` never moves backwards across
  restarts and never exceeds the stream's tail; an ack answered 2xx is kept
  (acked_offset >= what was acked); the generation never goes back;
- stale claims from before the kill (older generation) get 409 FENCED for ack
  and release, and change no acked offset;
- the remaining work is claimable: a claim (after any surviving lease lapses)
  gets a wake, and on drain cycles the verifier claims and acks snapshot after
  snapshot until 409 NO_PENDING_WORK, which must then mean every linked stream
  is acked up to its tail (no unacked data skipped).

At the end, a graceful restart, and the webhook subscription must catch up to
every tail.

Replay: the master seed is printed (`crash seed: N`) and quoted in every
failure; `DS_TRIO_CRASH_SEED=N` reruns the same choices (the kill lands against
real scheduling, so a replay is close but not identical).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
import trio

from ..subscriptions.receiver import start_receiver
from .test_kill import SEED_ENV, Server, client, master_seed, send

JSON_TYPE: Final = "application/json"
ZERO: Final = "0000000000000000_0000000000000000"
CYCLES: Final = 12
KILL_DELAY: Final = (0.1, 1.2)  # seconds after the cycle's tasks start
WRITE_PHASE_TIMEOUT: Final = 15.0
VERIFY_TIMEOUT: Final = 20.0
CLAIM_WAIT: Final = 4.0  # seconds for a surviving lease (1 s) to lapse
MAX_REQUESTS: Final = 400  # per task per cycle; the kill comes long before
MAX_DRAIN: Final = 50  # claims to drain one subscription
INITIAL_STREAMS: Final = 3
LEASE_MS: Final = 1000
PULL: Final = "pull"
HOOK: Final = "hook"
PATTERN: Final = "jobs/*"
WAKES: Final = "wakes"
STALE_PROBES: Final = 3
ACKS_PER_CLAIM: Final = 4  # streams read and acked per claim, at most
DRAIN_CHANCE: Final = 0.5


@dataclass
class Claim:
    wake_id: str
    generation: int
    token: str
    streams: list[dict[str, Any]]


@dataclass
class World:
    seed: int
    streams: set[str] = field(default_factory=set)  # every name a create was attempted for
    confirmed: set[str] = field(default_factory=set)  # streams with a 2xx create or append
    acked_ok: dict[str, str] = field(default_factory=dict)  # pull: max offset acked with a 2xx
    verified: dict[str, dict[str, str]] = field(default_factory=lambda: {PULL: {}, HOOK: {}})
    generation: dict[str, int] = field(default_factory=lambda: {PULL: 0, HOOK: 0})
    claims: list[Claim] = field(default_factory=list)  # every claim ever granted
    stats: Counter[str] = field(default_factory=Counter)

    def where(self, label: str) -> str:
        return f"crash seed {self.seed} ({SEED_ENV}={self.seed} to replay), {label}"


@dataclass
class Cycle:
    index: int
    http: httpx.AsyncClient
    server: Server
    world: World
    failures: list[str]

    def fail(self, who: str, response: httpx.Response) -> None:
        self.failures.append(
            f"{who}: {response.request.method} {response.request.url.path} got "
            f"{response.status_code} {response.text[:200]!r}"
        )


def sub_url(server: Server, sub_id: str, action: str = "") -> str:
    return server.url(f"__ds/subscriptions/{sub_id}" + (f"/{action}" if action else ""))


async def post_json(
    http: httpx.AsyncClient, url: str, body: Any, headers: dict[str, str] | None = None, method: str = "POST"
) -> httpx.Response:
    """A JSON request whose body survives a dead connection without warnings."""
    return await send(http, method, url, json.dumps(body).encode(), {"Content-Type": JSON_TYPE, **(headers or {})})


def message(rng: random.Random, who: str, n: int) -> bytes:
    return json.dumps({"who": who, "n": n, "pad": "x" * rng.randint(0, 200)}).encode()


# -- the cycle's tasks ----------------------------------------------------------------


async def writer(cycle: Cycle, who: str, rng: random.Random) -> None:
    """Append to existing matching streams (each request waits for the previous one)."""
    world = cycle.world
    for n in range(MAX_REQUESTS):
        name = rng.choice(sorted(world.confirmed))
        try:
            response = await send(
                cycle.http, "POST", cycle.server.url(name), message(rng, who, n), {"Content-Type": JSON_TYPE}
            )
        except httpx.TransportError:
            return
        if response.status_code != 204:
            cycle.fail(who, response)
            return
        world.stats["appends answered"] += 1
        await trio.sleep(rng.uniform(0, 0.02))


async def creator(cycle: Cycle, rng: random.Random) -> None:
    """Create new matching streams with a first message."""
    world = cycle.world
    for n in range(MAX_REQUESTS):
        name = f"jobs/c{cycle.index}-{n}"
        world.streams.add(name)
        try:
            response = await send(
                cycle.http, "PUT", cycle.server.url(name), b"[" + message(rng, "creator", n) + b"]",
                {"Content-Type": JSON_TYPE},
            )
        except httpx.TransportError:
            world.stats["creates unanswered"] += 1
            return
        if response.status_code != 201:
            cycle.fail("creator", response)
            return
        world.confirmed.add(name)
        world.stats["creates answered"] += 1
        await trio.sleep(rng.uniform(0.01, 0.08))


async def worker(cycle: Cycle, who: str, rng: random.Random) -> None:
    """Claim, read from the acked offset, ack what was read (or release)."""
    world, http, server = cycle.world, cycle.http, cycle.server
    try:
        for _ in range(MAX_REQUESTS):
            response = await post_json(http, sub_url(server, PULL, "claim"), {"worker": who})
            if response.status_code == 409:
                code = response.json()["error"]["code"]
                if code not in ("ALREADY_CLAIMED", "NO_PENDING_WORK"):
                    cycle.fail(who, response)
                    return
                world.stats[f"claim {code}"] += 1
                await trio.sleep(rng.uniform(0.005, 0.03))
                continue
            if response.status_code != 200:
                cycle.fail(who, response)
                return
            body = response.json()
            claim = Claim(body["wake_id"], body["generation"], body["token"], body["streams"])
            world.claims.append(claim)
            world.stats["claims granted"] += 1
            auth = {"Authorization": f"Bearer {claim.token}"}
            fence = {"wake_id": claim.wake_id, "generation": claim.generation}
            if rng.random() < 0.15:
                response = await post_json(http, sub_url(server, PULL, "release"), fence, auth)
                if response.status_code != 204:
                    cycle.fail(f"{who} release", response)
                    return
                world.stats["releases answered"] += 1
                continue
            pending = [s for s in claim.streams if s["has_pending"]]
            rng.shuffle(pending)
            chosen = pending[: rng.randint(1, ACKS_PER_CLAIM)]  # a partial ack leaves work behind
            acks = []
            for view in chosen:
                read = await http.get(server.url(view["path"]), params={"offset": view["acked_offset"]})
                if read.status_code != 200:
                    cycle.fail(f"{who} read", read)
                    return
                acks.append({"stream": view["path"], "offset": read.headers["Stream-Next-Offset"]})
            done = rng.random() < 0.7
            response = await post_json(http, 
                sub_url(server, PULL, "ack"), {**fence, "acks": acks, "done": done}, headers=auth
            )
            if response.status_code != 200:
                cycle.fail(f"{who} ack", response)
                return
            world.stats["acks answered"] += 1
            for ack in acks:
                if ack["offset"] > world.acked_ok.get(ack["stream"], ZERO):
                    world.acked_ok[ack["stream"]] = ack["offset"]
            if not done:  # a heartbeat; finish the wake next
                response = await post_json(http, 
                    sub_url(server, PULL, "ack"), {**fence, "done": True}, headers=auth
                )
                if response.status_code != 200:
                    cycle.fail(f"{who} ack done", response)
                    return
            await trio.sleep(rng.uniform(0, 0.02))
    except httpx.TransportError:
        world.stats["worker requests unanswered"] += 1


async def killer(cycle: Cycle, delay: float, scope: trio.CancelScope) -> None:
    await trio.sleep(delay)
    code = await cycle.server.kill()
    if code != -9:
        cycle.failures.append(f"server exited with {code} before the kill")
    scope.cancel()


# -- verification ---------------------------------------------------------------------


async def tails(http: httpx.AsyncClient, server: Server, world: World, label: str) -> dict[str, str]:
    """HEAD every stream ever attempted; the tails of those that exist."""
    found: dict[str, str] = {}
    for name in sorted(world.streams):
        response = await http.head(server.url(name))
        if response.status_code == 404:
            assert name not in world.confirmed, world.where(f"{label}: acknowledged stream {name} vanished")
            continue
        assert response.status_code == 200, world.where(f"{label}: HEAD {name} got {response.status_code}")
        found[name] = response.headers["Stream-Next-Offset"]
    return found


async def read_sub(http: httpx.AsyncClient, server: Server, world: World, sub_id: str, label: str) -> dict:
    response = await http.get(sub_url(server, sub_id))
    assert response.status_code == 200, world.where(f"{label}: GET {sub_id} got {response.status_code} {response.text}")
    return response.json()


def check_sub(world: World, sub_id: str, view: dict, tail: dict[str, str], label: str) -> dict[str, str]:
    """Offsets monotone, within the tail, acked 2xx kept; links present. Returns acked offsets."""
    where = world.where(f"{label}, subscription {sub_id}")
    assert view["pattern"] == PATTERN, where
    acked = {s["path"]: s["acked_offset"] for s in view["streams"]}
    assert WAKES not in acked, f"{where}: the wake stream is linked"
    missing = sorted(world.confirmed - set(acked))
    assert not missing, f"{where}: acknowledged streams not linked: {missing[:10]}"
    # Every existing stream (all match the pattern) is linked, even one whose create got no
    # answer because the kill came between the stream commit and the link commit: start-up
    # reconciles the pattern against the live streams and links it from offset zero.
    unlinked = sorted(name for name in tail if name not in acked)
    assert not unlinked, f"{where}: existing matching streams not linked: {unlinked[:10]}"
    for path, offset in acked.items():
        assert path in tail, f"{where}: {path} linked but the stream does not exist"
        assert offset <= tail[path], f"{where}: {path} acked {offset} beyond the tail {tail[path]}"
        before = world.verified[sub_id].get(path, ZERO)
        assert offset >= before, f"{where}: {path} acked offset went back from {before} to {offset}"
        if sub_id == PULL:
            ok = world.acked_ok.get(path, ZERO)
            assert offset >= ok, f"{where}: {path} ack of {ok} answered 2xx but acked_offset is {offset}"
    gone = sorted(set(world.verified[sub_id]) - set(acked))
    assert not gone, f"{where}: links vanished: {gone[:10]}"
    assert view["generation"] >= world.generation[sub_id], (
        f"{where}: generation went back from {world.generation[sub_id]} to {view['generation']}"
    )
    world.verified[sub_id] = acked
    world.generation[sub_id] = view["generation"]
    return acked


async def probe_stale(
    http: httpx.AsyncClient, server: Server, world: World, rng: random.Random, tail: dict[str, str], label: str
) -> None:
    """Claims of older generations: ack (to the tail) and release are FENCED and change nothing."""
    current = world.generation[PULL]
    stale = [c for c in world.claims if c.generation < current]
    if not stale:
        return
    probes = rng.sample(stale, min(STALE_PROBES - 1, len(stale)))
    probes.append(max(stale, key=lambda c: c.generation))  # the newest stale one
    before = (await read_sub(http, server, world, PULL, label))["streams"]
    for claim in probes:
        auth = {"Authorization": f"Bearer {claim.token}"}
        fence = {"wake_id": claim.wake_id, "generation": claim.generation}
        acks = [{"stream": s["path"], "offset": tail[s["path"]]} for s in claim.streams if s["path"] in tail]
        for action, body in (("ack", {**fence, "acks": acks, "done": True}), ("release", fence)):
            response = await post_json(http, sub_url(server, PULL, action), body, auth)
            where = world.where(f"{label}: stale {action} of generation {claim.generation} (now {current})")
            assert response.status_code == 409, f"{where} got {response.status_code} {response.text}"
            assert response.json()["error"]["code"] == "FENCED", f"{where}: {response.text}"
            world.stats["stale probes fenced"] += 1
    after = (await read_sub(http, server, world, PULL, label))["streams"]
    assert after == before, world.where(f"{label}: stale requests changed the subscription: {before} -> {after}")


async def claim_after_restart(http: httpx.AsyncClient, server: Server, world: World, label: str) -> httpx.Response:
    """Claim as the verifier, waiting out a lease that survived the kill."""
    with trio.fail_after(CLAIM_WAIT):
        while True:
            response = await post_json(http, sub_url(server, PULL, "claim"), {"worker": "verifier"})
            if response.status_code == 409 and response.json()["error"]["code"] == "ALREADY_CLAIMED":
                await trio.sleep(0.05)
                continue
            return response


async def check_claimable(
    http: httpx.AsyncClient, server: Server, world: World, tail: dict[str, str], drain: bool, label: str
) -> None:
    """Pending work gets a claim; a full drain ends with every link acked to its tail."""
    for _ in range(MAX_DRAIN):
        acked = check_sub(world, PULL, await read_sub(http, server, world, PULL, label), tail, label)
        pending = sorted(p for p, offset in acked.items() if tail[p] > offset)
        response = await claim_after_restart(http, server, world, label)
        where = world.where(f"{label}: claim with pending {pending[:5]}")
        if response.status_code == 409 and response.json()["error"]["code"] == "NO_PENDING_WORK":
            assert not pending, f"{where}: NO_PENDING_WORK although data is unacked"
            world.stats["drained"] += drain
            return
        assert response.status_code == 200, f"{where} got {response.status_code} {response.text}"
        body = response.json()
        claim = Claim(body["wake_id"], body["generation"], body["token"], body["streams"])
        world.claims.append(claim)
        views = {s["path"]: s for s in claim.streams}
        assert set(views) == set(acked), f"{where}: the claim shows links {sorted(views)}"
        for path, view in views.items():
            assert view["acked_offset"] == acked[path], f"{where}: {path} claim shows {view}, GET {acked[path]}"
            assert view["tail_offset"] <= tail[path], f"{where}: {path} snapshot beyond the tail: {view}"
        covered = [p for p, v in views.items() if v["has_pending"]]
        auth = {"Authorization": f"Bearer {claim.token}"}
        fence = {"wake_id": claim.wake_id, "generation": claim.generation}
        if not drain:
            if pending:
                assert covered, f"{where}: the wake covers nothing pending: {claim.streams}"
            response = await post_json(http, sub_url(server, PULL, "release"), fence, auth)
            assert response.status_code == 204, f"{where}: release got {response.status_code} {response.text}"
            return
        acks = [{"stream": p, "offset": views[p]["tail_offset"]} for p in covered]
        response = await post_json(http, sub_url(server, PULL, "ack"), {**fence, "acks": acks, "done": True}, auth)
        assert response.status_code == 200, f"{where}: ack got {response.status_code} {response.text}"
        for ack in acks:
            world.acked_ok[ack["stream"]] = max(world.acked_ok.get(ack["stream"], ZERO), ack["offset"])
        world.generation[PULL] = claim.generation
    raise AssertionError(world.where(f"{label}: still pending after {MAX_DRAIN} claims"))


async def verify(server: Server, world: World, rng: random.Random, drain: bool, label: str) -> None:
    with trio.fail_after(VERIFY_TIMEOUT):
        async with client() as http:
            tail = await tails(http, server, world, label)
            lost = sorted(p for p in world.acked_ok if world.acked_ok[p] > tail.get(p, ZERO))
            assert not lost, world.where(f"{label}: acked offsets beyond the tail (data lost?): {lost}")
            for sub_id in (PULL, HOOK):
                check_sub(world, sub_id, await read_sub(http, server, world, sub_id, label), tail, label)
            await probe_stale(http, server, world, rng, tail, label)
            await check_claimable(http, server, world, tail, drain, label)


# -- the test -------------------------------------------------------------------------


async def setup(server: Server, world: World, hook_url: str) -> None:
    async with client() as http:
        response = await http.put(server.url(WAKES), content=b"[]", headers={"Content-Type": JSON_TYPE})
        assert response.status_code == 201, response.text
        for k in range(INITIAL_STREAMS):
            name = f"jobs/init-{k}"
            response = await http.put(server.url(name), content=b'[{"n":0}]', headers={"Content-Type": JSON_TYPE})
            assert response.status_code == 201, response.text
            world.streams.add(name)
            world.confirmed.add(name)
        bodies = {
            PULL: {"type": "pull-wake", "pattern": PATTERN, "wake_stream": WAKES, "lease_ttl_ms": LEASE_MS},
            HOOK: {"type": "webhook", "pattern": PATTERN, "webhook": {"url": hook_url}, "lease_ttl_ms": LEASE_MS},
        }
        for sub_id, body in bodies.items():
            response = await post_json(http, sub_url(server, sub_id), body, method="PUT")
            assert response.status_code == 201, response.text


async def reconfirm(server: Server, world: World, hook_url: str) -> None:
    """The same configuration still re-confirms with 200 (the stored config is intact)."""
    async with client() as http:
        bodies = {
            PULL: {"type": "pull-wake", "pattern": PATTERN, "wake_stream": WAKES, "lease_ttl_ms": LEASE_MS},
            HOOK: {"type": "webhook", "pattern": PATTERN, "webhook": {"url": hook_url}, "lease_ttl_ms": LEASE_MS},
        }
        for sub_id, body in bodies.items():
            response = await post_json(http, sub_url(server, sub_id), body, method="PUT")
            assert response.status_code == 200, world.where(f"re-PUT {sub_id}: {response.status_code} {response.text}")


async def hook_catches_up(server: Server, world: World) -> None:
    """The webhook subscription acks every linked stream to its tail."""
    async with client() as http:
        tail = await tails(http, server, world, "final")
        with trio.fail_after(15):
            while True:
                view = await read_sub(http, server, world, HOOK, "final")
                acked = check_sub(world, HOOK, view, tail, "final")
                if all(acked[p] == tail[p] for p in acked):
                    return
                await trio.sleep(0.1)


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigkill_during_subscription_work(tmp_path: Path, workers: int) -> None:
    """Twelve SIGKILLs under writers, a creator and pull-wake workers, with a webhook too.

    With two server workers the subscription requests that reach the other
    worker are forwarded to the leader, and each kill takes both.
    """
    seed = master_seed()
    print(f"crash seed: {seed}")
    world = World(seed)
    server = Server(tmp_path / "data", seed, *(["--workers", str(workers)] if workers > 1 else []))
    started = trio.current_time()
    delays: list[float] = []
    try:
        async with trio.open_nursery() as outer:
            receiver = await start_receiver(outer, default=(200, {"done": True}))
            await server.start()
            await setup(server, world, receiver.url)
            for index in range(CYCLES):
                rng = random.Random(f"{seed}:cycle{index}")
                failures: list[str] = []
                delay = rng.uniform(*KILL_DELAY)
                delays.append(delay)
                with trio.fail_after(WRITE_PHASE_TIMEOUT):
                    async with client() as http, trio.open_nursery() as nursery:
                        cycle = Cycle(index, http, server, world, failures)
                        for k in range(2):
                            nursery.start_soon(writer, cycle, f"writer-{k}", random.Random(rng.getrandbits(64)))
                            nursery.start_soon(worker, cycle, f"worker-{k}", random.Random(rng.getrandbits(64)))
                        nursery.start_soon(creator, cycle, random.Random(rng.getrandbits(64)))
                        nursery.start_soon(killer, cycle, delay, nursery.cancel_scope)
                failures += server.errors_logged()
                assert not failures, world.where(f"cycle {index}:\n  " + "\n  ".join(failures[:40]))
                await server.start()
                label = f"after kill {index + 1} of {CYCLES} (delay {delay:.3f}s)"
                await verify(server, world, random.Random(f"{seed}:probe{index}"), rng.random() < DRAIN_CHANCE, label)
            await reconfirm(server, world, receiver.url)
            assert await server.stop() == 0, world.where("graceful stop failed")
            await server.start()
            await verify(server, world, random.Random(seed), True, "after a graceful restart")
            await hook_catches_up(server, world)
            assert not server.errors_logged(), world.where(f"errors logged: {server.errors_logged()[:10]}")
            assert await server.stop() == 0, world.where("graceful stop failed")
            outer.cancel_scope.cancel()
    finally:
        server.cleanup()
    elapsed = trio.current_time() - started
    print(
        f"crash seed {seed}: {CYCLES} kills in {elapsed:.1f}s, delays {min(delays):.3f}-{max(delays):.3f}s; "
        f"streams {len(world.streams)}; webhook deliveries {len(receiver.arrivals)}; "
        f"events: {dict(sorted(world.stats.items()))}"
    )
    assert world.stats["acks answered"] >= CYCLES // 2, world.where(f"the workers barely acked: {world.stats}")
    assert world.stats["claims granted"] > CYCLES, world.where(f"the workers barely claimed: {world.stats}")
