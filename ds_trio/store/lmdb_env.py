"""The LMDB environment of a data dir: opening it safely, owning it, resizing it.

Rules: a directory that is not empty and not a ds_trio store is refused and
left untouched; one server owns a data dir at a time, though that server may
be several worker processes (each holds a shared flock on the owner lock, which
names the server; the kernel releases it when a process dies); the databases
and the layout marker are created in one transaction, so a first start killed
half-way leaves an empty, reusable store.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import lmdb

from . import lmdb_keys as keys

__all__ = [
    "DB_NAMES",
    "OWNER_LOCK",
    "SERVER_PID_ENV",
    "ResizeGate",
    "StoreOpenError",
    "claim_data_dir",
    "open_env",
    "release_env",
    "server_identity",
]

DB_NAMES: Final = (b"info", b"streams", b"data", b"producers", b"expiry", b"subscriptions")
OWNER_LOCK: Final = "ds_trio.lock"  # flock'd (shared) by the processes of the one owning server
SERVER_PID_ENV: Final = "DS_TRIO_SERVER_PID"  # set by `serve --workers` for its workers


def server_identity() -> int:
    """The pid that names this process's server.

    A worker started by `serve --workers` gets its supervisor's pid in
    `DS_TRIO_SERVER_PID`; a Hypercorn worker belongs to its parent (the
    Hypercorn master that spawned it); any other process is a server of its own.
    """
    raw = os.environ.get(SERVER_PID_ENV)
    if raw and raw.isdigit():
        return int(raw)
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None and parent.pid is not None else os.getpid()


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


def _join_owner(path: Path, server: int) -> int:
    """Hold the data dir's owner lock for `server`; the fd keeps it until closed or death.

    The first process of a server takes the lock exclusively, writes the
    server's pid into it, and turns it into a shared lock; later processes of
    the same server share it; a process of any other server is refused. The
    directory's own flock keeps two processes from joining at the same moment.
    """
    dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
        fd = os.open(path / OWNER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            if holder != str(server):
                os.close(fd)
                raise StoreOpenError(
                    f"{path} is in use by another ds_trio server (pid {holder})"
                ) from None
        else:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{server}\n".encode(), 0)
        fcntl.flock(fd, fcntl.LOCK_SH)  # never blocks: every holder holds it shared
        return fd
    finally:
        os.close(dir_fd)  # lets the next process join


def claim_data_dir(path: Path, server: int | None = None) -> int:
    """Check that `path` can be a ds_trio data dir (creating it if need be) and join its owner.

    Returns the fd holding the owner lock for `server` (default: this
    process's server, see `server_identity`).

    Raises:
        StoreOpenError: not a directory, not empty and not ours, the wrong
            layout, in use by another server, or it cannot be created or locked.
    """
    server = server_identity() if server is None else server
    try:
        return _claim(path, server)
    except OSError as exc:  # cannot create or lock it: permissions, a missing parent, a full disk
        raise StoreOpenError(f"cannot use {path}: {exc.strerror or exc}") from exc


def _claim(path: Path, server: int) -> int:
    if path.exists() and not path.is_dir():
        raise StoreOpenError(f"{path} is not a directory")
    lock_fd: int | None = None
    if path.is_dir():
        entries = set(os.listdir(path))
        if OWNER_LOCK in entries:  # ours: fail fast if another server is running
            lock_fd = _join_owner(path, server)
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
    return _join_owner(path, server) if lock_fd is None else lock_fd


_open_here: dict[int, tuple[int, int]] = {}  # owner-lock fd -> (st_dev, st_ino) of its open data dir
_open_here_lock = threading.Lock()


def open_env(
    path: Path, map_size: int, sync: bool, server: int | None = None
) -> tuple[lmdb.Environment, dict[bytes, Any], int]:
    """Open the environment in `path`; also returns the owner-lock fd (see `release_env`)."""
    if path.is_dir():  # LMDB forbids opening one environment twice in a process
        stat = path.stat()
        if (stat.st_dev, stat.st_ino) in _open_here.values():
            raise StoreOpenError(
                f"{path} is in use by another ds_trio server (pid {os.getpid()}), in this process"
            )
    lock_fd = claim_data_dir(path, server)
    try:
        env, dbs = _init_env(path, map_size, sync)
    except BaseException:
        os.close(lock_fd)
        raise
    stat = path.stat()
    with _open_here_lock:
        _open_here[lock_fd] = (stat.st_dev, stat.st_ino)
    return env, dbs, lock_fd


def release_env(lock_fd: int) -> None:
    """Let go of the owner lock `open_env` returned, once its environment is closed."""
    with _open_here_lock:
        _open_here.pop(lock_fd, None)
    os.close(lock_fd)


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
    env.reader_check()  # free reader slots left by killed processes (they pin old pages)
    # One transaction creates every database and the layout marker, so a crash
    # during a first start leaves either a complete store or an empty one.
    with env.begin(write=True) as txn:
        dbs = {name: env.open_db(name, txn=txn) for name in DB_NAMES}
        if txn.get(b"format", db=dbs[b"info"]) is None:
            txn.put(b"format", keys.FORMAT_NAME, db=dbs[b"info"])
            txn.put(b"layout", keys.LAYOUT_VERSION, db=dbs[b"info"])
    return env, dbs
