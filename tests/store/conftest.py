from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ds_trio.store import MemoryStore, Store
from ds_trio.store.lmdb import LmdbStore


async def open_lmdb(path: Path, **options: object) -> LmdbStore:
    return await LmdbStore.open(path, **options)  # type: ignore[arg-type]


@pytest.fixture(name="store", params=["memory", "lmdb"])
async def _store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    store: Store
    if request.param == "memory":
        store = MemoryStore()
    else:
        store = await open_lmdb(tmp_path / "data", map_size=1 << 20, threads=4)
    try:
        yield store
    finally:
        await store.aclose()
