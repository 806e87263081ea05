#!/usr/bin/env python3
"""Soak test: thousands of live readers, steady writers and abrupt disconnects.

Starts `python -m ds_trio serve` on 127.0.0.1 (port 0; in memory, or LMDB with
--data-dir) and, for --duration seconds, runs --readers live readers (long-poll
and SSE, spread over --streams JSON streams, each resuming from its last
offset and cursor as clients do), writers appending --append-rate messages/s
in all, and every --disconnect-interval seconds closes --disconnect-fraction
of the readers' connections in mid-wait (half with a TCP reset, half with a
bare FIN, never a finished HTTP exchange), then reconnects them.

Each message is `{"s": stream, "n": k}`, k counting up per stream, so every
reader checks that it saw each message of its stream once, in order, across
its reconnects. Server RSS and open files (summed over the process tree, from
/proc) and the task, live-reader and watcher gauges of /metrics (each worker's,
on its private port, with --workers) are sampled at the baseline (after a
warm-up, before the readers), once every reader has connected, every 2 s of
the load, at its end, and after everything has disconnected: then /metrics is
polled every 0.5 s for up to --settle-timeout seconds until no reader is live
and the tasks are back to the baseline.

PASS needs every append acknowledged; every reader to have seen every message
of its stream once and in order; no reader errors; no live readers or watchers
after; tasks after within --task-tolerance of the baseline; no ERROR lines in
the server's log; and RSS after at most the RSS with every reader connected
plus max(--rss-allowance-mib, --rss-allowance-fraction of the baseline). That
bound is not "baseline plus a little": holding N readers costs about 36 KiB
each, and neither CPython nor malloc gives that high-water mark back, so only
what the churn added on top of it counts against the allowance.

    scripts/soak                                   # 2,000 readers for 3 minutes
    scripts/soak --readers 200 --duration 20 --json soak.json

Exit status: 0 on PASS, 1 on FAIL, 2 if the soak could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import trio

MIB: Final = 1024 * 1024
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
HOST: Final = "127.0.0.1"
URL_LINE: Final = re.compile(r"streams at http://127\.0\.0\.1:(\d+)(/\S*?)/?(?:\s|$)")
WORKER_LINE: Final = re.compile(
    r"worker pid (\d+) also listens privately on http://127\.0\.0\.1:(\d+)"
)
JSON_TYPE: Final = "application/json"
SERVER_START_TIMEOUT: Final = 60.0
SERVER_STOP_TIMEOUT: Final = 30.0
REQUEST_TIMEOUT: Final = 15.0  # setup requests, appends and scrapes
RESPONSE_MARGIN: Final = 20.0  # beyond the server's own long-poll / SSE deadlines
CONNECT_TIMEOUT: Final = 60.0  # for every reader's first response
CATCH_UP_TIMEOUT: Final = 60.0  # for every reader to reach the last append
SETTLE_POLL: Final = 0.5  # seconds between /metrics scrapes while settling
SAMPLE_INTERVAL: Final = 2.0  # seconds between samples during the run
RECONNECT_JITTER: Final = 0.5  # most seconds a disconnected reader waits to reconnect
READER_BATCH: Final = 100  # readers started at a time while ramping up
MAX_EXAMPLES: Final = 20  # fault descriptions kept for the report


# --- HTTP/1.1 on raw trio sockets -------------------------------------------------------------


class ProtocolFault(Exception):
    """The server answered something the protocol does not allow here."""


@dataclass(frozen=True, slots=True)
class Head:
    """Status line and headers of a response (header names lower-cased)."""

    status: int
    headers: dict[str, str]

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()


class Connection:
    """One client connection: requests written by hand, responses parsed just enough."""

    __slots__ = ("_buffer", "_stream")

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    @classmethod
    async def open(cls, port: int) -> Connection:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            await sock.connect((HOST, port))
        except BaseException:
            sock.close()
            raise
        return cls(trio.SocketStream(sock))

    async def send(self, request: bytes) -> None:
        await self._stream.send_all(request)

    async def _fill(self) -> None:
        data = await self._stream.receive_some(65536)
        if not data:
            raise EOFError("the server closed the connection")
        self._buffer += data

    async def _read_until(self, marker: bytes) -> bytes:
        searched = 0
        while (end := self._buffer.find(marker, searched)) < 0:
            searched = max(0, len(self._buffer) - len(marker) + 1)
            await self._fill()
        found = bytes(self._buffer[:end])
        del self._buffer[: end + len(marker)]
        return found

    async def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            await self._fill()
        found = bytes(self._buffer[:size])
        del self._buffer[:size]
        return found

    async def read_head(self) -> Head:
        lines = (await self._read_until(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return Head(status, headers)

    async def read_chunk(self) -> bytes:
        """The next chunk of a chunked body; b"" for the last one (its trailers read too)."""
        size = int((await self._read_until(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            while await self._read_until(b"\r\n"):
                pass
            return b""
        data = await self._read_exactly(size)
        if await self._read_until(b"\r\n"):
            raise ProtocolFault("chunk longer than its size line says")
        return data

    async def read_body(self, head: Head) -> bytes:
        if head.chunked:
            chunks = []
            while chunk := await self.read_chunk():
                chunks.append(chunk)
            return b"".join(chunks)
        return await self._read_exactly(int(head.headers.get("content-length", "0")))

    def close(self, *, reset: bool = False) -> None:
        """Close at once; with `reset`, by a TCP RST instead of a FIN."""
        sock = self._stream.socket
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


def request_bytes(
    method: str,
    target: str,
    port: int,
    body: bytes = b"",
    content_type: str | None = None,
    *,
    last: bool = False,
) -> bytes:
    """A request; `last` asks the server to close the connection after answering it."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {HOST}:{port}"]
    if last:
        lines.append("Connection: close")
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def exchange(
    port: int, method: str, target: str, body: bytes = b"", content_type: str | None = None
) -> tuple[Head, bytes]:
    """One request on a connection of its own, which the server closes.

    A client that closes an idle keep-alive connection itself leaves Hypercorn
    holding the socket and two tasks until its keep-alive timeout; asking the
    server to close keeps the soak's own requests out of the task counts.
    """
    connection = await Connection.open(port)
    try:
        with trio.fail_after(REQUEST_TIMEOUT):
            request = request_bytes(method, target, port, body, content_type, last=True)
            await connection.send(request)
            head = await connection.read_head()
            return head, await connection.read_body(head)
    finally:
        connection.close()


def parse_sse(buffer: str) -> tuple[list[tuple[str, str]], str]:
    """The complete events in `buffer` as (event, data) pairs, and the incomplete rest."""
    *blocks, rest = buffer.split("\n\n")
    events = []
    for block in blocks:
        event, data = "message", []
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
        if data:
            events.append((event, "\n".join(data)))
    return events, rest


# --- server process and measurements ----------------------------------------------------------


class Server:
    """A `python -m ds_trio serve` child in a session of its own, its output drained."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.port = 0
        self.stream_root = ""
        self.worker_ports: dict[int, int] = {}  # pid -> its private port (with --workers)
        self.output: deque[str] = deque(maxlen=200)
        self.error_lines: list[str] = []
        self.started = trio.Event()

    async def drain(self) -> None:
        assert self.process.stdout is not None
        pending = b""
        while data := await self.process.stdout.receive_some(65536):
            *lines, pending = (pending + data).split(b"\n")
            for raw in lines:
                self._line(raw.decode("utf-8", errors="replace"))
        if pending:
            self._line(pending.decode("utf-8", errors="replace"))
        self.started.set()  # it ended: whoever waits for the URL finds none

    def _line(self, line: str) -> None:
        self.output.append(line)
        if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback"):
            self.error_lines.append(line)
        if match := WORKER_LINE.search(line):
            self.worker_ports[int(match.group(1))] = int(match.group(2))
        match = URL_LINE.search(line)
        if match and not self.port:
            self.port, self.stream_root = int(match.group(1)), match.group(2)
            self.started.set()

    def tail(self, lines: int = 30) -> str:
        return "\n".join(list(self.output)[-lines:])


@asynccontextmanager
async def running_server(options: argparse.Namespace) -> AsyncIterator[Server]:
    argv = [
        sys.executable, "-m", "ds_trio", "serve", "--host", HOST, "--port", "0",
        "--no-access-log", "--workers", str(options.workers),
        "--long-poll-timeout", f"{options.long_poll_timeout:g}s",
        "--sse-reconnect-interval", f"{options.sse_reconnect_interval:g}s",
    ]  # fmt: skip
    if options.data_dir is not None:
        argv += ["--data-dir", str(options.data_dir)]
    process = await trio.lowlevel.open_process(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its workers, if any, share its process group
    )
    server = Server(process)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.drain)
        try:
            with trio.move_on_after(SERVER_START_TIMEOUT):
                await server.started.wait()
            if not server.port:
                raise RuntimeError(f"ds_trio did not report its URL:\n{server.tail()}")
            if options.workers > 1 and len(server.worker_ports) < options.workers:
                raise RuntimeError(f"ds_trio did not report its workers:\n{server.tail()}")
            yield server
        finally:
            with trio.CancelScope(shield=True):
                await stop_server(process)


async def stop_server(process: trio.Process) -> None:
    """SIGTERM; SIGKILL to its process group if it has not exited in time."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(SERVER_STOP_TIMEOUT):
            await process.wait()
    if process.returncode is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await process.wait()


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and its descendants so far, from /proc (0 for one that ended)."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    pending.extend(int(child) for child in children.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def tree_usage(pid: int) -> tuple[int, int]:
    """VmRSS and open files of a process and its descendants (a supervisor's workers)."""
    rss, open_files, pending = 0, 0, [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) * 1024
                        break
            open_files += len(os.listdir(f"/proc/{current}/fd"))
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    pending.extend(int(child) for child in children.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # it ended meanwhile
    return rss, open_files


@dataclass(frozen=True, slots=True)
class Gauges:
    """What one /metrics scrape says: one process's view."""

    tasks: int
    live_readers: int
    watchers: int


def parse_gauges(text: str) -> Gauges:
    values: Counter[str] = Counter()
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in ("ds_trio_tasks", "ds_trio_live_readers", "ds_trio_watchers"):
            values[name] += int(float(line.rsplit(" ", 1)[1]))
    if "ds_trio_tasks" not in values:
        raise ProtocolFault("/metrics has no ds_trio_tasks gauge")
    return Gauges(
        values["ds_trio_tasks"], values["ds_trio_live_readers"], values["ds_trio_watchers"]
    )


@dataclass(frozen=True, slots=True)
class Sample:
    """The server at one moment; with workers, summed over them."""

    rss: int
    open_files: int
    tasks: int
    live_readers: int
    watchers: int


async def take_sample(server: Server) -> Sample:
    """RSS and open files of the tree, and /metrics of each worker (on its private port)."""
    ports = [
        port for pid, port in server.worker_ports.items() if os.path.exists(f"/proc/{pid}")
    ] or [server.port]
    scrapes = []
    for port in ports:
        head, body = await exchange(port, "GET", "/metrics")
        if head.status != 200:
            raise ProtocolFault(f"/metrics: HTTP {head.status}")
        scrapes.append(parse_gauges(body.decode()))
    return Sample(
        *tree_usage(server.process.pid),
        sum(scrape.tasks for scrape in scrapes),
        sum(scrape.live_readers for scrape in scrapes),
        sum(scrape.watchers for scrape in scrapes),
    )


# --- the load -----------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class Reader:
    """One live reader: its stream, mode and position, and what it has seen."""

    stream: int
    mode: str  # "long-poll" or "sse"
    offset: str = "-1"
    cursor: str | None = None
    next_message: int = 0  # the n it expects next
    delivered: int = 0
    connections: int = 0
    responses: int = 0
    waiting: bool = False  # a live request is out on its connection
    scope: trio.CancelScope | None = None
    reset_on_cancel: bool | None = None  # set by the disconnector: RST (True) or FIN (False)
    caught_up: bool = False


@dataclass(slots=True)
class Tally:
    """Everything the load counts."""

    appends: int = 0
    failed_appends: int = 0
    duplicates: int = 0
    gaps: int = 0  # messages skipped over
    misrouted: int = 0
    reader_errors: Counter[str] = field(default_factory=Counter)
    disconnects_reset: int = 0
    disconnects_fin: int = 0
    disconnect_rounds: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, what: str) -> None:
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(what)


class Load:
    """The readers, writers and disconnector against one server."""

    def __init__(self, options: argparse.Namespace, server: Server, run_id: str) -> None:
        self.options = options
        self.port = server.port
        self.paths = [f"{server.stream_root}/soak-{run_id}-{i}" for i in range(options.streams)]
        rng = random.Random(options.seed)
        self.rng = rng
        self.readers = [
            Reader(i % options.streams, "sse" if rng.random() < options.sse_share else "long-poll")
            for i in range(options.readers)
        ]
        self.acknowledged = [0] * options.streams  # appends acknowledged, per stream
        self.tally = Tally()
        self.connected = trio.Event()
        self.unconnected = len(self.readers)
        self.warm_up_appends = 0
        self.final: list[int] | None = None  # acknowledged appends once the writers stopped
        self.behind = 0
        self.all_caught_up = trio.Event()
        self.long_poll_timeout = options.long_poll_timeout + RESPONSE_MARGIN
        self.sse_timeout = options.sse_reconnect_interval + RESPONSE_MARGIN

    # setup

    async def create_streams(self) -> None:
        for path in self.paths:
            head, body = await exchange(self.port, "PUT", path, content_type=JSON_TYPE)
            if head.status != 201:
                raise ProtocolFault(f"PUT {path}: HTTP {head.status} {body[:200]!r}")

    async def warm_up(self) -> None:
        """One append per stream, a long-poll and an SSE read cut off mid-response."""
        connection = await Connection.open(self.port)
        try:
            for stream in range(len(self.paths)):
                await self.append(connection, stream, last=stream == len(self.paths) - 1)
        finally:
            connection.close()
        self.warm_up_appends = self.tally.appends
        path = self.paths[0]
        head, _ = await exchange(self.port, "GET", f"{path}?offset=-1&live=long-poll")
        if head.status != 200:
            raise ProtocolFault(f"warm-up long-poll: HTTP {head.status}")
        connection = await Connection.open(self.port)
        try:
            with trio.fail_after(REQUEST_TIMEOUT):
                await connection.send(request_bytes("GET", f"{path}?offset=-1&live=sse", self.port))
                head = await connection.read_head()
                if head.status != 200:
                    raise ProtocolFault(f"warm-up SSE: HTTP {head.status}")
                await connection.read_chunk()
        finally:
            connection.close(reset=True)

    # writers

    async def append(self, connection: Connection, stream: int, *, last: bool = False) -> None:
        """Append the stream's next message; raises unless it is acknowledged."""
        body = json.dumps({"s": stream, "n": self.acknowledged[stream]}).encode()
        request = request_bytes("POST", self.paths[stream], self.port, body, JSON_TYPE, last=last)
        with trio.fail_after(REQUEST_TIMEOUT):
            await connection.send(request)
            head = await connection.read_head()
            reply = await connection.read_body(head)
        if head.status not in (200, 204):
            raise ProtocolFault(f"append: HTTP {head.status} {reply[:200]!r}")
        self.acknowledged[stream] += 1
        self.tally.appends += 1

    async def run_writer(self, streams: list[int], rate: float, start: float, end: float) -> None:
        """Append to `streams` in turn, `rate` a second, from `start` until `end`.

        A stream has one writer, which waits for each acknowledgement, so its
        messages are stored in the order of their numbers.
        """
        connection: Connection | None = None
        interval = 1 / rate
        due = start
        turn = 0
        try:
            while due < end:
                await trio.sleep_until(due)
                stream = streams[turn % len(streams)]
                turn += 1
                try:
                    if connection is None:
                        connection = await Connection.open(self.port)
                    await self.append(connection, stream)
                except (OSError, EOFError, trio.BrokenResourceError, trio.TooSlowError) as error:
                    self.append_failed(stream, repr(error))
                    if connection is not None:
                        connection.close()
                    connection = None
                except (ProtocolFault, ValueError) as error:
                    self.append_failed(stream, str(error))
                due = max(due + interval, trio.current_time())
        finally:
            if connection is not None:
                connection.close()

    def append_failed(self, stream: int, why: str) -> None:
        self.tally.failed_appends += 1
        self.tally.note(f"append to stream {stream} failed: {why}")

    # readers

    async def run_reader(self, reader: Reader) -> None:
        """Read live until cancelled from outside; reconnect after each disconnect."""
        while True:
            connection: Connection | None = None
            with trio.CancelScope() as scope:
                reader.scope = scope
                try:
                    connection = await Connection.open(self.port)
                    reader.connections += 1
                    if reader.mode == "sse":
                        await self._sse_session(reader, connection)
                    else:
                        await self._long_poll_session(reader, connection)
                except (OSError, EOFError, trio.BrokenResourceError) as error:
                    self._reader_error(reader, f"connection: {type(error).__name__}", error)
                except trio.TooSlowError as error:
                    self._reader_error(reader, "no answer in time", error)
                except (ProtocolFault, ValueError, KeyError, TypeError) as error:
                    self._reader_error(reader, "protocol", error)
                finally:
                    reset = bool(reader.reset_on_cancel)
                    reader.scope, reader.waiting, reader.reset_on_cancel = None, False, None
                    if connection is not None:
                        connection.close(reset=reset)
            if scope.cancelled_caught:
                if reset:
                    self.tally.disconnects_reset += 1
                else:
                    self.tally.disconnects_fin += 1
                await trio.sleep(self.rng.uniform(0, RECONNECT_JITTER))
            else:
                await trio.sleep(1)  # after an error: don't hammer the server

    def _reader_error(self, reader: Reader, kind: str, error: BaseException) -> None:
        self.tally.reader_errors[kind] += 1
        self.tally.note(f"{reader.mode} reader of stream {reader.stream}: {kind}: {error!r}")

    def _get(self, reader: Reader) -> bytes:
        query = f"offset={reader.offset}&live={reader.mode}"
        if reader.cursor is not None:
            query += f"&cursor={reader.cursor}"
        return request_bytes("GET", f"{self.paths[reader.stream]}?{query}", self.port)

    async def _long_poll_session(self, reader: Reader, connection: Connection) -> None:
        while True:
            await connection.send(self._get(reader))
            reader.waiting = True
            with trio.fail_after(self.long_poll_timeout):
                head = await connection.read_head()
                reader.waiting = False
                body = await connection.read_body(head)
            if head.status == 200:
                messages = json.loads(body)
            elif head.status == 204:
                messages = []
            else:
                raise ProtocolFault(f"long-poll: HTTP {head.status} {body[:200]!r}")
            offset = head.headers.get("stream-next-offset")
            if not offset:
                raise ProtocolFault(f"long-poll: HTTP {head.status} without Stream-Next-Offset")
            self._deliver(reader, messages)  # no checkpoint from here on: delivery and the
            reader.offset = offset  # offset it resumes from change together
            reader.cursor = head.headers.get("stream-cursor", reader.cursor)
            self._responded(reader)
            if head.headers.get("connection", "").lower() == "close":
                return

    async def _sse_session(self, reader: Reader, connection: Connection) -> None:
        while True:
            await connection.send(self._get(reader))
            reader.waiting = True
            with trio.fail_after(self.sse_timeout):  # the server ends each response in time
                head = await connection.read_head()
                if head.status != 200 or not head.chunked:
                    body = await connection.read_body(head)
                    raise ProtocolFault(f"SSE: HTTP {head.status} {body[:200]!r}")
                pending: list[Any] = []  # data events wait for the control event that follows
                text = ""
                while chunk := await connection.read_chunk():
                    events, text = parse_sse(text + chunk.decode())
                    for event, data in events:
                        if event == "data":
                            pending.extend(json.loads(data))
                        elif event == "control":
                            control = json.loads(data)
                            self._deliver(reader, pending)
                            reader.offset = control["streamNextOffset"]
                            reader.cursor = control.get("streamCursor", reader.cursor)
                            pending = []
                            self._responded(reader)
            reader.waiting = False
            if head.headers.get("connection", "").lower() == "close":
                return

    def _responded(self, reader: Reader) -> None:
        reader.responses += 1
        if reader.responses == 1:
            self.unconnected -= 1
            if self.unconnected == 0:
                self.connected.set()

    def _deliver(self, reader: Reader, messages: Iterable[Any]) -> None:
        tally = self.tally
        for message in messages:
            stream, number = message["s"], message["n"]
            reader.delivered += 1
            if stream != reader.stream:
                tally.misrouted += 1
                tally.note(f"reader of stream {reader.stream} got a message of stream {stream}")
            elif number < reader.next_message:
                tally.duplicates += 1
                tally.note(f"reader of stream {stream} got {number} again")
            else:
                if number > reader.next_message:
                    tally.gaps += number - reader.next_message
                    tally.note(f"reader of stream {stream} missed {reader.next_message}..{number}")
                reader.next_message = number + 1
        if self.final is not None and not reader.caught_up:
            self._check_caught_up(reader)

    def _check_caught_up(self, reader: Reader) -> None:
        assert self.final is not None
        if reader.next_message >= self.final[reader.stream]:
            reader.caught_up = True
            self.behind -= 1
            if self.behind == 0:
                self.all_caught_up.set()

    def writers_stopped(self) -> None:
        """Fix the final counts; `all_caught_up` is set once every reader has reached them."""
        self.final = list(self.acknowledged)
        self.behind = len(self.readers)
        for reader in self.readers:
            self._check_caught_up(reader)
        if self.behind == 0:
            self.all_caught_up.set()

    # disconnects

    async def run_disconnector(self) -> None:
        """Every interval, cut a fraction of the waiting readers' connections."""
        options = self.options
        count = round(options.disconnect_fraction * len(self.readers))
        while True:
            await trio.sleep(options.disconnect_interval)
            waiting = [r for r in self.readers if r.waiting and r.scope is not None]
            for reader in self.rng.sample(waiting, min(count, len(waiting))):
                assert reader.scope is not None
                reader.reset_on_cancel = self.rng.random() < 0.5
                reader.scope.cancel()
            self.tally.disconnect_rounds += 1


# --- the run ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Samples:
    """Samples of the whole run: the moments that matter, and the highest seen."""

    baseline: Sample | None = None
    connected: Sample | None = None
    end_of_load: Sample | None = None
    after: Sample | None = None
    peak_rss: int = 0
    peak_open_files: int = 0
    peak_tasks: int = 0
    peak_live_readers: int = 0
    settle_seconds: float | None = None
    started: float = field(default_factory=trio.current_time)
    timeline: list[tuple[float, float, int, int, int]] = field(default_factory=list)

    def log(self, sample: Sample) -> Sample:
        """Add `sample` to the timeline."""
        seconds = round(trio.current_time() - self.started, 1)
        row = (seconds, round(sample.rss / MIB, 1), sample.open_files, sample.tasks)
        self.timeline.append((*row, sample.live_readers))
        return sample

    def saw(self, sample: Sample) -> Sample:
        """Add `sample` to the timeline and the peaks."""
        self.log(sample)
        self.peak_rss = max(self.peak_rss, sample.rss)
        self.peak_open_files = max(self.peak_open_files, sample.open_files)
        self.peak_tasks = max(self.peak_tasks, sample.tasks)
        self.peak_live_readers = max(self.peak_live_readers, sample.live_readers)
        return sample


async def sample_periodically(server: Server, samples: Samples) -> None:
    while True:
        await trio.sleep(SAMPLE_INTERVAL)
        samples.saw(await take_sample(server))


async def settle(server: Server, options: argparse.Namespace, samples: Samples) -> Sample:
    """Scrape every SETTLE_POLL s until no live readers and tasks are back, or time is up."""
    assert samples.baseline is not None
    started = trio.current_time()
    with trio.move_on_after(options.settle_timeout):
        while True:
            sample = await take_sample(server)
            quiet = sample.live_readers == 0 and sample.watchers == 0
            if quiet and sample.tasks <= samples.baseline.tasks:
                samples.settle_seconds = round(trio.current_time() - started, 1)
                return sample
            await trio.sleep(SETTLE_POLL)
    return await take_sample(server)  # judged with the tolerance


async def quiet_baseline(server: Server, options: argparse.Namespace) -> Sample:
    """A sample once the warm-up's readers are gone and the task count holds still."""
    previous = None
    with trio.move_on_after(options.settle_timeout):
        while True:
            sample = await take_sample(server)
            quiet = sample.live_readers == 0 and sample.watchers == 0
            if quiet and previous is not None and sample.tasks == previous.tasks:
                return sample
            previous = sample if quiet else None
            await trio.sleep(SETTLE_POLL)
    raise RuntimeError("the server did not settle after the warm-up")


async def soak(options: argparse.Namespace) -> dict[str, Any]:
    """Run the soak; returns the summary."""
    run_id = time.strftime("%Y%m%d%H%M%S")
    samples = Samples()
    async with running_server(options) as server:
        load = Load(options, server, run_id)
        await load.create_streams()
        await load.warm_up()
        samples.baseline = samples.saw(await quiet_baseline(server, options))
        started = time.monotonic()
        connected_in = None
        async with trio.open_nursery() as readers:
            for batch in range(0, len(load.readers), READER_BATCH):
                for reader in load.readers[batch : batch + READER_BATCH]:
                    readers.start_soon(load.run_reader, reader)
                await trio.sleep(0.05)
            with trio.move_on_after(CONNECT_TIMEOUT):
                await load.connected.wait()
                connected_in = round(time.monotonic() - started, 1)
            samples.connected = samples.saw(await take_sample(server))
            load_started = trio.current_time()
            cpu_before = cpu_seconds(server.process.pid), own_cpu_seconds()
            async with trio.open_nursery() as background:
                background.start_soon(sample_periodically, server, samples)
                background.start_soon(load.run_disconnector)
                async with trio.open_nursery() as writers:
                    rate = options.append_rate / options.writers
                    end = load_started + options.duration
                    for w in range(options.writers):
                        streams = list(range(w, options.streams, options.writers))
                        start = load_started + w / options.append_rate  # spread out
                        writers.start_soon(load.run_writer, streams, rate, start, end)
                background.cancel_scope.cancel()
            load_seconds = trio.current_time() - load_started
            cpu = {
                "server_pct": round(
                    100 * (cpu_seconds(server.process.pid) - cpu_before[0]) / load_seconds
                ),
                "soak_pct": round(100 * (own_cpu_seconds() - cpu_before[1]) / load_seconds),
            }
            load.writers_stopped()
            caught_up_in = None
            catch_up_started = trio.current_time()
            with trio.move_on_after(CATCH_UP_TIMEOUT):
                await load.all_caught_up.wait()
                caught_up_in = round(trio.current_time() - catch_up_started, 1)
            samples.end_of_load = samples.saw(await take_sample(server))
            readers.cancel_scope.cancel()  # each reader closes its connection as it ends
        samples.after = samples.log(await settle(server, options, samples))
        server_errors = list(server.error_lines)
        log_tail = server.tail()
    return summarize(
        options,
        load,
        samples,
        server_exit=server.process.returncode,
        server_errors=server_errors,
        log_tail=log_tail,
        timings={
            "connected_s": connected_in,
            "load_s": round(load_seconds, 1),
            **cpu,
            "caught_up_s": caught_up_in,
            "settle_s": samples.settle_seconds,
        },
    )


def rss_limit(options: argparse.Namespace, baseline: int, connected: int) -> int:
    """The most RSS the server may keep once everything has disconnected.

    The baseline, plus what holding every reader at once cost (measured when
    they had all connected: CPython and malloc keep that high-water mark, so
    it is not expected back), plus the allowance for the churn that followed:
    max(--rss-allowance-mib, --rss-allowance-fraction of the baseline).
    """
    allowance = max(options.rss_allowance_mib * MIB, options.rss_allowance_fraction * baseline)
    return max(baseline, connected) + round(allowance)


def summarize(
    options: argparse.Namespace,
    load: Load,
    samples: Samples,
    *,
    server_exit: int | None,
    server_errors: list[str],
    log_tail: str,
    timings: dict[str, float | None],
) -> dict[str, Any]:
    tally = load.tally
    baseline, connected, after = samples.baseline, samples.connected, samples.after
    loaded = samples.end_of_load
    assert baseline is not None and connected is not None and after is not None
    assert loaded is not None
    limit = rss_limit(options, baseline.rss, connected.rss)
    behind = sum(1 for reader in load.readers if not reader.caught_up)
    checks = {
        "every append acknowledged": tally.failed_appends == 0 and tally.appends > 0,
        "every reader saw every message once, in order": (
            tally.duplicates == 0 and tally.gaps == 0 and tally.misrouted == 0 and behind == 0
        ),
        "no reader errors": not tally.reader_errors,
        "every reader connected": timings["connected_s"] is not None,
        "no live readers after": after.live_readers == 0 and after.watchers == 0,
        f"tasks after within {options.task_tolerance} of baseline": (
            abs(after.tasks - baseline.tasks) <= options.task_tolerance
        ),
        f"RSS after <= connected + {(limit - connected.rss) / MIB:.1f} MiB": (after.rss <= limit),
        "server logged no errors": not server_errors,
    }
    modes = Counter(reader.mode for reader in load.readers)
    return {
        "result": "PASS" if all(checks.values()) else "FAIL",
        "checks": checks,
        "settings": {
            "readers": len(load.readers),
            "long_poll_readers": modes["long-poll"],
            "sse_readers": modes["sse"],
            "streams": options.streams,
            "writers": options.writers,
            "append_rate": options.append_rate,
            "duration_s": options.duration,
            "disconnect_interval_s": options.disconnect_interval,
            "disconnect_fraction": options.disconnect_fraction,
            "long_poll_timeout_s": options.long_poll_timeout,
            "sse_reconnect_interval_s": options.sse_reconnect_interval,
            "store": "memory" if options.data_dir is None else f"lmdb ({options.data_dir})",
            "workers": options.workers,
            "seed": options.seed,
        },
        "timings": timings,
        "appends": tally.appends,
        "warm_up_appends": load.warm_up_appends,
        "append_rate_achieved": round(
            (tally.appends - load.warm_up_appends) / max(timings["load_s"] or 0, 1e-9), 1
        ),
        "failed_appends": tally.failed_appends,
        "messages_delivered": sum(reader.delivered for reader in load.readers),
        "messages_expected": sum(load.acknowledged[reader.stream] for reader in load.readers),
        "duplicates": tally.duplicates,
        "gaps": tally.gaps,
        "misrouted": tally.misrouted,
        "readers_behind": behind,
        "reader_responses": sum(reader.responses for reader in load.readers),
        "reader_connections": sum(reader.connections for reader in load.readers),
        "reader_errors": dict(tally.reader_errors),
        "disconnect_rounds": tally.disconnect_rounds,
        "disconnects": tally.disconnects_reset + tally.disconnects_fin,
        "disconnects_reset": tally.disconnects_reset,
        "disconnects_fin": tally.disconnects_fin,
        "rss_mib": {
            "baseline": round(baseline.rss / MIB, 1),
            "connected": round(connected.rss / MIB, 1),
            "end_of_load": round(loaded.rss / MIB, 1),
            "peak": round(samples.peak_rss / MIB, 1),
            "after": round(after.rss / MIB, 1),
            "limit": round(limit / MIB, 1),
        },
        "open_files": {
            "baseline": baseline.open_files,
            "connected": connected.open_files,
            "end_of_load": loaded.open_files,
            "peak": samples.peak_open_files,
            "after": after.open_files,
        },
        "tasks": {
            "baseline": baseline.tasks,
            "connected": connected.tasks,
            "end_of_load": loaded.tasks,
            "peak": samples.peak_tasks,
            "after": after.tasks,
        },
        "live_readers": {
            "connected": connected.live_readers,
            "end_of_load": loaded.live_readers,
            "peak": samples.peak_live_readers,
            "after": after.live_readers,
        },
        "timeline": {
            "columns": ["seconds", "rss_mib", "open_files", "tasks", "live_readers"],
            "rows": samples.timeline,
        },
        "server_exit": server_exit,
        "server_errors": server_errors[:MAX_EXAMPLES],
        "examples": tally.examples,
        "server_log_tail": log_tail.splitlines() if not all(checks.values()) else [],
    }


def print_summary(summary: dict[str, Any]) -> None:
    settings, rss, tasks = summary["settings"], summary["rss_mib"], summary["tasks"]
    live, timings, files = summary["live_readers"], summary["timings"], summary["open_files"]
    rows = summary["timeline"]["rows"]
    shown = rows[:: max(1, len(rows) // 12)]
    if shown[-1] is not rows[-1]:
        shown.append(rows[-1])
    lines = [
        (
            f"readers      {settings['readers']} ({settings['long_poll_readers']} long-poll, "
            f"{settings['sse_readers']} SSE) over {settings['streams']} streams; "
            f"store {settings['store']}, {settings['workers']} worker(s)"
        ),
        (
            f"writers      {settings['writers']} at {settings['append_rate']:g} appends/s in all "
            f"({summary['append_rate_achieved']:g}/s achieved)"
        ),
        (
            f"duration     {timings['load_s']} s of load (readers connected in "
            f"{timings['connected_s']} s, caught up in {timings['caught_up_s']} s, "
            f"settled in {timings['settle_s']} s); CPU during the load: server "
            f"{timings['server_pct']}%, soak clients {timings['soak_pct']}%"
        ),
        (
            f"disconnects  {summary['disconnects']} in {summary['disconnect_rounds']} rounds "
            f"({summary['disconnects_reset']} RST, {summary['disconnects_fin']} FIN)"
        ),
        (
            f"appends      {summary['appends']} acknowledged ({summary['warm_up_appends']} in the "
            f"warm-up), {summary['failed_appends']} failed"
        ),
        (
            f"messages     {summary['messages_delivered']} delivered of "
            f"{summary['messages_expected']} expected; {summary['duplicates']} duplicates, "
            f"{summary['gaps']} missed, {summary['misrouted']} misrouted, "
            f"{summary['readers_behind']} readers behind"
        ),
        (
            f"responses    {summary['reader_responses']} live responses on "
            f"{summary['reader_connections']} connections; reader errors {summary['reader_errors']}"
        ),
        (
            f"RSS MiB      baseline {rss['baseline']}, connected {rss['connected']}, "
            f"end of load {rss['end_of_load']}, peak {rss['peak']}, after {rss['after']} "
            f"(limit {rss['limit']})"
        ),
        "  over time   " + ", ".join(f"{row[1]:g} at {row[0]:g} s" for row in shown),
        (
            f"tasks        baseline {tasks['baseline']}, connected {tasks['connected']}, "
            f"end of load {tasks['end_of_load']}, peak {tasks['peak']}, after {tasks['after']}"
        ),
        (
            f"open files   baseline {files['baseline']}, connected {files['connected']}, "
            f"end of load {files['end_of_load']}, peak {files['peak']}, after {files['after']}"
        ),
        (
            f"live readers connected {live['connected']}, end of load {live['end_of_load']}, "
            f"peak {live['peak']}, after {live['after']}"
        ),
        f"server       exit {summary['server_exit']}, {len(summary['server_errors'])} error lines",
    ]
    for name, ok in summary["checks"].items():
        lines.append(f"  {'ok  ' if ok else 'FAIL'} {name}")
    held, extra_tasks = files["after"] - files["baseline"], tasks["after"] - tasks["baseline"]
    if extra_tasks > 0 and held > 0:
        lines.append(
            f"  note: {extra_tasks} tasks and {held} open files more than at the baseline: "
            "Hypercorn keeps a connection its client closed while idle, with two tasks, "
            "until its keep-alive timeout (75 s by default)"
        )
    for example in summary["examples"]:
        lines.append(f"  - {example}")
    for line in summary["server_errors"]:
        lines.append(f"  server: {line}")
    if summary["server_log_tail"]:
        lines.append("server log tail:")
        lines.extend(f"  {line}" for line in summary["server_log_tail"])
    lines.append(summary["result"])
    print("\n".join(lines), flush=True)


def raise_open_files_limit(needed: int) -> None:
    """Lift the soft RLIMIT_NOFILE for this process and the server it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"soak: needs {needed} open files, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--duration", type=float, default=180.0, help="seconds of load (default 180)")
    add("--readers", type=int, default=2000, help="live readers (default 2000)")
    add("--sse-share", type=float, default=0.5, help="share of readers using SSE (default 0.5)")
    add("--streams", type=int, default=100, help="streams the readers spread over (default 100)")
    add("--append-rate", type=float, default=20.0, help="appends/s over all streams (default 20)")
    add("--writers", type=int, default=4, help="writer connections (default 4)")
    add("--disconnect-interval", type=float, default=5.0, help="seconds between cuts (default 5)")
    add("--disconnect-fraction", type=float, default=0.1, help="readers cut each time (0.1)")
    add("--long-poll-timeout", type=float, default=4.0, help="server's, seconds (default 4)")
    add("--sse-reconnect-interval", type=float, default=15.0, help="server's, s (default 15)")
    add("--data-dir", type=Path, default=None, help="LMDB data dir (default: in memory)")
    add("--workers", type=int, default=1, help="server worker processes (default 1)")
    add("--task-tolerance", type=int, default=5, help="tasks after vs baseline (default 5)")
    add("--rss-allowance-mib", type=float, default=25.0, help="RSS the churn may add (25)")
    add("--rss-allowance-fraction", type=float, default=0.25, help="or this share of baseline")
    add("--settle-timeout", type=float, default=30.0, help="seconds for tasks to return (30)")
    add("--seed", type=int, default=1, help="random seed (default 1)")
    add("--json", type=Path, default=None, help="also write the summary as JSON here")
    options = parser.parse_args(argv)
    if options.readers < 1 or options.streams < 1 or options.writers < 1:
        parser.error("--readers, --streams and --writers must be at least 1")
    if options.writers > options.streams:
        parser.error("--writers must not exceed --streams (a stream has one writer)")
    if options.append_rate <= 0 or options.duration <= 0:
        parser.error("--append-rate and --duration must be positive")
    if not (0 <= options.sse_share <= 1 and 0 <= options.disconnect_fraction <= 1):
        parser.error("--sse-share and --disconnect-fraction must be between 0 and 1")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    raise_open_files_limit(2 * options.readers + 1024)  # the server inherits it
    failure: BaseException | None = None
    try:
        summary = trio.run(soak, options)
    except* (RuntimeError, ProtocolFault, OSError, EOFError, trio.TooSlowError) as group:
        failure = group.exceptions[0]
    if failure is not None:
        print(f"soak: could not run: {failure!r}", file=sys.stderr)
        return 2
    print_summary(summary)
    if options.json is not None:
        options.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["result"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
