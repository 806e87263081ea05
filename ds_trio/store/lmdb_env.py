"""The LMDB environment of a data dir: opening it safely, owning it, resizing it.

Rules: a directory that is not empty and not a ds_trio store is refused and
left untouched; one server owns a data dir at a time (an flock, released when
the process dies); the databases and the layout marker are created in one
transaction, so a first start killed half-way leaves an empty, reusable store.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import lmdb

from . import lmdb_keys as keys

__all__ = ["DB_NAMES", "OWNER_LOCK", "ResizeGate", "StoreOpenError", "open_env"]

DB_NAMES: Final = (b"info", b"streams", b"data", b"producers", b"expiry", b"subscriptions")
OWNER_LOCK: Final = "ds_trio.lock"  # flock'd by the one server that owns the dir


class StoreOpenError(RuntimeError):
    """The data directory cannot be used (not ours, wrong layout, unreadable)."""


class ResizeGate:
    """Transactions share the map; resizing it needs them all closed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._resizing = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._resizing = True
            while self._active:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


def _check_layout(path: Path) -> None:
    """Refuse a data.mdb that holds anything but a ds_trio store of this layout.

    An empty file or an LMDB environment with nothing in it is what a first
    start killed before its initial commit leaves behind; it is ours to use.
    """
    if (path / "data.mdb").stat().st_size == 0:
        return
    try:
        env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=len(DB_NAMES))
    except lmdb.Error as exc:
        raise StoreOpenError(f"{path} is not an LMDB data directory: {exc}") from exc
    try:
        if env.stat()["entries"] == 0:
            return
        try:
            info = env.open_db(b"info", create=False)
        except lmdb.Error as exc:
            raise StoreOpenError(f"{path} holds an LMDB database that is not ds_trio's") from exc
        with env.begin(db=info) as txn:
            name, layout = txn.get(b"format"), txn.get(b"layout")
        if name != keys.FORMAT_NAME:
            raise StoreOpenError(f"{path} holds an LMDB database that is not ds_trio's")
        if layout != keys.LAYOUT_VERSION:
            found = layout.decode(errors="replace") if layout else "none"
            raise StoreOpenError(
                f"{path} uses data layout {found}; this ds_trio reads layout "
                f"{keys.LAYOUT_VERSION.decode()}"
            )
    finally:
        env.close()


def _lock_dir(path: Path) -> int:
    """Take the data dir's owner lock (held until the fd closes, or the process dies)."""
    fd = os.open(path / OWNER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreOpenError(f"{path} is in use by another ds_trio server (pid {holder})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def open_env(
    path: Path, map_size: int, sync: bool
) -> tuple[lmdb.Environment, dict[bytes, Any], int]:
    if path.exists() and not path.is_dir():
        raise StoreOpenError(f"{path} is not a directory")
    lock_fd: int | None = None
    if path.is_dir():
        entries = set(os.listdir(path))
        if OWNER_LOCK in entries:  # ours: fail fast if its owner is running
            lock_fd = _lock_dir(path)
        try:
            if "data.mdb" in entries:
                _check_layout(path)
            elif entries - {"lock.mdb", OWNER_LOCK}:
                raise StoreOpenError(f"{path} is not empty and is not a ds_trio data directory")
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
    else:
        path.mkdir(parents=True)
    if lock_fd is None:
        lock_fd = _lock_dir(path)
    try:
        env, dbs = _init_env(path, map_size, sync)
    except BaseException:
        os.close(lock_fd)
        raise
    return env, dbs, lock_fd


def _init_env(path: Path, map_size: int, sync: bool) -> tuple[lmdb.Environment, dict[bytes, Any]]:
    env = lmdb.open(
        str(path),
        map_size=map_size,
        max_dbs=len(DB_NAMES),
        max_readers=1024,
        sync=sync,
        metasync=sync,
        readahead=False,
    )
    # One transaction creates every database and the layout marker, so a crash
    # during a first start leaves either a complete store or an empty one.
    with env.begin(write=True) as txn:
        dbs = {name: env.open_db(name, txn=txn) for name in DB_NAMES}
        if txn.get(b"format", db=dbs[b"info"]) is None:
            txn.put(b"format", keys.FORMAT_NAME, db=dbs[b"info"])
            txn.put(b"layout", keys.LAYOUT_VERSION, db=dbs[b"info"])
    return env, dbs
