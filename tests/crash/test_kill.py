"""Crash recovery: SIGKILL a real ds_trio process on an LMDB data dir mid-write.

Each cycle starts `python -m ds_trio dev --data-dir DIR` on the same directory,
runs concurrent writers, SIGKILLs the process at a seeded random moment,
restarts it and checks every stream against what the writers were told:

- an append answered 2xx is present exactly once, in order, byte for byte;
- an append without a 2xx is either wholly present or wholly absent, and once a
  restart has shown which, it stays that way;
- an idempotent producer retrying its unanswered (id, epoch, seq) gets 200 when
  the record was absent and 204 when it was present, never 409, and the record
  then appears exactly once;
- a JSON batch (one array of 1-5 objects) is all there or not there at all;
- an acknowledged close survives (HEAD says Stream-Closed: true) and appends to
  the stream then get 409;
- offsets stay opaque but consistent: HEAD agrees with reads, and the tail
  offset saved at one restart resumes a read at the next one.

Rules: loopback and port 0 only; only processes this module started are
stopped; every loop has a count bound and every wait a `trio.fail_after`. Each
writer is sequential on its own stream (or its own producer id), so at most one
of its requests is in flight at the kill.

Replay: the master seed is printed (`crash seed: N`) and quoted in every
failure; `DS_TRIO_CRASH_SEED=N` reruns the same delays, sizes and payloads. The
kill lands against real scheduling, so a replay is close but not identical.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import httpx
import pytest
import trio

from ..e2e.conformance import ServerProcess

SEED_ENV: Final = "DS_TRIO_CRASH_SEED"
STREAM_ROOT: Final = "/v1/stream"
OCTET: Final = "application/octet-stream"
JSON_TYPE: Final = "application/json"

CYCLES: Final = 20  # kill/restart cycles in the main test
WORKER_CYCLES: Final = 8  # the same, against a server of two workers
BURST_CYCLES: Final = 6  # kill/restart cycles in the one-stream burst test
BURST_PRODUCERS: Final = 6
KILL_DELAY: Final = (0.05, 0.4)  # seconds after the writers start
BURST_KILL_DELAY: Final = (0.03, 0.25)  # seconds after the burst starts
BIG_KILL_DELAY: Final = (0.0, 0.25)  # seconds after a big append starts (it takes ~0.05-0.3 s)
BIG_APPEND: Final = (1 << 20, 4 << 20)  # bytes, 1-4 MiB
SMALL_APPEND: Final = (0, 1500)  # payload bytes of an ordinary record
BIG_CYCLE_CHANCE: Final = 0.3  # share of cycles that kill during a big append
MAX_REQUESTS: Final = 2000  # per writer per cycle; the kill comes long before
CLOSER_STREAMS: Final = 4  # streams the closer creates, fills and closes per cycle
CLOSER_PAUSE: Final = 0.03  # seconds, at most, between the closer's requests
PROBES_PER_RESTART: Final = 4  # closed streams probed again for 409 (new ones always are)
MAX_PAGES: Final = 1000  # GETs to read one stream, at most
VERIFY_CONCURRENCY: Final = 8
STARTUP_TIMEOUT: Final = 30.0  # seconds for the server to print its URL
WRITE_PHASE_TIMEOUT: Final = 20.0  # seconds from writers' start to all of them done
VERIFY_TIMEOUT: Final = 60.0  # seconds for one restart's checks
HTTP_TIMEOUT: Final = 10.0  # seconds per request
FIRST_START_ATTEMPTS: Final = 3  # kills during a first start; each one bricks the dir today
SMALL_MAP: Final = "1MiB"  # initial LMDB map of the main test, so kills also land around map growth

_RECORD_RE: Final = re.compile(rb"([A-Za-z0-9-]+):(\d+):(\d+):([0-9a-f]*):([0-9a-f]{8});")


def master_seed() -> int:
    raw = os.environ.get(SEED_ENV)
    return int(raw) if raw else random.SystemRandom().randrange(2**32)


# -- records: `<tag>:<index>:<len>:<hex payload>:<crc32>;` ---------------------------


def make_record(tag: str, index: int, size: int, rng: random.Random) -> bytes:
    """A self-checking record; no field can hold ':' or ';', so tears show."""
    payload = rng.randbytes((size + 1) // 2).hex()[:size].encode()
    head = b"%s:%d:%d:%s" % (tag.encode(), index, size, payload)
    return head + b":%08x;" % zlib.crc32(head)


@dataclass(frozen=True)
class Parsed:
    tag: str
    index: int
    data: bytes
    start: int  # byte offset in the stream

    @property
    def key(self) -> tuple[str, int]:
        return (self.tag, self.index)


def parse_records(data: bytes, base: int) -> tuple[list[Parsed], str | None]:
    """Split `data` (which starts at stream offset `base`) into records.

    Returns the records and, if the bytes stop parsing, what went wrong where.
    """
    records: list[Parsed] = []
    position = 0
    while position < len(data):
        match = _RECORD_RE.match(data, position)
        if match is None:
            snippet = data[position : position + 60]
            return records, f"torn or foreign bytes at offset {base + position}: {snippet!r}"
        head = data[position : match.start(5) - 1]
        if int(match[3]) != len(match[4]) or int(match[5], 16) != zlib.crc32(head):
            return records, f"corrupt record at offset {base + position}: {head[:60]!r}"
        records.append(Parsed(match[1].decode(), int(match[2]), match.group(0), base + position))
        position = match.end()
    return records, None


def _brief(values: list[int]) -> str:
    if len(values) <= 12:
        return str(values)
    return f"[{values[0]}..{values[-1]}] ({len(values)} items)"


def _first_difference(a: bytes, b: bytes) -> int:
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return min(len(a), len(b))


# -- models: what the writers were told, and what restarts have shown ------------


@dataclass
class ByteStream:
    """A byte stream of records from one or more sequential writers (tags).

    `verified` is the content the last restart showed; it must persist. Since
    then each tag has acknowledged records (in order) and at most one pending.
    """

    name: str
    verified: bytes = b""
    verified_offset: str | None = None  # the tail offset when `verified` was read
    seen: set[tuple[str, int]] = field(default_factory=set)  # records in `verified`
    acked: dict[str, list[int]] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)
    sent: dict[tuple[str, int], bytes] = field(default_factory=dict)  # acked + pending bodies
    next_index: dict[str, int] = field(default_factory=dict)  # never reused, even if lost

    def take_index(self, tag: str) -> int:
        index = self.next_index.get(tag, 0)
        self.next_index[tag] = index + 1
        return index

    def begin(self, tag: str, index: int, record: bytes) -> None:
        assert tag not in self.pending, f"{tag} already has a request in flight"
        self.pending[tag] = index
        self.sent[(tag, index)] = record

    def ack(self, tag: str, index: int) -> None:
        assert self.pending.pop(tag) == index
        self.acked.setdefault(tag, []).append(index)

    def adopt(self, tag: str, index: int, record: bytes) -> None:
        """A retried record was just acknowledged as new: it must appear once."""
        self.sent[(tag, index)] = record
        self.acked.setdefault(tag, []).append(index)

    def check(self, content: bytes) -> tuple[list[str], set[tuple[str, int]]]:
        """Problems with `content`, and the records found past `verified`."""
        if not content.startswith(self.verified):
            at = _first_difference(content, self.verified)
            return [
                f"{self.name}: data seen after an earlier restart changed or vanished "
                f"(had {len(self.verified)} bytes, now {len(content)}; first difference at {at})"
            ], set()
        problems: list[str] = []
        records, torn = parse_records(content[len(self.verified) :], len(self.verified))
        if torn is not None:
            problems.append(f"{self.name}: {torn}")
        found: dict[str, list[int]] = {}
        keys: set[tuple[str, int]] = set()
        for record in records:
            if record.key in self.seen or record.key in keys:
                problems.append(
                    f"{self.name}: record {record.tag}:{record.index} appears more than once "
                    f"(again at offset {record.start})"
                )
            keys.add(record.key)
            sent = self.sent.get(record.key)
            if sent is None:
                problems.append(
                    f"{self.name}: record {record.tag}:{record.index} at offset {record.start} "
                    "was never sent, was rejected, or was absent after an earlier restart"
                )
            elif sent != record.data:
                problems.append(
                    f"{self.name}: record {record.tag}:{record.index} differs from what was sent"
                )
            found.setdefault(record.tag, []).append(record.index)
        for tag in sorted(set(found) | set(self.acked) | set(self.pending)):
            got = found.get(tag, [])
            acked = self.acked.get(tag, [])
            allowed = [acked]
            if tag in self.pending:
                allowed.append([*acked, self.pending[tag]])
            if got not in allowed:
                missing = [index for index in acked if index not in got]
                problems.append(
                    f"{self.name}: writer {tag} acknowledged {_brief(acked)} "
                    f"(unacknowledged: {self.pending.get(tag)}), stream has {_brief(got)}; "
                    f"acknowledged but missing: {_brief(missing)}"
                )
        return problems, keys

    def settle(self, content: bytes, found: set[tuple[str, int]]) -> dict[str, tuple[int, bool]]:
        """Adopt `content` as verified; returns each pending record's (index, present)."""
        resolved = {tag: (index, (tag, index) in found) for tag, index in self.pending.items()}
        self.verified = content
        self.seen |= found
        self.acked.clear()
        self.pending.clear()
        self.sent.clear()
        return resolved


@dataclass
class JsonStream:
    """A JSON stream written by one sequential batch writer."""

    name: str
    verified: list[bytes] = field(default_factory=list)  # message texts
    verified_offset: str | None = None  # the tail offset when `verified` was read
    acked: list[list[bytes]] = field(default_factory=list)
    pending: list[bytes] | None = None

    def check(self, messages: list[bytes]) -> list[str]:
        if messages[: len(self.verified)] != self.verified:
            return [f"{self.name}: messages seen after an earlier restart changed or vanished"]
        fresh = messages[len(self.verified) :]
        acked = [message for batch in self.acked for message in batch]
        if fresh == acked or (self.pending is not None and fresh == [*acked, *self.pending]):
            return []
        summary = _batch_summary(fresh)
        if (
            self.pending is not None
            and fresh[: len(acked)] == acked
            and fresh[len(acked) :] == self.pending[: len(fresh) - len(acked)]
        ):
            return [
                f"{self.name}: unacknowledged batch torn: {len(fresh) - len(acked)} of "
                f"{len(self.pending)} messages present ({summary})"
            ]
        return [
            f"{self.name}: expected {len(self.acked)} acknowledged batches "
            f"({len(acked)} messages, +{len(self.pending or [])} unacknowledged); "
            f"found {len(fresh)} messages: {summary}"
        ]

    def settle(self, messages: list[bytes]) -> bool | None:
        """Adopt `messages` as verified; returns whether the pending batch is there."""
        acked = len(self.verified) + sum(len(batch) for batch in self.acked)
        present = None if self.pending is None else len(messages) > acked
        self.verified = messages
        self.acked.clear()
        self.pending = None
        return present


def _batch_summary(messages: list[bytes]) -> str:
    parts = []
    for text in messages[:40]:
        try:
            obj = json.loads(text)
            parts.append(f"b{obj['b']}.{obj['i']}/{obj['n']}")
        except (ValueError, KeyError, TypeError):
            parts.append(f"?{text[:30]!r}")
    return " ".join(parts) + (" ..." if len(messages) > 40 else "")


@dataclass
class Producer:
    """One idempotent producer, writing to `stream` under tag `<base>e<epoch>`."""

    producer_id: str
    base_tag: str
    stream: ByteStream
    epoch: int = 0
    next_seq: int = 0
    in_flight: tuple[int, bytes] | None = None  # sent, never answered 2xx
    retry: tuple[int, bytes, bool] | None = None  # (seq, body, present after restart)
    last_acked: tuple[int, bytes] | None = None

    @property
    def tag(self) -> str:
        return f"{self.base_tag}e{self.epoch}"

    def headers(self, seq: int) -> dict[str, str]:
        return {
            "Content-Type": OCTET,
            "Producer-Id": self.producer_id,
            "Producer-Epoch": str(self.epoch),
            "Producer-Seq": str(seq),
        }

    def new_epoch(self) -> None:
        assert self.in_flight is None
        assert self.retry is None
        self.epoch += 1
        self.next_seq = 0
        self.last_acked = None


@dataclass
class ClosedStream:
    """A stream the closer created, filled and (maybe) closed in one cycle."""

    data: ByteStream
    created: str = "pending"  # pending | acked | present | absent
    close: str = "none"  # none | pending | acked | closed | open
    cycle: int = 0
    probed: bool = False  # an append was refused with 409 after a restart


@dataclass
class World:
    """Everything the writers were told, across all cycles."""

    seed: int
    plains: list[ByteStream] = field(default_factory=list)
    producers: list[Producer] = field(default_factory=list)
    jsons: list[JsonStream] = field(default_factory=list)
    closed: list[ClosedStream] = field(default_factory=list)
    probes: int = 0
    stats: Counter[str] = field(default_factory=Counter)  # what the kills hit

    def note(self, what: str, outcome: bool | None) -> None:
        if outcome is not None:
            self.stats[f"{what} {'kept' if outcome else 'lost'}"] += 1

    def byte_streams(self) -> list[ByteStream]:
        streams = {id(s): s for s in [*self.plains, *(p.stream for p in self.producers)]}
        return list(streams.values())


# -- the server and HTTP helpers ----------------------------------------------------


class Server:
    """The current ds_trio process on the test's data dir."""

    def __init__(self, data_dir: Path, seed: int, *args: str) -> None:
        self.data_dir = data_dir
        self.seed = seed
        self.args = args  # more `ds_trio dev` flags
        self.process: ServerProcess | None = None
        self.starts = 0

    @property
    def root(self) -> str:
        assert self.process is not None
        return self.process.base_url + STREAM_ROOT

    def url(self, name: str) -> str:
        return f"{self.root}/{name}"

    async def start(self) -> None:
        assert self.process is None or self.process.process.poll() is not None
        try:
            self.process = await trio.to_thread.run_sync(
                lambda: ServerProcess(
                    "--data-dir", str(self.data_dir), *self.args, startup_timeout=STARTUP_TIMEOUT
                )
            )
        except RuntimeError as exc:
            pytest.fail(f"crash seed {self.seed}: restart {self.starts} failed: {exc}")
        self.starts += 1

    async def kill(self) -> int:
        assert self.process is not None
        return await trio.to_thread.run_sync(self.process.kill)

    async def stop(self) -> int:
        assert self.process is not None
        return await trio.to_thread.run_sync(self.process.stop)

    def errors_logged(self) -> list[str]:
        assert self.process is not None
        return [
            f"server log: {line.rstrip()}"
            for line in self.process.output
            if " ERROR " in line or "Traceback" in line or " CRITICAL " in line
        ]

    def log_count(self, text: str) -> int:
        assert self.process is not None
        return sum(text in line for line in self.process.output)

    def cleanup(self) -> None:
        if self.process is not None and self.process.process.poll() is None:
            self.process.kill()


def client() -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    return httpx.AsyncClient(timeout=HTTP_TIMEOUT, limits=limits)


class _Body(httpx.AsyncByteStream):
    """A request body that is not an async generator.

    httpx sends `content=` through an async generator; when the connection dies
    mid-send (the point of this module) the generator is left suspended and
    Trio's finalizer warns (ResourceWarning, an error here). This iterator has
    nothing to finalize.
    """

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        if not self._data:
            raise StopAsyncIteration
        data, self._data = self._data, None
        return data


async def send(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """One request whose body survives a dead connection without warnings."""
    request = http.build_request(method, url, content=body, headers=headers)
    request.stream = _Body(body)
    return await http.send(request)


@dataclass
class StreamRead:
    status: int  # 200, or the status of the first GET if not 200
    pages: list[bytes] = field(default_factory=list)
    next_offset: str = ""
    closed: bool = False


async def read_all(http: httpx.AsyncClient, url: str, offset: str = "-1") -> StreamRead:
    """Catch-up GETs from `offset` (default: the start) until Stream-Up-To-Date."""
    read = StreamRead(200)
    for _ in range(MAX_PAGES):
        response = await http.get(url, params={"offset": offset})
        if response.status_code != 200:
            return StreamRead(response.status_code, read.pages)
        read.pages.append(response.content)
        offset = response.headers["Stream-Next-Offset"]
        if response.headers.get("Stream-Up-To-Date") == "true":
            read.next_offset = offset
            read.closed = response.headers.get("Stream-Closed") == "true"
            return read
    raise AssertionError(f"{url}: not up to date after {MAX_PAGES} reads")


async def check_offsets(
    http: httpx.AsyncClient,
    url: str,
    name: str,
    read: StreamRead,
    before: str | None,
    grew: bool,
    problems: list[str],
) -> list[bytes] | None:
    """Offsets are opaque but ordered: HEAD agrees with the read's tail, the tail
    moved forward exactly when data was added, and the tail offset saved at the
    previous restart still resumes a read. Returns the pages read from there."""
    head = await http.head(url)
    if head.status_code != 200 or head.headers.get("Stream-Next-Offset") != read.next_offset:
        problems.append(
            f"{name}: HEAD {head.status_code} next offset "
            f"{head.headers.get('Stream-Next-Offset')}, but reading ended at {read.next_offset}"
        )
    if before is None:
        return None
    if read.next_offset < before or (read.next_offset > before) != grew:
        problems.append(
            f"{name}: tail offset went from {before} to {read.next_offset} "
            f"though data was {'added' if grew else 'not added'}"
        )
        return None
    resumed = await read_all(http, url, before)
    if resumed.status != 200 or resumed.next_offset != read.next_offset:
        problems.append(
            f"{name}: resuming from {before} (saved before the kill) answered {resumed.status}, "
            f"ending at {resumed.next_offset} instead of {read.next_offset}"
        )
        return None
    return resumed.pages


# -- writers: each sequential; a transport error means "unacknowledged", stop ------


@dataclass
class Cycle:
    """One cycle's shared state."""

    index: int
    http: httpx.AsyncClient
    server: Server
    failures: list[str]
    big_started: trio.Event = field(default_factory=trio.Event)
    big_unanswered: bool = False  # the kill came while the big append was in flight
    big_answered_after: float | None = None  # seconds the big append took, if answered

    def fail(self, who: str, response: httpx.Response) -> None:
        self.failures.append(
            f"{who}: {response.request.method} {response.request.url.path} got "
            f"{response.status_code} {response.text[:200]!r}"
        )


async def plain_writer(
    cycle: Cycle, stream: ByteStream, tag: str, rng: random.Random, big_at: int | None
) -> None:
    """Plain appends (204); the `big_at`-th request carries 1-4 MiB."""
    for n in range(MAX_REQUESTS):
        index = stream.take_index(tag)
        size = rng.randint(*BIG_APPEND) if n == big_at else rng.randint(*SMALL_APPEND)
        record = make_record(tag, index, size, rng)
        stream.begin(tag, index, record)
        if n == big_at:
            cycle.big_started.set()
            began = trio.current_time()
        try:
            response = await send(
                cycle.http, "POST", cycle.server.url(stream.name), record, {"Content-Type": OCTET}
            )
        except httpx.TransportError:
            if n == big_at:
                cycle.big_unanswered = True
            return
        if response.status_code != 204:
            cycle.fail(tag, response)
            return
        if n == big_at:
            cycle.big_answered_after = trio.current_time() - began
        stream.ack(tag, index)


async def producer_writer(cycle: Cycle, producer: Producer, rng: random.Random) -> None:
    assert producer.in_flight is None
    for _ in range(MAX_REQUESTS):
        seq = producer.next_seq
        record = make_record(producer.tag, seq, rng.randint(*SMALL_APPEND), rng)
        producer.stream.begin(producer.tag, seq, record)
        producer.in_flight = (seq, record)
        try:
            response = await send(
                cycle.http,
                "POST",
                cycle.server.url(producer.stream.name),
                record,
                producer.headers(seq),
            )
        except httpx.TransportError:
            return
        if (
            response.status_code != 200
            or response.headers.get("Producer-Seq") != str(seq)
            or response.headers.get("Producer-Epoch") != str(producer.epoch)
        ):
            cycle.fail(f"{producer.producer_id} seq {seq}", response)
            return
        producer.stream.ack(producer.tag, seq)
        producer.in_flight = None
        producer.last_acked = (seq, record)
        producer.next_seq = seq + 1


def json_batch(batch: int, rng: random.Random) -> list[bytes]:
    count = rng.randint(1, 5)
    return [
        json.dumps(
            {
                "w": "J",
                "b": batch,
                "i": i,
                "n": count,
                "p": rng.randbytes(rng.randint(0, 200)).hex(),
                "u": "é✓",
            },
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
        for i in range(count)
    ]


async def json_writer(cycle: Cycle, stream: JsonStream, rng: random.Random) -> None:
    batch_index = len(stream.verified) + sum(len(b) for b in stream.acked)  # labels only
    for _ in range(MAX_REQUESTS):
        batch = json_batch(batch_index, rng)
        stream.pending = batch
        body = b"[" + b", ".join(batch) + b"]\n"  # whitespace the server trims
        try:
            response = await send(
                cycle.http, "POST", cycle.server.url(stream.name), body, {"Content-Type": JSON_TYPE}
            )
        except httpx.TransportError:
            return
        if response.status_code != 204:
            cycle.fail(stream.name, response)
            return
        stream.acked.append(batch)
        stream.pending = None
        batch_index += len(batch)


async def closer(cycle: Cycle, world: World, rng: random.Random) -> None:
    """Per stream: PUT, append 1-3 records, close; the next stream; and so on."""
    for k in range(CLOSER_STREAMS):
        entry = ClosedStream(ByteStream(f"closed-{cycle.index}-{k}"), cycle=cycle.index)
        world.closed.append(entry)
        url = cycle.server.url(entry.data.name)
        try:
            response = await send(cycle.http, "PUT", url, headers={"Content-Type": OCTET})
            if response.status_code != 201:
                cycle.fail("closer", response)
                return
            entry.created = "acked"
            for j in range(rng.randint(1, 3)):
                await trio.sleep(rng.uniform(0, CLOSER_PAUSE))
                record = make_record("c", j, rng.randint(*SMALL_APPEND), rng)
                entry.data.begin("c", j, record)
                response = await send(cycle.http, "POST", url, record, {"Content-Type": OCTET})
                if response.status_code != 204:
                    cycle.fail("closer", response)
                    return
                entry.data.ack("c", j)
            await trio.sleep(rng.uniform(0, CLOSER_PAUSE))
            entry.close = "pending"
            response = await send(cycle.http, "POST", url, headers={"Stream-Closed": "true"})
            if response.status_code != 204 or response.headers.get("Stream-Closed") != "true":
                cycle.fail("closer close", response)
                return
            entry.close = "acked"
        except httpx.TransportError:
            return


async def killer(cycle: Cycle, delay: float, wait_for_big: bool) -> None:
    if wait_for_big:
        with trio.move_on_after(5):
            await cycle.big_started.wait()
    await trio.sleep(delay)
    code = await cycle.server.kill()
    if code != -9:
        cycle.failures.append(f"server exited with {code} before the kill")


# -- verification after a restart ---------------------------------------------------


async def _gather(calls: Iterable[Callable[[], Awaitable[None]]]) -> None:
    limiter = trio.CapacityLimiter(VERIFY_CONCURRENCY)

    async def run(call: Callable[[], Awaitable[None]]) -> None:
        async with limiter:
            await call()

    async with trio.open_nursery() as nursery:
        for call in calls:
            nursery.start_soon(run, call)


async def check_byte_stream(
    http: httpx.AsyncClient, server: Server, stream: ByteStream, problems: list[str]
) -> dict[str, tuple[int, bool]]:
    """Check one stream and adopt what it holds; returns its pending records' fate."""
    url = server.url(stream.name)
    read = await read_all(http, url)
    if read.status != 200:
        problems.append(f"{stream.name}: GET answered {read.status}")
        return {}
    content = b"".join(read.pages)
    found_problems, found = stream.check(content)
    problems.extend(found_problems)
    if not found_problems:
        grew = len(content) > len(stream.verified)
        resumed = await check_offsets(
            http, url, stream.name, read, stream.verified_offset, grew, problems
        )
        if resumed is not None and b"".join(resumed) != content[len(stream.verified) :]:
            problems.append(
                f"{stream.name}: resuming at the offset saved before the kill skips or repeats data"
            )
    stream.verified_offset = read.next_offset
    return stream.settle(content, found)


async def check_json_stream(
    http: httpx.AsyncClient, server: Server, stream: JsonStream, problems: list[str]
) -> bool | None:
    """Check and adopt; returns whether the unanswered batch (if any) is there."""
    read = await read_all(http, server.url(stream.name))
    if read.status != 200:
        problems.append(f"{stream.name}: GET answered {read.status}")
        return None
    messages: list[bytes] = []
    for page in read.pages:
        try:
            texts = [
                json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
                for obj in json.loads(page)
            ]
        except ValueError:
            problems.append(f"{stream.name}: a read page is not a JSON array: {page[:120]!r}")
            return None
        if page != b"[" + b",".join(texts) + b"]":
            problems.append(
                f"{stream.name}: a read page is not the stored messages verbatim: {page[:120]!r}"
            )
        messages.extend(texts)
    found_problems = stream.check(messages)
    problems.extend(found_problems)
    if not found_problems:
        url = server.url(stream.name)
        grew = len(messages) > len(stream.verified)
        resumed = await check_offsets(
            http, url, stream.name, read, stream.verified_offset, grew, problems
        )
        if resumed is not None:
            again = [obj for page in resumed for obj in json.loads(page)]
            fresh = [json.loads(text) for text in messages[len(stream.verified) :]]
            if again != fresh:
                problems.append(
                    f"{stream.name}: resuming at the offset saved before the kill "
                    "skips or repeats messages"
                )
    stream.verified_offset = read.next_offset
    return stream.settle(messages)


async def check_closed_stream(
    http: httpx.AsyncClient, server: Server, world: World, entry: ClosedStream, problems: list[str]
) -> None:
    name = entry.data.name
    head = await http.head(server.url(name))
    if head.status_code == 404:
        if entry.created in ("acked", "present"):
            problems.append(f"{name}: created (201) but now 404")
        world.note("unanswered PUT", False if entry.created == "pending" else None)
        entry.created = "absent"
        return
    if head.status_code != 200:
        problems.append(f"{name}: HEAD answered {head.status_code}")
        return
    if entry.created == "absent":
        problems.append(f"{name}: absent after an earlier restart, present now")
    elif entry.created == "pending":
        world.note("unanswered PUT", True)
        entry.created = "present"
    is_closed = head.headers.get("Stream-Closed") == "true"
    if entry.close in ("acked", "closed") and not is_closed:
        problems.append(
            f"{name}: close was acknowledged (or seen) but HEAD has no Stream-Closed: true"
        )
    elif entry.close in ("none", "open") and is_closed:
        problems.append(
            f"{name}: closed though no close was {'sent' if entry.close == 'none' else 'kept'}"
        )
    elif entry.close == "pending":
        world.note("unanswered close", is_closed)
        entry.close = "closed" if is_closed else "open"
    elif entry.close == "acked":
        entry.close = "closed"
    read = await read_all(http, server.url(name))
    if read.status != 200:
        problems.append(f"{name}: HEAD 200 but GET {read.status}")
        return
    if read.closed != is_closed:
        problems.append(f"{name}: HEAD closed={is_closed} but the last GET closed={read.closed}")
    if read.next_offset != head.headers.get("Stream-Next-Offset"):
        problems.append(
            f"{name}: HEAD next offset {head.headers.get('Stream-Next-Offset')}, "
            f"but reading ended at {read.next_offset}"
        )
    content = b"".join(read.pages)
    found_problems, found = entry.data.check(content)
    problems.extend(found_problems)
    for _, present in entry.data.settle(content, found).values():
        world.note("unanswered closer append", present)


async def probe_closed(
    http: httpx.AsyncClient, server: Server, world: World, entry: ClosedStream, problems: list[str]
) -> None:
    """An append to a closed stream must get 409 and leave no trace."""
    world.probes += 1
    entry.probed = True
    record = make_record("probe", world.probes, 16, random.Random(world.probes))
    response = await http.post(
        server.url(entry.data.name), content=record, headers={"Content-Type": OCTET}
    )
    if response.status_code != 409 or response.headers.get("Stream-Closed") != "true":
        problems.append(
            f"{entry.data.name}: append after an acknowledged close got {response.status_code} "
            f"(Stream-Closed: {response.headers.get('Stream-Closed')}), expected 409 closed"
        )


async def retry_producer(
    http: httpx.AsyncClient, server: Server, world: World, producer: Producer, problems: list[str]
) -> None:
    """Re-send the unanswered (id, epoch, seq): 200 if it was absent, 204 if present."""
    assert producer.retry is not None
    seq, body, present = producer.retry
    expected = 204 if present else 200
    try:
        response = await http.post(
            server.url(producer.stream.name), content=body, headers=producer.headers(seq)
        )
    except httpx.TransportError as exc:
        problems.append(f"{producer.producer_id}: retry of seq {seq} failed: {exc!r}")
        return
    world.stats[f"producer retry {response.status_code}"] += 1
    if response.status_code != expected:
        problems.append(
            f"{producer.producer_id}: retry of unacknowledged (epoch {producer.epoch}, seq {seq}), "
            f"{'present' if present else 'absent'} after restart, got {response.status_code} "
            f"{response.text[:200]!r}; expected {expected}"
        )
        return
    if response.headers.get("Producer-Seq") != str(seq):
        problems.append(
            f"{producer.producer_id}: retry of seq {seq} echoed Producer-Seq "
            f"{response.headers.get('Producer-Seq')}"
        )
    if not present:
        producer.stream.adopt(producer.tag, seq, body)
    producer.retry = None
    producer.last_acked = (seq, body)
    producer.next_seq = seq + 1


async def resend_last_acked(
    http: httpx.AsyncClient, server: Server, producer: Producer, problems: list[str]
) -> None:
    """A duplicate of an acknowledged append after a restart is a 204 no-op."""
    if producer.last_acked is None:
        return
    seq, body = producer.last_acked
    response = await http.post(
        server.url(producer.stream.name), content=body, headers=producer.headers(seq)
    )
    if response.status_code != 204:
        problems.append(
            f"{producer.producer_id}: duplicate of acknowledged seq {seq} got "
            f"{response.status_code} {response.text[:200]!r}; expected 204"
        )


async def verify(
    server: Server, world: World, rng: random.Random, *, label: str, big_unanswered: bool = False
) -> None:
    """Every check, after a restart; fails the test with the seed on any problem."""
    problems: list[str] = []
    with trio.fail_after(VERIFY_TIMEOUT):
        async with client() as http:
            fates: dict[str, dict[str, tuple[int, bool]]] = {}

            async def bytes_check(stream: ByteStream) -> None:
                fates[stream.name] = await check_byte_stream(http, server, stream, problems)

            async def json_check(stream: JsonStream) -> None:
                world.note(
                    "unanswered JSON batch", await check_json_stream(http, server, stream, problems)
                )

            await _gather(
                [
                    *(lambda s=s: bytes_check(s) for s in world.byte_streams()),
                    *(lambda s=s: json_check(s) for s in world.jsons),
                    *(
                        lambda e=e: check_closed_stream(http, server, world, e, problems)
                        for e in world.closed
                    ),
                ]
            )
            for stream in world.plains:
                for tag, (_, present) in fates.get(stream.name, {}).items():
                    big = big_unanswered and tag == "w0"
                    world.note("unanswered big append" if big else "unanswered append", present)
            retrying = []
            for producer in world.producers:
                fate = fates.get(producer.stream.name, {}).get(producer.tag)
                if producer.in_flight is not None and fate is not None:
                    seq, body = producer.in_flight
                    assert fate[0] == seq
                    producer.retry = (seq, body, fate[1])
                    world.note("unanswered producer append", fate[1])
                    producer.in_flight = None
                    retrying.append(producer)
            # Duplicates of acknowledged appends first, then the unanswered ones: all at once.
            await _gather(
                [lambda p=p: resend_last_acked(http, server, p, problems) for p in world.producers]
            )
            await _gather(
                [lambda p=p: retry_producer(http, server, world, p, problems) for p in retrying]
            )
            await _gather(
                [
                    lambda s=s: check_byte_stream(http, server, s, problems)
                    for s in {id(p.stream): p.stream for p in world.producers}.values()
                ]
            )
            closed = [e for e in world.closed if e.close == "closed"]
            probes = [e for e in closed if not e.probed]
            older = [e for e in closed if e.probed]
            probes += rng.sample(older, min(PROBES_PER_RESTART, len(older)))
            await _gather(
                [lambda e=e: probe_closed(http, server, world, e, problems) for e in probes]
            )
    problems += server.errors_logged()
    assert not problems, (
        f"crash seed {world.seed} ({SEED_ENV}={world.seed} to replay), {label}:\n  "
        + "\n  ".join(problems[:40])
    )


async def create_streams(server: Server, world: World) -> None:
    async with client() as http:
        for stream in world.byte_streams():
            response = await http.put(server.url(stream.name), headers={"Content-Type": OCTET})
            assert response.status_code == 201, response.text
        for json_stream in world.jsons:
            response = await http.put(
                server.url(json_stream.name), headers={"Content-Type": JSON_TYPE}
            )
            assert response.status_code == 201, response.text


async def run_cycles(
    server: Server,
    world: World,
    key: str,
    cycles: int,
    writers: Callable[[Cycle, trio.Nursery, random.Random], bool],
    kill_delay: tuple[float, float],
) -> list[float]:
    """Write, kill, restart, verify, `cycles` times. Returns each kill's delay.

    Each cycle's randomness comes from its own seed (`key` and the cycle
    number), so cycle N of a replay gets the same payloads and kill delay.
    """
    delays: list[float] = []
    for index in range(cycles):
        rng = random.Random(f"{key}:cycle{index}")
        failures: list[str] = []
        with trio.fail_after(WRITE_PHASE_TIMEOUT):
            async with client() as http, trio.open_nursery() as nursery:
                cycle = Cycle(index, http, server, failures)
                big = writers(cycle, nursery, random.Random(rng.getrandbits(64)))
                delay = rng.uniform(*(BIG_KILL_DELAY if big else kill_delay))
                delays.append(delay)
                nursery.start_soon(killer, cycle, delay, big)
        if cycle.big_answered_after is not None:
            world.stats["big append answered before the kill"] += 1
        if growths := server.log_count("LMDB map full"):
            world.stats["LMDB map growths"] += growths
        failures += server.errors_logged()
        assert not failures, (
            f"crash seed {world.seed} ({SEED_ENV}={world.seed} to replay), "
            f"cycle {index} writes:\n  " + "\n  ".join(failures[:40])
        )
        await server.start()
        aim = ", aimed at a big append" if big else ""
        label = f"after kill {index + 1} of {cycles} (delay {delay:.3f}s{aim})"
        probe_rng = random.Random(f"{key}:probes{index}")
        await verify(server, world, probe_rng, label=label, big_unanswered=cycle.big_unanswered)
    return delays


# -- the tests ----------------------------------------------------------------------


async def test_sigkill_during_concurrent_writers(tmp_path: Path) -> None:
    """Twenty SIGKILLs under plain, producer, JSON-batch and closing writers."""
    await _concurrent_writers(tmp_path, CYCLES)


async def test_sigkill_of_a_two_worker_server_during_concurrent_writers(tmp_path: Path) -> None:
    """The same writers against two workers; each kill takes the whole server (its session)."""
    await _concurrent_writers(tmp_path, WORKER_CYCLES, "--workers", "2")


async def _concurrent_writers(tmp_path: Path, cycles: int, *args: str) -> None:
    seed = master_seed()
    print(f"crash seed: {seed}")
    world = World(seed)
    world.plains = [ByteStream("plain-0"), ByteStream("plain-1")]
    world.producers = [
        Producer(f"crash-producer-{k}", f"p{k}", ByteStream(f"producer-{k}")) for k in range(2)
    ]
    world.jsons = [JsonStream("json-0")]
    settings = tmp_path / "ds_trio.toml"
    settings.write_text(f'lmdb_map_size = "{SMALL_MAP}"\n')
    server = Server(tmp_path / "data", seed, "--config", str(settings), *args)
    big_cycles = 0

    def writers(cycle: Cycle, nursery: trio.Nursery, wrng: random.Random) -> bool:
        nonlocal big_cycles
        big = wrng.random() < BIG_CYCLE_CHANCE
        big_cycles += big
        for k, stream in enumerate(world.plains):
            big_at = wrng.randint(0, 6) if big and k == 0 else None
            nursery.start_soon(
                plain_writer, cycle, stream, f"w{k}", random.Random(wrng.getrandbits(64)), big_at
            )
        for producer in world.producers:
            nursery.start_soon(
                producer_writer, cycle, producer, random.Random(wrng.getrandbits(64))
            )
        for json_stream in world.jsons:
            nursery.start_soon(json_writer, cycle, json_stream, random.Random(wrng.getrandbits(64)))
        nursery.start_soon(closer, cycle, world, random.Random(wrng.getrandbits(64)))
        return big

    try:
        await server.start()
        await create_streams(server, world)
        delays = await run_cycles(server, world, f"{seed}:writers", cycles, writers, KILL_DELAY)
        # Finally a clean stop and one more restart: nothing may change across it.
        assert await server.stop() == 0, f"crash seed {seed}: graceful stop failed"
        await server.start()
        await verify(server, world, random.Random(seed), label="after a graceful stop")
        assert await server.stop() == 0, f"crash seed {seed}: graceful stop failed"
    finally:
        server.cleanup()
    acked = {s.name: len(s.seen) for s in world.byte_streams()}
    closes = sum(e.close == "closed" for e in world.closed)
    print(
        f"crash seed {seed}: {cycles} kills ({big_cycles} aimed at big appends), delays "
        f"{min(delays):.3f}-{max(delays):.3f}s; records kept {acked}; "
        f"json messages {len(world.jsons[0].verified)}; "
        f"closed streams {closes}/{len(world.closed)}; "
        f"409 probes {world.probes}; events: {dict(sorted(world.stats.items()))}"
    )
    assert sum(acked.values()) > cycles, f"crash seed {seed}: the writers barely wrote"
    assert closes > 0, f"crash seed {seed}: no close ever survived"
    assert sum(n for k, n in world.stats.items() if k.startswith("unanswered")) >= cycles, (
        f"crash seed {seed}: the kills rarely caught a request in flight: {world.stats}"
    )


async def test_sigkill_during_producer_burst_on_one_stream(tmp_path: Path) -> None:
    """Several producers append concurrently to one stream; SIGKILL mid-burst."""
    seed = master_seed()
    print(f"crash seed: {seed}")
    world = World(seed)
    shared = ByteStream("burst")
    world.producers = [
        Producer(f"burst-producer-{k}", f"b{k}", shared) for k in range(BURST_PRODUCERS)
    ]
    server = Server(tmp_path / "data", seed)

    def writers(cycle: Cycle, nursery: trio.Nursery, wrng: random.Random) -> bool:
        if cycle.index % 2 == 1:  # every other cycle, every producer starts a new epoch
            for producer in world.producers:
                producer.new_epoch()
        for producer in world.producers:
            nursery.start_soon(
                producer_writer, cycle, producer, random.Random(wrng.getrandbits(64))
            )
        return False

    try:
        await server.start()
        await create_streams(server, world)
        await run_cycles(server, world, f"{seed}:burst", BURST_CYCLES, writers, BURST_KILL_DELAY)
    finally:
        server.cleanup()
    kept = len(shared.seen)
    print(
        f"crash seed {seed}: {BURST_CYCLES} kills; {kept} producer records kept on one stream; "
        f"events: {dict(sorted(world.stats.items()))}"
    )
    assert kept > BURST_CYCLES, f"crash seed {seed}: the producers barely wrote"


def _start_and_kill_when_created(data: Path, timeout: float) -> bool:
    """Start a server on `data` and SIGKILL it the moment `data/data.mdb` exists.

    Runs in a worker thread (it polls). Returns False if the file never appeared.
    """
    command = [sys.executable, "-m", "ds_trio", "dev", "--host", "127.0.0.1", "--port", "0"]
    process = subprocess.Popen(
        [*command, "--data-dir", str(data)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    path = data / "data.mdb"
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if path.exists():
                return True
            time.sleep(0.0002)
        return False
    finally:
        process.kill()
        process.wait()


async def test_sigkill_during_first_start_leaves_a_usable_data_dir(tmp_path: Path) -> None:
    """The data dir a crashed first start leaves behind must still open."""
    for attempt in range(FIRST_START_ATTEMPTS):
        data = tmp_path / f"data-{attempt}"
        with trio.fail_after(STARTUP_TIMEOUT + 5):
            created = await trio.to_thread.run_sync(
                _start_and_kill_when_created, data, STARTUP_TIMEOUT
            )
        assert created, "the first start never created data.mdb"
        server = Server(data, 0)
        try:
            await server.start()  # fails the test if the dir is refused
            async with client() as http:
                response = await http.put(
                    server.url("after-crash"), headers={"Content-Type": OCTET}
                )
                assert response.status_code == 201, response.text
            assert await server.stop() == 0
        finally:
            server.cleanup()


def test_checker_catches_tears_duplicates_and_losses() -> None:
    """The verifier itself: each kind of damage it exists to find is reported."""
    rng = random.Random(7)
    a0, a1, a2 = (make_record("a", i, 40, rng) for i in range(3))
    b0 = make_record("b", 0, 40, rng)

    def stream() -> ByteStream:
        model = ByteStream("s")
        for tag, index, record in (("a", 0, a0), ("b", 0, b0), ("a", 1, a1)):
            model.begin(tag, index, record)
            model.ack(tag, index)
        model.begin("a", 2, a2)  # unanswered
        return model

    assert stream().check(a0 + b0 + a1)[0] == []
    assert stream().check(a0 + b0 + a1 + a2)[0] == []
    damaged = {
        "torn": a0 + b0 + a1 + a2[:-5],
        "torn inside": a0 + b0[:20] + a1,
        "lost": a0 + a1,
        "duplicated": a0 + b0 + a1 + a1,
        "reordered": a1 + b0 + a0,
        "flipped": a0 + b0 + a1.replace(b":1:", b":2:", 1),
        "foreign": a0 + b0 + a1 + make_record("a", 3, 40, rng),
    }
    for what, content in damaged.items():
        assert stream().check(content)[0], what
    model = stream()
    model.settle(a0 + b0 + a1, model.check(a0 + b0 + a1)[1])
    assert model.check(a0 + b0 + a1 + a2)[0], "a lost record may not come back"
    assert model.check(a0 + b0)[0], "verified data may not vanish"

    batches = [json_batch(n, rng) for n in range(3)]
    json_model = JsonStream("j", acked=batches[:2], pending=batches[2])
    assert json_model.check([*batches[0], *batches[1]]) == []
    assert json_model.check([*batches[0], *batches[1], *batches[2]]) == []
    if len(batches[2]) > 1:
        assert "torn" in json_model.check([*batches[0], *batches[1], batches[2][0]])[0]
    assert json_model.check([*batches[0], *batches[0], *batches[1]])
    assert json_model.check(batches[1])
