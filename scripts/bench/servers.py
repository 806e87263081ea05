"""Benchmark targets: each server started fresh on loopback, and /proc probes.

Every target listens on 127.0.0.1 with port 0 and prints its URL; the Server
context manager starts one, learns its address from that line, and stops it
(SIGTERM, then SIGKILL) with any data dir removed.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Self

BENCH_DIR: Final = Path(__file__).resolve().parent
REPO: Final = BENCH_DIR.parents[1]
NODE_DIR: Final = BENCH_DIR / "node"
STREAM_ROOT: Final = "/v1/stream"
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Target:
    """How to start one server under test, and what to say about it."""

    name: str
    description: str
    argv: tuple[str, ...]  # "{data}": a fresh data dir; "{timeout}", "{timeout_ms}": long-poll
    url_pattern: str  # regex; group 1 is http://host:port
    read_cap: str  # the most one catch-up response carries
    scenarios: tuple[str, ...] | None = None  # the only scenarios it runs (None: all)
    processes: int = 1  # more than one: its RSS is not one process's, so it is not measured

    def command(self, data_dir: Path, long_poll_timeout: float) -> list[str]:
        values = {
            "data": str(data_dir),
            "timeout": f"{long_poll_timeout:g}",
            "timeout_ms": str(round(long_poll_timeout * 1000)),
        }
        return [arg.format(**values) for arg in self.argv]


_DS_TRIO = (sys.executable, "-m", "ds_trio", "dev", "--host", "127.0.0.1", "--port", "0")
_DS_TRIO_FLAGS = ("--no-access-log", "--long-poll-timeout", "{timeout}s")
_DS_TRIO_URL = r"streams at (http://\S+?)/v1/stream/"
_NODE = ("node", str(NODE_DIR / "reference_server.mjs"), "--long-poll-timeout-ms", "{timeout_ms}")
_NODE_URL = r"reference server at (http://\S+)"

TARGETS: Final = {
    target.name: target
    for target in (
        Target(
            "ds_trio-memory",
            "ds_trio, in-memory store",
            (*_DS_TRIO, *_DS_TRIO_FLAGS),
            _DS_TRIO_URL,
            "1 MiB (default --max-read-bytes)",
        ),
        Target(
            "ds_trio-lmdb",
            "ds_trio, LMDB store (fsync on commit, the default)",
            (*_DS_TRIO, *_DS_TRIO_FLAGS, "--data-dir", "{data}"),
            _DS_TRIO_URL,
            "1 MiB (default --max-read-bytes)",
        ),
        Target(
            "ds_trio-lmdb-2w",
            "ds_trio, LMDB store, two worker processes (--workers 2)",
            (*_DS_TRIO, *_DS_TRIO_FLAGS, "--data-dir", "{data}", "--workers", "2"),
            _DS_TRIO_URL,
            "1 MiB (default --max-read-bytes)",
            ("append_small", "longpoll_fanout"),
            processes=3,
        ),
        Target(
            "ceiling",
            "bare Quart-Trio on Hypercorn, least work per route (scripts/bench/ceiling_app.py)",
            (sys.executable, str(BENCH_DIR / "ceiling_app.py"), "--long-poll-timeout", "{timeout}"),
            r"ceiling at (http://\S+)",
            "1 MiB",
        ),
        Target(
            "node-memory",
            "Node reference server @durable-streams/server, in memory",
            _NODE,
            _NODE_URL,
            "none: the whole stream in one response",
        ),
        Target(
            "node-file",
            "Node reference server @durable-streams/server, file store (--data-dir)",
            (*_NODE, "--data-dir", "{data}"),
            _NODE_URL,
            "none: the whole stream in one response",
        ),
    )
}


class Server:
    """One running target: `with Server(target, timeout) as server: server.port`.

    A reader thread drains the merged stdout/stderr (so a chatty server never
    blocks) and keeps its last lines for error reports.
    """

    def __init__(self, target: Target, long_poll_timeout: float, startup_timeout: float = 30.0):
        self.target = target
        self._workdir = Path(tempfile.mkdtemp(prefix=f"bench-{target.name}-"))
        self.output: deque[str] = deque(maxlen=200)
        self.base_url = ""
        self._ready = threading.Event()
        self._pattern = re.compile(target.url_pattern)
        self.process = subprocess.Popen(
            target.command(self._workdir / "data", long_poll_timeout),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        if not self._ready.wait(startup_timeout) or not self.base_url:
            self.stop()
            raise RuntimeError(f"{target.name} did not report its URL:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line.rstrip("\n"))
            match = self._pattern.search(line)
            if match and not self.base_url:
                self.base_url = match.group(1).rstrip("/")
                self._ready.set()
        self._ready.set()  # the process ended

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(list(self.output)[-lines:])

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, SIGKILL after `timeout`; then remove the data dir."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of stat(5)


def tree_cpu_seconds(pid: int) -> float:
    """`cpu_seconds` of a process and its live descendants (a supervisor's workers)."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            total += cpu_seconds(current)
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    pending.extend(int(child) for child in handle.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # it ended meanwhile
    return total


def box_cpu_seconds() -> tuple[float, float]:
    """CPU seconds all cores spent busy (not idle or waiting for I/O), and stolen."""
    with open("/proc/stat") as handle:
        ticks = [int(field) for field in handle.readline().split()[1:]]
    idle, iowait, steal = ticks[3], ticks[4], ticks[7]
    busy = sum(ticks[:8]) - idle - iowait - steal  # guest time is already in user
    return busy / CLOCK_TICKS, steal / CLOCK_TICKS


def children_cpu_seconds() -> float:
    """utime + stime of this process's finished, reaped children.

    A client that has exited has no /proc entry left; the kernel adds the same
    counters to its parent's RUSAGE_CHILDREN when it is reaped, so a delta of
    this around one client run is that client's CPU time.
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rss_bytes(pid: int) -> int:
    """Resident set size, from VmRSS in /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def raise_open_files_limit(wanted: int = 65536) -> int:
    """Lift this process's (and so its children's) open-files limit; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
