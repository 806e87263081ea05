"""Crash recovery of forks: SIGKILL a real ds_trio process while streams branch.

Each cycle runs concurrent tasks against `python -m ds_trio dev --data-dir DIR`
(one LMDB data dir for the whole test) and SIGKILLs it at a seeded moment:

- two appenders add checksummed records to roots, two to forks;
- a forker creates roots and forks (spec 4.2), mostly at an offset a 2xx
  append or create answered with (`Stream-Fork-Offset`), sometimes at the
  source's tail, sometimes with an initial body, forks of forks to depth 5;
- two deleters delete leaves (404 from then on) and streams that still have
  forks (soft-deleted: 410, kept for the forks); deleting the last fork of a
  soft-deleted stream removes it too, up the chain.

After each restart, against what the tasks were told:

- every stream answers HEAD as the model says: 200 while not deleted; once
  deleted, 410 while a fork of it is still there, else 404. A 410 where 404 is
  due is polled for `CLEANUP_POLL` seconds (the spec lets cleanup lag);
- a live stream reads exactly its source's data up to its fork point (as the
  source's acknowledged appends stood at that offset) followed by its own
  acknowledged appends, plus at most the one unanswered append, whole;
- a create or delete without an answer either happened or not, wholly, and the
  next restart keeps it that way; a fork never answered stays gone for good;
- offsets hold: HEAD agrees with the read, the tail does not move without data,
  and every offset ever answered for a stream still resumes a read there;
- a soft-deleted stream answers 410 to GET, POST and DELETE and 409 to PUT and
  to a fork of it; a removed one answers 404, also as a fork source.

Rules: loopback and port 0 only; only processes this module started are
stopped; every loop has a count bound and every wait a `trio.fail_after`.
Each stream has at most one request that changes it in flight (its task
claims it), so every unanswered request has exactly two possible outcomes.

Replay: the master seed is printed (`crash seed: N`) and quoted in every
failure; `DS_TRIO_CRASH_SEED=N` reruns the same choices. The kill lands against
real scheduling, so a replay is close but not identical.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Final

import httpx
import trio

from .test_kill import (
    OCTET,
    SEED_ENV,
    STREAM_ROOT,
    Server,
    StreamRead,
    _first_difference,
    _gather,
    client,
    make_record,
    master_seed,
    parse_records,
    read_all,
    send,
)

CYCLES: Final = 20  # kill/restart cycles
KILL_DELAY: Final = (0.05, 0.45)  # seconds after the tasks start
MAX_DEPTH: Final = 5  # a root has depth 0, a fork one more than its source
MAX_LIVE: Final = 28  # streams not deleted; the forker waits above this
MIN_LIVE: Final = 12  # ... and the deleters below this
MIN_ROOTS: Final = 2  # live roots the forker keeps around
ROOT_CHANCE: Final = 0.08  # share of the forker's turns that create a root
TAIL_FORK_CHANCE: Final = 0.2  # forks without Stream-Fork-Offset (at the tail)
BODY_CHANCE: Final = 0.2  # creates that carry an initial record
SOFT_DELETE_CHANCE: Final = 0.35  # deleter turns that pick a stream with forks
APPENDS_PER_TURN: Final = (1, 4)  # an appender's appends to one stream before it moves on
RECORD_SIZE: Final = (0, 800)  # payload bytes of a record
FORK_PAUSE: Final = 0.025  # seconds, at most, between the forker's turns
DELETE_PAUSE: Final = 0.05  # seconds, at most, between a deleter's turns (a third when crowded)
IDLE_PAUSE: Final = 0.005  # seconds an appender waits when no stream is free
MAX_TURNS: Final = 2000  # per task per cycle; the kill comes long before
CLEANUP_POLL: Final = 3.0  # seconds a 410 may take to become the 404 a cascade owes
POLL_INTERVAL: Final = 0.05  # seconds
GONE_SAMPLE: Final = 12  # streams seen 404 before that are asked again per restart
PROBES_PER_RESTART: Final = 3  # soft-deleted (and as many removed) streams probed per restart
WRITE_PHASE_TIMEOUT: Final = 20.0  # seconds from the tasks' start to all of them done
VERIFY_TIMEOUT: Final = 60.0  # seconds for one restart's checks
SMALL_MAP: Final = "1MiB"  # initial LMDB map, so kills also land around map growth


# -- the model: what the tasks were told, and what restarts have shown ---------------


@dataclass(eq=False)
class Node:
    """One stream name the test used: a root (no parent) or a fork.

    Its content is `inherited` (the source's data up to the fork point, as
    acknowledged when the fork was created) followed by `records`, its own
    acknowledged appends, in order; `pending` is its append without an answer.
    """

    name: str
    parent: str | None
    depth: int
    inherited: bytes = b""
    initial: bytes = b""  # the body of its PUT
    fork_offset: str | None = None  # Stream-Fork-Offset sent; None: the source's tail
    put_headers: dict[str, str] = field(default_factory=dict)  # of its PUT, for a retry
    created: str = "pending"  # pending | yes | absent
    deleted: str = "no"  # no | pending | yes
    records: list[bytes] = field(default_factory=list)
    pending: bytes | None = None
    marks: dict[str, int] = field(default_factory=dict)  # offset answered -> own records before it
    tail: str | None = None  # the offset after all of `records`
    children: list[str] = field(default_factory=list)  # forks of it, answered or not
    busy: str | None = None  # append | fork-tail | delete: a task holds it (this cycle only)
    forking: int = 0  # forks of it in flight (this cycle only)
    next_index: int = 0  # record indices are never reused
    seen: int | None = None  # HEAD status at the last restart that asked

    @property
    def live(self) -> bool:
        return self.created == "yes" and self.deleted == "no"

    @property
    def label(self) -> str:
        if self.parent is None:
            return f"{self.name} (root)"
        return f"{self.name} (depth {self.depth}, fork of {self.parent})"

    def content_at(self, count: int) -> bytes:
        """What the stream held when it had `count` records of its own."""
        return self.inherited + b"".join(self.records[:count])

    @property
    def content(self) -> bytes:
        return self.content_at(len(self.records))

    def accept(self, offset: str) -> None:
        """Its PUT was answered 201 (or a restart showed it happened)."""
        self.created = "yes"
        self.records = [self.initial] if self.initial else []
        self.tail = offset
        self.marks[offset] = len(self.records)

    def take_index(self) -> int:
        index = self.next_index
        self.next_index += 1
        return index


@dataclass
class Forest:
    """Every stream of the test, and counts of what the kills and checks met."""

    seed: int
    nodes: dict[str, Node] = field(default_factory=dict)
    made: Counter[str] = field(default_factory=Counter)  # names handed out, per prefix
    stats: Counter[str] = field(default_factory=Counter)
    seconds: Counter[str] = field(default_factory=Counter)  # time spent, per phase

    def new_node(self, prefix: str, parent: Node | None) -> Node:
        self.made[prefix] += 1
        depth = 0 if parent is None else parent.depth + 1
        node = Node(f"{prefix}{self.made[prefix]}", None if parent is None else parent.name, depth)
        self.nodes[node.name] = node
        if parent is not None:
            parent.children.append(node.name)
        return node

    def live(self) -> list[Node]:
        return [node for node in self.nodes.values() if node.live]

    def forks_of(self, node: Node) -> Iterator[Node]:
        return (self.nodes[name] for name in node.children)

    def removed(self, node: Node) -> bool:
        """Deleted, and no fork of it (that ever existed) is left to hold it."""
        return node.deleted == "yes" and not self.held(node)

    def holders(self, node: Node) -> list[Node]:
        """The forks of `node` whose reads still need its data."""
        return [c for c in self.forks_of(node) if c.created != "absent" and not self.removed(c)]

    def held(self, node: Node) -> bool:
        return bool(self.holders(node))

    def expected_status(self, node: Node) -> int:
        if node.created == "absent" or self.removed(node):
            return 404
        return 200 if node.deleted == "no" else 410

    def ancestors(self, node: Node) -> Iterator[Node]:
        while node.parent is not None:
            node = self.nodes[node.parent]
            yield node

    def note(self, what: str, happened: bool) -> None:
        self.stats[f"{what} {'kept' if happened else 'lost'}"] += 1


# -- the tasks: each claims a stream before it changes it -----------------------------


@dataclass
class Turn:
    """One cycle's shared state."""

    index: int
    http: httpx.AsyncClient
    server: Server
    failures: list[str]
    killed: bool = False  # set just before the SIGKILL: start no new request

    async def request(
        self,
        who: str,
        method: str,
        name: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response | None:
        """The response, or None when the kill cut the request off."""
        try:
            return await send(self.http, method, self.server.url(name), body, headers)
        except httpx.TransportError as exc:
            if not self.killed:
                self.failures.append(f"{who}: {method} {name} failed before the kill: {exc!r}")
            return None

    def fail(self, who: str, response: httpx.Response) -> None:
        self.failures.append(
            f"{who}: {response.request.method} {response.request.url.path} got "
            f"{response.status_code} {response.text[:200]!r}"
        )


async def append_once(turn: Turn, node: Node, rng: random.Random) -> bool:
    """One append to a claimed stream; False when the cycle is over for the task."""
    if turn.killed:
        return False
    record = make_record(node.name, node.take_index(), rng.randint(*RECORD_SIZE), rng)
    node.pending = record
    response = await turn.request("appender", "POST", node.name, record, {"Content-Type": OCTET})
    if response is None:
        return False
    if response.status_code != 204:
        node.pending = None
        turn.fail(f"append to {node.name}", response)
        return False
    node.pending = None
    node.records.append(record)
    node.tail = response.headers["Stream-Next-Offset"]
    node.marks[node.tail] = len(node.records)
    return True


async def appender(turn: Turn, forest: Forest, rng: random.Random, *, roots: bool) -> None:
    """Claims a free root (or fork), appends a few records, moves on."""
    for _ in range(MAX_TURNS):
        if turn.killed:
            return
        free = [
            node
            for node in forest.live()
            if node.busy is None and (node.parent is None) == roots
        ]
        if not free:
            await trio.sleep(IDLE_PAUSE)
            continue
        node = rng.choice(free)
        node.busy = "append"
        for _ in range(rng.randint(*APPENDS_PER_TURN)):
            if not await append_once(turn, node, rng):
                return
        node.busy = None
        await trio.sleep(0)


def _initial_body(node: Node, rng: random.Random) -> bytes:
    if rng.random() >= BODY_CHANCE:
        return b""
    return make_record(node.name, node.take_index(), rng.randint(*RECORD_SIZE), rng)


async def create_root(turn: Turn, forest: Forest, rng: random.Random) -> bool:
    node = forest.new_node("r", None)
    node.initial = _initial_body(node, rng)
    response = await turn.request(
        "forker", "PUT", node.name, node.initial, {"Content-Type": OCTET}
    )
    if response is None:
        return False
    if response.status_code != 201:
        turn.fail(f"create {node.name}", response)
        return False
    node.accept(response.headers["Stream-Next-Offset"])
    return True


async def create_fork(turn: Turn, forest: Forest, source: Node, rng: random.Random) -> bool:
    """Fork `source` at one of its answered offsets, or at its tail if it is free."""
    node = forest.new_node("f", source)
    at_tail = source.busy is None and rng.random() < TAIL_FORK_CHANCE
    if at_tail:
        source.busy = "fork-tail"  # no append may move the tail meanwhile
        count = len(source.records)
    else:
        node.fork_offset, count = rng.choice(list(source.marks.items()))
    node.inherited = source.content_at(count)
    node.initial = _initial_body(node, rng)
    headers = {"Stream-Forked-From": f"{STREAM_ROOT}/{source.name}"}
    if node.fork_offset is not None:
        headers["Stream-Fork-Offset"] = node.fork_offset
    if node.initial or rng.random() < 0.5:  # otherwise inherited
        headers["Content-Type"] = OCTET
    node.put_headers = headers
    source.forking += 1
    response = await turn.request("forker", "PUT", node.name, node.initial, headers)
    if response is None:
        return False
    source.forking -= 1
    if at_tail:
        source.busy = None
    if response.status_code != 201:
        turn.fail(f"fork {node.name} of {source.name}", response)
        return False
    node.accept(response.headers["Stream-Next-Offset"])
    return True


async def forker(turn: Turn, forest: Forest, rng: random.Random) -> None:
    for _ in range(MAX_TURNS):
        await trio.sleep(rng.uniform(0, FORK_PAUSE))
        if turn.killed:
            return
        live = forest.live()
        roots = sum(node.parent is None for node in live)
        if roots < MIN_ROOTS or (rng.random() < ROOT_CHANCE and len(live) < MAX_LIVE):
            if not await create_root(turn, forest, rng):
                return
            continue
        sources = [node for node in live if node.busy != "delete" and node.depth < MAX_DEPTH]
        if len(live) >= MAX_LIVE or not sources:
            continue
        source = rng.choices(sources, [1 + node.depth for node in sources])[0]
        if not await create_fork(turn, forest, source, rng):
            return


async def deleter(turn: Turn, forest: Forest, rng: random.Random) -> None:
    """Deletes leaves, and now and then a stream that still has forks."""
    for _ in range(MAX_TURNS):
        crowded = len(forest.live()) > MAX_LIVE * 3 // 4
        await trio.sleep(rng.uniform(0, DELETE_PAUSE / (3 if crowded else 1)))
        if turn.killed:
            return
        live = forest.live()
        if len(live) < MIN_LIVE:
            continue
        free = [node for node in live if node.busy is None and node.forking == 0]
        sources = [node for node in free if forest.held(node)]
        pool = sources if sources and rng.random() < SOFT_DELETE_CHANCE else free
        if not pool:
            continue
        node = rng.choice(pool)
        node.busy = "delete"
        node.deleted = "pending"
        response = await turn.request("deleter", "DELETE", node.name)
        if response is None:
            return
        node.busy = None
        if response.status_code != 204:
            turn.fail(f"delete {node.name}", response)
            return
        node.deleted = "yes"


async def killer(turn: Turn, delay: float) -> None:
    await trio.sleep(delay)
    turn.killed = True
    code = await turn.server.kill()
    if code != -9:
        turn.failures.append(f"server exited with {code} before the kill")


# -- verification after a restart ---------------------------------------------------


def _status_reason(forest: Forest, node: Node) -> str:
    if node.created == "absent":
        return "its unanswered create was absent at an earlier restart"
    if node.deleted == "no":
        return "it was never deleted"
    holders = [c.name for c in forest.holders(node)]
    if holders:
        return f"it was deleted, but forks {holders[:6]} still hold it"
    return "it was deleted and every fork of it is gone"


def _describe_mismatch(node: Node, content: bytes, expected: bytes) -> str:
    at = _first_difference(content, expected)
    part = "inherited" if at < len(node.inherited) else "own"
    text = (
        f"{node.label} at {node.fork_offset or 'its tail'}: read {len(content)} bytes, expected "
        f"{len(expected)} (+{len(node.pending or b'')} unanswered); first difference at byte "
        f"{at}, in the {part} part ({len(node.inherited)} bytes inherited)"
    )
    records, torn = parse_records(content, 0)
    if torn is not None:
        text += f"; {torn}"
    got = [f"{r.tag}:{r.index}" for r in records if r.start + len(r.data) > at][:4]
    wanted = parse_records(expected, 0)[0]
    want = [f"{r.tag}:{r.index}" for r in wanted if r.start + len(r.data) > at]
    return text + f"; records from there: {got}, expected {want[:4]}"


class Check:
    """One restart's checks; problems are collected, then asserted at once."""

    def __init__(self, http: httpx.AsyncClient, server: Server, forest: Forest) -> None:
        self.http = http
        self.server = server
        self.forest = forest
        self.problems: list[str] = []
        self.heads: dict[str, httpx.Response] = {}
        self.unanswered_forks: list[Node] = []  # forks whose create this restart settled

    def url(self, name: str) -> str:
        return self.server.url(name)

    async def read(self, node: Node, offset: str = "-1") -> StreamRead | None:
        """All of `node` from `offset`; None (and a problem) if the reads never catch up."""
        try:
            return await read_all(self.http, self.url(node.name), offset)
        except AssertionError as exc:  # read_all's page bound
            self.problems.append(f"{node.label}: reading from {offset}: {exc}")
            return None

    async def head(self, node: Node) -> None:
        self.heads[node.name] = await self.http.head(self.url(node.name))

    def settle(self, node: Node) -> None:
        """Decide the unanswered create or delete of `node` from its HEAD."""
        status = self.heads[node.name].status_code
        if node.created == "pending":
            kind = "fork" if node.parent is not None else "root"
            if status == 200:
                node.accept(self.heads[node.name].headers["Stream-Next-Offset"])
            elif status == 404:
                node.created = "absent"
            else:
                self.problems.append(f"{node.name}: unanswered create, then HEAD {status}")
                return
            self.forest.note(f"unanswered {kind} create", status == 200)
            if node.parent is not None:
                self.unanswered_forks.append(node)
        if node.deleted == "pending":
            if status in (404, 410):
                node.deleted = "yes"
            elif status == 200:
                node.deleted = "no"
            else:
                self.problems.append(f"{node.name}: unanswered DELETE, then HEAD {status}")
                return
            self.forest.note("unanswered delete", status != 200)

    async def statuses(self, nodes: list[Node]) -> None:
        """HEAD agrees with the model; a due 404 may lag behind a 410 a little."""
        lagging: list[Node] = []
        for node in nodes:
            status = self.heads[node.name].status_code
            expected = self.forest.expected_status(node)
            if status == 410 and expected == 404:
                lagging.append(node)
            elif status != expected:
                self.problems.append(
                    f"{node.label}: HEAD {status}, expected {expected}: "
                    f"{_status_reason(self.forest, node)}"
                )
        if lagging:
            self.forest.stats["cleanup lagged at a restart"] += 1
        deadline = trio.current_time() + CLEANUP_POLL
        while lagging and trio.current_time() < deadline:
            await trio.sleep(POLL_INTERVAL)
            await _gather([lambda n=n: self.head(n) for n in lagging])
            for node in lagging:
                if self.heads[node.name].status_code not in (404, 410):
                    self.problems.append(
                        f"{node.label}: HEAD 410, then {self.heads[node.name].status_code}"
                    )
            lagging = [n for n in lagging if self.heads[n.name].status_code == 410]
        for node in lagging:
            self.problems.append(
                f"{node.name}: still 410 after {CLEANUP_POLL}s, expected 404: "
                f"{_status_reason(self.forest, node)}"
            )
        for node in nodes:
            status = self.heads[node.name].status_code
            if node.seen == 410 and status == 404:
                self.forest.stats["410 became 404 across a restart (cascade)"] += 1
            node.seen = status

    async def content(self, node: Node, rng: random.Random) -> None:
        """Inherited data, own acknowledged appends, at most the unanswered one, whole."""
        read = await self.read(node)
        if read is None:
            return
        if read.status != 200:
            self.problems.append(f"{node.name}: HEAD 200 but GET {read.status}")
            return
        content = b"".join(read.pages)
        expected = node.content
        if content != expected and (node.pending is None or content != expected + node.pending):
            self.problems.append(_describe_mismatch(node, content, expected))
            return
        present = content != expected
        if node.pending is not None:
            self.forest.note("unanswered append", present)
            if present:
                node.records.append(node.pending)
            node.pending = None
        head_offset = self.heads[node.name].headers.get("Stream-Next-Offset")
        if head_offset != read.next_offset:
            self.problems.append(
                f"{node.name}: HEAD next offset {head_offset}, reading ended at {read.next_offset}"
            )
        if not present and read.next_offset != node.tail:
            self.problems.append(
                f"{node.name}: tail offset moved from {node.tail} to {read.next_offset} "
                "though no data was added"
            )
        node.tail = read.next_offset
        node.marks[node.tail] = len(node.records)
        if node.parent is not None:
            self.forest.stats["fork reads checked"] += 1
            if node.inherited and any(a.deleted == "yes" for a in self.forest.ancestors(node)):
                self.forest.stats["fork reads through a deleted ancestor"] += 1
        offset, count = rng.choice(list(node.marks.items()))
        resumed = await self.read(node, offset)
        want = content[len(node.content_at(count)) :]
        if resumed is not None and (resumed.status != 200 or b"".join(resumed.pages) != want):
            self.problems.append(
                f"{node.name}: reading from offset {offset} (answered after {count} own records) "
                f"gave {resumed.status} with {len(b''.join(resumed.pages))} bytes, "
                f"expected 200 with {len(want)}"
            )

    async def retry_fork(self, node: Node) -> None:
        """Re-send an unanswered fork PUT, as a client would: 200 if it is there, else 201.

        Either way the source gains one fork at most; later cascades check that.
        """
        source = self.forest.nodes[node.parent or ""]
        if node.created == "absent" and node.fork_offset is None:
            node.inherited = source.content  # the tail is wherever it is now
        response = await self.http.put(
            self.url(node.name), content=node.initial, headers=node.put_headers
        )
        self.forest.stats[f"unanswered fork create retried: {response.status_code}"] += 1
        expected = 200 if node.created == "yes" else 201
        offset = response.headers.get("Stream-Next-Offset")
        if response.status_code != expected:
            self.problems.append(
                f"{node.name}: retried fork PUT ({'present' if expected == 200 else 'absent'} "
                f"after the restart) got {response.status_code} {response.text[:200]!r}, "
                f"expected {expected}"
            )
        elif expected == 200 and offset != node.tail:
            self.problems.append(
                f"{node.name}: retried fork PUT says tail {offset}, not {node.tail}"
            )
        elif expected == 201 and offset is not None:
            node.accept(offset)
            node.seen = None  # not verified yet: the next restart reads it

    async def probe_soft_deleted(self, node: Node) -> None:
        """A soft-deleted stream: 410 to GET/POST/DELETE, 409 to PUT and to forking it."""
        self.forest.stats["soft-delete probes"] += 1
        url = self.url(node.name)
        record = make_record("probe", 0, 8, random.Random(0))
        answers = {
            "GET": (await self.http.get(url, params={"offset": "-1"})).status_code,
            "POST": (
                await self.http.post(url, content=record, headers={"Content-Type": OCTET})
            ).status_code,
            "DELETE": (await self.http.delete(url)).status_code,
            "PUT": (await self.http.put(url, headers={"Content-Type": OCTET})).status_code,
            "fork": await self._fork_probe(node),
        }
        wanted = {"GET": 410, "POST": 410, "DELETE": 410, "PUT": 409, "fork": 409}
        if answers != wanted:
            self.problems.append(
                f"{node.name} (soft-deleted): answered {answers}, expected {wanted}"
            )

    async def probe_removed(self, node: Node) -> None:
        """A removed stream: 404, also as a fork source."""
        self.forest.stats["removed probes"] += 1
        url = self.url(node.name)
        answers = {
            "GET": (await self.http.get(url, params={"offset": "-1"})).status_code,
            "DELETE": (await self.http.delete(url)).status_code,
            "fork": await self._fork_probe(node),
        }
        wanted = {"GET": 404, "DELETE": 404, "fork": 404}
        if answers != wanted:
            self.problems.append(f"{node.name} (removed): answered {answers}, expected {wanted}")

    async def _fork_probe(self, source: Node) -> int:
        """PUT a fork of `source` at a fresh name; a refused fork must leave no stream."""
        self.forest.made["probe"] += 1
        name = f"probe{self.forest.made['probe']}"
        headers = {"Stream-Forked-From": f"{STREAM_ROOT}/{source.name}"}
        response = await self.http.put(self.url(name), headers=headers)
        if response.status_code >= 300:
            head = await self.http.head(self.url(name))
            if head.status_code != 404:
                self.problems.append(
                    f"{name}: fork of {source.name} refused ({response.status_code}) "
                    f"but HEAD {head.status_code}"
                )
        return response.status_code


async def verify(server: Server, forest: Forest, restart: int, *, label: str) -> None:
    """Every check after a restart; fails the test with the seed on any problem."""
    rng = random.Random(f"{forest.seed}:forks:verify{restart}")
    with trio.fail_after(VERIFY_TIMEOUT):
        async with client() as http:
            check = Check(http, server, forest)
            # A removed stream cannot come back (names are never reused): ask a sample.
            # Creates that were unanswered and absent are few: ask them all, always.
            gone = [n for n in forest.nodes.values() if n.seen == 404 and n.created == "yes"]
            asked = [n for n in forest.nodes.values() if n.seen != 404 or n.created != "yes"]
            asked += rng.sample(gone, min(GONE_SAMPLE, len(gone)))
            await _gather([lambda n=n: check.head(n) for n in asked])
            for node in asked:
                check.settle(node)
            await check.statuses(asked)
            live = [n for n in asked if n.seen == 200 and n.live]
            await _gather(
                [lambda n=n, r=rng.random(): check.content(n, random.Random(r)) for n in live]
            )
            soft = [n for n in asked if n.seen == 410]
            removed = [n for n in asked if n.seen == 404 and n.created == "yes"]
            soft = rng.sample(soft, min(PROBES_PER_RESTART, len(soft)))
            removed = rng.sample(removed, min(PROBES_PER_RESTART, len(removed)))
            await _gather(
                [
                    *(lambda n=n: check.probe_soft_deleted(n) for n in soft),
                    *(lambda n=n: check.probe_removed(n) for n in removed),
                ]
            )
            # Unanswered forks: retry those present, and half of those absent (the
            # other half must stay absent for good).
            retries = [
                n
                for n in check.unanswered_forks
                if n.created == "yes"
                or (rng.random() < 0.5 and forest.nodes[n.parent or ""].seen == 200)
            ]
            await _gather([lambda n=n: check.retry_fork(n) for n in retries])
    problems = check.problems + server.errors_logged()
    assert not problems, (
        f"crash seed {forest.seed} ({SEED_ENV}={forest.seed} to replay), {label}:\n  "
        + "\n  ".join(problems[:40])
    )


def _removed_grandparents(forest: Forest) -> int:
    """Removed streams that had forks of forks: the removal had a chain to wait for."""
    count = 0
    for node in forest.nodes.values():
        if not forest.removed(node) or node.created != "yes":
            continue
        for child in forest.forks_of(node):
            if child.created == "yes" and any(g.created == "yes" for g in forest.forks_of(child)):
                count += 1
                break
    return count


# -- the test -----------------------------------------------------------------------


async def test_sigkill_while_forking_appending_and_deleting(tmp_path: Path) -> None:
    """Twenty SIGKILLs while streams are forked, appended to and (soft-)deleted."""
    seed = master_seed()
    print(f"crash seed: {seed}")
    forest = Forest(seed)
    settings = tmp_path / "ds_trio.toml"
    settings.write_text(f'lmdb_map_size = "{SMALL_MAP}"\n')
    server = Server(tmp_path / "data", seed, "--config", str(settings))
    started = trio.current_time()
    try:
        await server.start()
        async with client() as http:
            for _ in range(MIN_ROOTS + 1):
                node = forest.new_node("r", None)
                response = await http.put(server.url(node.name), headers={"Content-Type": OCTET})
                assert response.status_code == 201, f"crash seed {seed}: {response.text}"
                node.accept(response.headers["Stream-Next-Offset"])
        delays: list[float] = []
        for index in range(CYCLES):
            rng = random.Random(f"{seed}:forks:cycle{index}")
            delay = rng.uniform(*KILL_DELAY)
            delays.append(delay)
            failures: list[str] = []
            phase = trio.current_time()
            with trio.fail_after(WRITE_PHASE_TIMEOUT):
                async with client() as http, trio.open_nursery() as nursery:
                    turn = Turn(index, http, server, failures)
                    for roots in (True, True, False, False):
                        task_rng = random.Random(rng.getrandbits(64))
                        nursery.start_soon(partial(appender, turn, forest, task_rng, roots=roots))
                    nursery.start_soon(forker, turn, forest, random.Random(rng.getrandbits(64)))
                    for _ in range(2):
                        deleter_rng = random.Random(rng.getrandbits(64))
                        nursery.start_soon(deleter, turn, forest, deleter_rng)
                    nursery.start_soon(killer, turn, delay)
            for node in forest.nodes.values():
                node.busy, node.forking = None, 0
            forest.seconds["writes"] += trio.current_time() - phase
            failures += server.errors_logged()
            assert not failures, (
                f"crash seed {seed} ({SEED_ENV}={seed} to replay), cycle {index} writes:\n  "
                + "\n  ".join(failures[:40])
            )
            phase = trio.current_time()
            await server.start()
            forest.seconds["restarts"] += trio.current_time() - phase
            label = f"after kill {index + 1} of {CYCLES} (delay {delay:.3f}s)"
            phase = trio.current_time()
            await verify(server, forest, index, label=label)
            forest.seconds["checks"] += trio.current_time() - phase
        # A clean stop and one more restart: nothing may change across it.
        assert await server.stop() == 0, f"crash seed {seed}: graceful stop failed"
        await server.start()
        await verify(server, forest, CYCLES, label="after a graceful stop")
        assert await server.stop() == 0, f"crash seed {seed}: graceful stop failed"
    finally:
        server.cleanup()
    nodes = list(forest.nodes.values())
    created = [n for n in nodes if n.created == "yes"]
    depth = max(n.depth for n in created)
    cascades = forest.stats["410 became 404 across a restart (cascade)"]
    soft_seen = sum(n.seen == 410 for n in nodes) + cascades
    held_removed = sum(
        forest.removed(n) and any(c.created == "yes" for c in forest.forks_of(n)) for n in created
    )
    unanswered = sum(v for k, v in forest.stats.items() if k.startswith("unanswered"))
    print(
        f"crash seed {seed}: {CYCLES} kills, delays {min(delays):.3f}-{max(delays):.3f}s, "
        f"{trio.current_time() - started:.1f}s ("
        + ", ".join(f"{k} {v:.1f}s" for k, v in forest.seconds.items())
        + f"); streams {len(created)} created "
        f"({sum(n.parent is not None for n in created)} forks, max depth {depth}), "
        f"{sum(n.live for n in nodes)} live, {sum(n.seen == 410 for n in nodes)} soft-deleted, "
        f"{sum(forest.removed(n) for n in created)} removed ({held_removed} after their forks, "
        f"{_removed_grandparents(forest)} with forks of forks); records kept "
        f"{sum(len(n.records) for n in created)}; events: {dict(sorted(forest.stats.items()))}"
    )
    assert depth >= MAX_DEPTH - 1, f"crash seed {seed}: fork chains stayed shallow ({depth})"
    assert soft_seen > 0, f"crash seed {seed}: no restart saw a soft-deleted stream"
    assert held_removed > 0, f"crash seed {seed}: no stream was removed after its forks"
    assert forest.stats["fork reads through a deleted ancestor"] > 0, (
        f"crash seed {seed}: no fork was read after its source was deleted"
    )
    assert unanswered >= CYCLES, (
        f"crash seed {seed}: the kills rarely caught a request in flight: {forest.stats}"
    )


def test_model_statuses_follow_soft_deletes_and_cascades() -> None:
    """The model itself: 410 while a fork holds a deleted stream, 404 once none does."""
    forest = Forest(0)
    a = forest.new_node("r", None)
    b = forest.new_node("f", a)
    c = forest.new_node("f", b)
    lost = forest.new_node("f", a)
    for node in (a, b, c):
        node.accept("o")
    lost.created = "absent"  # an unanswered fork that did not happen holds nothing
    assert [forest.expected_status(n) for n in (a, b, c, lost)] == [200, 200, 200, 404]
    a.deleted = b.deleted = "yes"
    assert [forest.expected_status(n) for n in (a, b, c)] == [410, 410, 200]
    assert forest.held(a) and not forest.held(c)
    c.deleted = "yes"  # the last fork of the chain goes: everything cascades
    assert [forest.expected_status(n) for n in (a, b, c)] == [404, 404, 404]
    c.deleted = "pending"  # undecided: it still holds its source until a restart shows
    assert forest.held(b) and [forest.expected_status(n) for n in (a, b)] == [410, 410]

    node = Node("f9", "r1", 1, inherited=b"in;", initial=b"i;")
    node.accept("o1")
    node.records.append(b"x;")
    assert node.content == b"in;i;x;" and node.content_at(1) == b"in;i;"
    assert node.marks == {"o1": 1}
