"""Running a server of several workers, and reaching each worker on its own."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import httpx
import trio

from ds_trio.workers.bus import read_peers
from ds_trio.workers.leader import read_leader

from ..e2e.conformance import ServerProcess

TEXT = {"Content-Type": "text/plain"}


def start_workers(data: Path, *args: str, workers: int = 2) -> ServerProcess:
    """`python -m ds_trio serve --workers N` on `data`; returns once every worker serves."""
    return ServerProcess("--data-dir", str(data), "--workers", str(workers), *args, command="serve")


def worker_urls(data: Path) -> dict[int, str]:
    """Each registered worker's private URL, by pid."""
    return {info["pid"]: info["url"] for info in read_peers(data).values()}


def leader_pid(data: Path) -> int | None:
    info = read_leader(data)
    return None if info is None else info["pid"]


async def live_readers(http: httpx.AsyncClient, worker_url: str, mode: str) -> int:
    text = (await http.get(f"{worker_url}/metrics")).text
    match = re.search(rf'^ds_trio_live_readers\{{mode="{mode}"\}} (\S+)$', text, re.MULTILINE)
    return int(float(match.group(1))) if match else 0


async def until_reading(http: httpx.AsyncClient, worker_url: str, mode: str, count: int = 1) -> None:
    """Wait until `worker_url` holds `count` live readers of `mode` (bounded)."""
    with trio.fail_after(10):
        while await live_readers(http, worker_url, mode) < count:
            await trio.sleep(0.005)  # asking the worker over HTTP: there is no event to wait on


def summary(latencies: list[float]) -> str:
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"n={len(ms)} p50={statistics.median(ms):.1f}ms p99={p99:.1f}ms max={ms[-1]:.1f}ms"
