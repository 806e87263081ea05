#!/usr/bin/env python3
"""Fork costs: creation time vs. source size, and read throughput of a deep chain.

For each store (memory, LMDB in a temp dir):
- forks an empty stream and a stream of --source-mib MiB, timing each fork;
- builds a chain of --depth forks (each level appends a little) and reads the
  deepest level from the start, comparing MiB/s with a plain stream holding
  the same bytes.

    .venv/bin/python scripts/bench_forks.py --source-mib 1024 --depth 50
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import trio

from ds_trio.protocol.forks import ForkRequest
from ds_trio.protocol.streams import AppendRequest, CreateRequest
from ds_trio.store import MemoryStore, Store
from ds_trio.store.lmdb import LmdbStore

OCTET = "application/octet-stream"
NOW = time.time()
CHUNK = 4 * 1024 * 1024


async def fill(store: Store, name: str, total: int, chunk: int = CHUNK) -> None:
    await store.create(name, CreateRequest(OCTET, OCTET), NOW)
    block = b"z" * chunk
    for done in range(0, total, chunk):
        await store.append(name, AppendRequest(OCTET, (block[: min(chunk, total - done)],)), NOW)


async def time_fork(store: Store, source: str, target: str) -> float:
    started = time.perf_counter()
    await store.fork(target, ForkRequest(source=source), NOW)
    return time.perf_counter() - started


async def read_all(store: Store, name: str) -> tuple[int, float]:
    position, total = 0, 0
    started = time.perf_counter()
    while True:
        result = await store.read(name, position, 1 << 20, NOW)
        total += sum(len(p) for p in result.pieces)
        position = result.next_position
        if result.up_to_date:
            return total, time.perf_counter() - started


async def bench(store: Store, label: str, source_mib: int, depth: int) -> None:
    await fill(store, "empty", 0)
    await fill(store, "big", source_mib * 1024 * 1024)
    empty = [await time_fork(store, "empty", f"fe{i}") for i in range(5)]
    big = [await time_fork(store, "big", f"fb{i}") for i in range(5)]
    print(
        f"{label}: fork of empty stream {statistics.median(empty) * 1e3:.2f} ms, "
        f"of {source_mib} MiB stream {statistics.median(big) * 1e3:.2f} ms (median of 5)"
    )
    level_bytes = 256 * 1024
    await fill(store, "level0", level_bytes)
    for level in range(1, depth + 1):
        await store.fork(f"level{level}", ForkRequest(source=f"level{level - 1}"), NOW)
        await store.append(f"level{level}", AppendRequest(OCTET, (b"q" * level_bytes,)), NOW)
    await fill(store, "plain", (depth + 1) * level_bytes, chunk=level_bytes)  # same appends
    chain_bytes, chain_s = await read_all(store, f"level{depth}")
    plain_bytes, plain_s = await read_all(store, "plain")
    assert chain_bytes == plain_bytes
    mib = chain_bytes / 2**20
    print(
        f"{label}: read {mib:.1f} MiB: depth-{depth} fork {mib / chain_s:.0f} MiB/s, "
        f"plain stream {mib / plain_s:.0f} MiB/s"
    )


async def main(source_mib: int, depth: int) -> None:
    await bench(MemoryStore(), "memory", source_mib, depth)
    with tempfile.TemporaryDirectory() as tmp:
        store = await LmdbStore.open(Path(tmp), sync=False, map_size=2 * source_mib * 2**20 + 2**30)
        try:
            await bench(store, "lmdb  ", source_mib, depth)
        finally:
            await store.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-mib", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=50)
    args = parser.parse_args()
    trio.run(main, args.source_mib, args.depth)
