#!/usr/bin/env python3
"""Measure LMDB restart: time to serve and resident memory, vs. streams and data size.

Fills a temporary data dir with N streams (directly through LmdbStore), then
starts `python -m ds_trio dev --data-dir DIR --port 0` and measures the time
until a HEAD and a read of the last stream succeed, and the server's RSS.
Repeats with more data per stream, to show that memory does not grow with it.

    .venv/bin/python scripts/bench_restart.py --streams 10000
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import trio

from ds_trio.protocol.streams import AppendRequest, CreateRequest
from ds_trio.store.lmdb import LmdbStore

NOW = time.time()


async def fill(path: Path, streams: int, bytes_per_stream: int) -> None:
    store = await LmdbStore.open(path, sync=False)
    payload = b"x" * bytes_per_stream
    try:
        for start in range(0, streams, 500):
            async with trio.open_nursery() as nursery:
                for i in range(start, min(start + 500, streams)):
                    nursery.start_soon(_one, store, f"s{i}", payload)
    finally:
        await store.aclose()


async def _one(store: LmdbStore, name: str, payload: bytes) -> None:
    await store.create(name, CreateRequest("application/octet-stream", "application/octet-stream"), NOW)
    if payload:
        await store.append(name, AppendRequest("application/octet-stream", (payload,)), NOW)


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) if match else -1


def restart(path: Path, last: str) -> tuple[float, int]:
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "ds_trio", "dev", "--port", "0", "--data-dir", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        base = None
        for line in process.stdout:
            match = re.search(r"streams at (http://\S+?)/v1/stream/", line)
            if match:
                base = match.group(1)
                break
        if base is None:
            raise RuntimeError("server did not start")
        url = f"{base}/v1/stream/{last}"
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10).close()
        urllib.request.urlopen(url + "?offset=-1", timeout=10).read(16)
        elapsed = time.perf_counter() - started
        return elapsed, rss_kib(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--sizes", default="0,1024,65536", help="bytes per stream, comma-separated")
    args = parser.parse_args()
    print(f"{'streams':>8} {'bytes/stream':>12} {'data MiB':>9} {'restart s':>10} {'RSS MiB':>8}")
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "data"
            trio.run(fill, path, args.streams, size)
            data_mib = (path / "data.mdb").stat().st_size / 2**20
            elapsed, rss = restart(path, f"s{args.streams - 1}")
            print(f"{args.streams:>8} {size:>12} {data_mib:>9.1f} {elapsed:>10.2f} {rss / 1024:>8.1f}")


if __name__ == "__main__":
    main()
