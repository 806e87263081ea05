"""The scenarios: each case drives one fresh server with one load generator.

Throughput cases use wrk with the Lua scripts in wrk/; fan-out and idle
cases use node/fanout.mjs. A case returns figures plus the CPU that the
server and the client used while the load generator ran (% of one core).
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from servers import (
    BENCH_DIR,
    NODE_DIR,
    STREAM_ROOT,
    Server,
    box_cpu_seconds,
    children_cpu_seconds,
    tree_cpu_seconds,
)

MIB: Final = 1 << 20
CLIENT_TIMEOUT: Final = 600.0  # seconds any one load generator may run


@dataclass(frozen=True, slots=True)
class Settings:
    """Sizes and durations of every scenario."""

    writers: int = 32
    append_seconds: float = 10.0
    small_bytes: int = 100
    batch_messages: int = 100
    read_chunks: int = 1024
    read_chunk_bytes: int = 64 * 1024
    read_seconds: float = 5.0
    longpoll_ns: tuple[int, ...] = (1000, 5000)
    longpoll_rounds: int = 3
    longpoll_bytes: int = 100
    sse_ns: tuple[int, ...] = (1000, 5000)
    sse_rate: float = 10.0
    sse_seconds: float = 8.0
    idle_n: int = 5000
    connect_batch: int = 200
    long_poll_timeout: float = 60.0


FULL: Final = Settings()
QUICK: Final = replace(
    FULL,
    append_seconds=2.0,
    read_chunks=128,
    read_seconds=2.0,
    longpoll_ns=(200,),
    longpoll_rounds=2,
    sse_ns=(200,),
    sse_seconds=2.0,
    idle_n=200,
)


@dataclass(slots=True)
class Figure:
    """One reported number. `better` is "higher", "lower", or "check" (must be 0)."""

    label: str
    unit: str
    better: str
    value: float | None
    ok: bool = True


@dataclass(slots=True)
class Outcome:
    """What one case measured on one target."""

    figures: dict[str, Figure]
    cpu: dict[str, float]
    detail: dict[str, Any] = field(default_factory=dict)


Run = Callable[[Server, Settings, Path], Outcome]


@dataclass(frozen=True, slots=True)
class Case:
    """One run of one scenario; `run(server, settings, workdir)` measures it."""

    id: str
    scenario: str
    run: Run


@dataclass(frozen=True, slots=True)
class Reply:
    """A response to a setup request."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes


class Http:
    """A keep-alive HTTP/1.1 connection for setting streams up and checking them."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> Reply:
        """Send one request; raises unless the answer is 2xx."""
        headers = {"Content-Type": content_type} if content_type else {}
        try:
            response = self._send(method, path, body, headers)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if method not in ("GET", "HEAD"):
                raise
            self.conn.close()  # the server dropped the idle keep-alive connection
            response = self._send(method, path, body, headers)
        reply = Reply(response.status, response.headers, response.read())
        if not 200 <= reply.status < 300:
            raise RuntimeError(f"{method} {path}: HTTP {reply.status} {reply.body[:200]!r}")
        return reply

    def _send(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> http.client.HTTPResponse:
        self.conn.request(method, path, body=body, headers=headers)
        return self.conn.getresponse()

    def read_all(self, path: str) -> bytes:
        """The whole stream, following Stream-Next-Offset until Stream-Up-To-Date."""
        offset, parts = "-1", []
        while True:
            reply = self.request("GET", f"{path}?offset={offset}")
            parts.append(reply.body)
            if reply.headers.get("Stream-Up-To-Date") == "true":
                return b"".join(parts)
            offset = reply.headers.get("Stream-Next-Offset", "")


def run_client(server: Server, argv: list[str]) -> tuple[str, dict[str, float]]:
    """Run a load generator to its end; its stdout, and CPU % of server and client."""
    server_before, client_before = tree_cpu_seconds(server.pid), children_cpu_seconds()
    box_before, steal_before = box_cpu_seconds()
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=CLIENT_TIMEOUT, check=False)
    wall = time.monotonic() - started
    if not server.alive():
        raise RuntimeError(f"{server.target.name} exited during the run:\n{server.log_tail()}")
    server_s = tree_cpu_seconds(server.pid) - server_before
    client_s = children_cpu_seconds() - client_before
    box_after, steal_after = box_cpu_seconds()

    def pct(seconds: float) -> float:
        return round(100 * seconds / wall, 1)

    cpu = {
        "wall_s": round(wall, 3),
        "server_pct": pct(server_s),
        "client_pct": pct(client_s),
        # the rest of the box: kernel network work, and anything else running
        "other_pct": pct(box_after - box_before - server_s - client_s),
        "steal_pct": pct(steal_after - steal_before),
    }
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout, cpu


ClientResult = tuple[dict[str, Any], dict[str, float]]  # the client's JSON, and CPU


def _wrk(server: Server, seconds: float, script: str, threads: int, *args: str) -> ClientResult:
    argv = [
        "wrk", f"-t{threads}", f"-c{threads}", f"-d{seconds:g}s", "--timeout", "30s",
        "-s", str(BENCH_DIR / "wrk" / script), server.base_url, "--", *args,
    ]  # fmt: skip
    stdout, cpu = run_client(server, argv)
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(f"wrk printed no result:\n{stdout[-2000:]}")
    return json.loads(lines[-1].removeprefix("RESULT ")), cpu


def _fanout(server: Server, config: dict[str, Any]) -> ClientResult:
    config = {"port": server.port, "server_pid": server.pid, **config}
    if server.target.processes > 1:
        config["rss"] = False
    stdout, cpu = run_client(server, ["node", str(NODE_DIR / "fanout.mjs"), json.dumps(config)])
    return json.loads(stdout.strip().splitlines()[-1]), cpu


def _appends(
    server: Server,
    settings: Settings,
    workdir: Path,
    *,
    name: str,
    content_type: str,
    body: bytes,
    messages: Callable[[bytes], int],
    per_request: int,
) -> Outcome:
    """`writers` connections, each appending `body` to its own stream."""
    client = Http(server.port)
    prefix = f"{STREAM_ROOT}/{name}-"
    for index in range(settings.writers):
        client.request("PUT", f"{prefix}{index}", content_type=content_type)
    body_file = workdir / f"{name}.body"
    body_file.write_bytes(body)
    result, cpu = _wrk(
        server, settings.append_seconds, "append.lua", settings.writers,
        prefix, content_type, str(body_file),
    )  # fmt: skip
    stored = sum(messages(client.read_all(f"{prefix}{i}")) for i in range(settings.writers))
    acknowledged = result["requests"] * per_request
    # wrk stops with up to one request per connection unanswered, maybe applied
    in_flight = settings.writers * per_request
    unaccounted = max(0, acknowledged - stored) + max(0, stored - acknowledged - in_flight)
    errors = result["non_2xx"] + result["socket_errors"] + unaccounted
    rate = acknowledged / (result["duration_us"] / 1e6)
    unit = "appends/s" if per_request == 1 else "messages/s"
    return Outcome(
        figures={
            "rate": Figure("throughput", unit, "higher", rate, ok=errors == 0),
            "errors": Figure(
                "non-2xx, socket errors, unstored", "count", "check", errors, ok=errors == 0
            ),
        },
        cpu=cpu,
        detail={**result, "stored_messages": stored, "acknowledged_messages": acknowledged},
    )


def append_small(server: Server, settings: Settings, workdir: Path) -> Outcome:
    return _appends(
        server, settings, workdir,
        name="append-small",
        content_type="application/octet-stream",
        body=b"x" * settings.small_bytes,
        messages=lambda data: len(data) // settings.small_bytes,
        per_request=1,
    )  # fmt: skip


def append_json_batch(server: Server, settings: Settings, workdir: Path) -> Outcome:
    batch = [{"i": n, "v": "abcdefgh"} for n in range(settings.batch_messages)]
    return _appends(
        server, settings, workdir,
        name="append-json",
        content_type="application/json",
        body=json.dumps(batch, separators=(",", ":")).encode(),
        messages=lambda data: data.count(b'"i"'),  # whatever framing the server stores
        per_request=settings.batch_messages,
    )  # fmt: skip


def read_catchup(server: Server, settings: Settings, workdir: Path) -> Outcome:
    """One reader reads the stream from -1 to the tail, again and again."""
    client = Http(server.port)
    path = f"{STREAM_ROOT}/catchup"
    client.request("PUT", path, content_type="application/octet-stream")
    block = os.urandom(settings.read_chunk_bytes)
    started = time.monotonic()
    for _ in range(settings.read_chunks):
        client.request("POST", path, block, "application/octet-stream")
    build_seconds = time.monotonic() - started
    total = settings.read_chunks * settings.read_chunk_bytes
    result, cpu = _wrk(server, settings.read_seconds, "read.lua", 1, path, str(total))
    ok = result["bad"] == 0 and result["socket_errors"] == 0 and result["passes"] > 0
    rate = result["body_bytes"] / MIB / (result["duration_us"] / 1e6)
    return Outcome(
        figures={"rate": Figure("catch-up read", "MiB/s", "higher", rate, ok=ok)},
        cpu=cpu,
        detail={**result, "stream_bytes": total, "build_seconds": round(build_seconds, 2)},
    )


def _latency_figures(result: dict[str, Any], ok: bool) -> dict[str, Figure]:
    return {
        q: Figure(f"latency {q}", "ms", "lower", result[f"{q}_ms"], ok=ok)
        for q in ("p50", "p99", "max")
    }


def _rss_figure(result: dict[str, Any], kind: str, ok: bool) -> Figure:
    per_connection = result["rss"]["bytes_per_connection"] / 1024
    return Figure(f"RSS per idle {kind} connection", "KiB", "lower", per_connection, ok=ok)


def longpoll_fanout(n: int, rss: bool = False) -> Run:
    """n long-polls on the tail; `longpoll_rounds` appends each wake them all."""

    def run(server: Server, settings: Settings, workdir: Path) -> Outcome:
        path = f"{STREAM_ROOT}/longpoll"
        Http(server.port).request("PUT", path, content_type="application/octet-stream")
        result, cpu = _fanout(server, {
            "mode": "longpoll", "path": path, "n": n, "rounds": settings.longpoll_rounds,
            "payload_bytes": settings.longpoll_bytes, "batch": settings.connect_batch, "rss": rss,
        })  # fmt: skip
        errors = sum(result["errors"].values())
        ok = errors == 0 and result["settled"]
        figures = _latency_figures(result, ok)
        figures["errors"] = Figure("missing/wrong responses", "count", "check", errors, ok=ok)
        if "rss" in result:
            figures["rss"] = _rss_figure(result, "long-poll", ok)
        return Outcome(figures, cpu, result)

    return run


def sse_fanout(n: int, rss: bool = False) -> Run:
    """n SSE subscribers; appends at `sse_rate` for `sse_seconds`, each timestamped."""

    def run(server: Server, settings: Settings, workdir: Path) -> Outcome:
        path = f"{STREAM_ROOT}/sse"
        Http(server.port).request("PUT", path, content_type="text/plain")
        result, cpu = _fanout(server, {
            "mode": "sse", "path": path, "n": n, "rate": settings.sse_rate,
            "seconds": settings.sse_seconds, "batch": settings.connect_batch, "rss": rss,
        })  # fmt: skip
        bad = result["incomplete_subscribers"] + result["append_failures"]
        ok = bad == 0 and result["settled"]
        figures = _latency_figures(result, ok)
        figures["rate"] = Figure(
            f"appends/s achieved (of {settings.sse_rate:g})", "appends/s", "higher",
            result["appends_per_s"], ok=ok,
        )  # fmt: skip
        figures["errors"] = Figure("subscribers missing messages", "count", "check", bad, ok=ok)
        if "rss" in result:
            figures["rss"] = _rss_figure(result, "SSE", ok)
        return Outcome(figures, cpu, result)

    return run


def idle_connections(kind: str) -> Run:
    """`idle_n` idle long-polls or SSE subscribers; the server's RSS growth per one."""

    def run(server: Server, settings: Settings, workdir: Path) -> Outcome:
        path = f"{STREAM_ROOT}/idle"
        Http(server.port).request("PUT", path, content_type="text/plain")
        config = {"path": path, "n": settings.idle_n, "batch": settings.connect_batch, "rss": True}
        if kind == "long-poll":
            result, cpu = _fanout(server, {**config, "mode": "longpoll", "rounds": 0})
            lost = sum(result["errors"].values()) + result["timeouts"]
        else:
            result, cpu = _fanout(server, {**config, "mode": "sse", "seconds": 0, "rate": 1})
            lost = result["incomplete_subscribers"] + result["reconnects"]
        ok = lost == 0 and result["settled"]
        figures = {
            "rss": _rss_figure(result, "long-poll" if kind == "long-poll" else "SSE", ok),
            "errors": Figure("connections lost or answered", "count", "check", lost, ok=ok),
        }
        return Outcome(figures, cpu, result)

    return run


SCENARIOS: Final = (
    "append_small",
    "append_json_batch",
    "read_catchup",
    "longpoll_fanout",
    "sse_fanout",
    "idle_connections",
)


def cases(settings: Settings, scenarios: list[str]) -> list[Case]:
    """The runs the chosen scenarios make, in the order of SCENARIOS.

    The idle measurement is the state a fan-out run at N = idle_n reaches
    before its first append, so when that run is in the plan it measures the
    RSS too and the idle scenario needs no servers of its own.
    """
    idle = "idle_connections" in scenarios
    fold_longpoll = (
        idle and "longpoll_fanout" in scenarios and settings.idle_n in settings.longpoll_ns
    )
    fold_sse = idle and "sse_fanout" in scenarios and settings.idle_n in settings.sse_ns
    idle_runs = [
        (f"idle {kind} n={settings.idle_n}", idle_connections(kind))
        for kind, folded in (("long-poll", fold_longpoll), ("sse", fold_sse))
        if not folded
    ]
    runs: dict[str, list[tuple[str, Run]]] = {
        "append_small": [("append_small", append_small)],
        "append_json_batch": [("append_json_batch", append_json_batch)],
        "read_catchup": [("read_catchup", read_catchup)],
        "longpoll_fanout": [
            (f"longpoll n={n}", longpoll_fanout(n, rss=fold_longpoll and n == settings.idle_n))
            for n in settings.longpoll_ns
        ],
        "sse_fanout": [
            (f"sse n={n}", sse_fanout(n, rss=fold_sse and n == settings.idle_n))
            for n in settings.sse_ns
        ],
        "idle_connections": idle_runs,
    }
    return [
        Case(id_, name, run) for name in SCENARIOS if name in scenarios for id_, run in runs[name]
    ]
