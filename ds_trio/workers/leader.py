"""Electing the one worker that does the work that must happen once.

The leader holds an exclusive flock on `<data dir>/ds_trio.leader`; the other
workers each wait for it in a thread blocked in `flock`, so when the leader
dies the kernel releases the lock and one waiter takes over at once, with no
polling. The leader publishes how to reach it (pid, private URL and a secret
that proves a forwarded request came from a worker) in
`ds_trio.leader.json`, replaced atomically.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any, Final

import trio

__all__ = ["LEADER_INFO", "LEADER_LOCK", "LeaderLock", "read_leader"]

LEADER_LOCK: Final = "ds_trio.leader"
LEADER_INFO: Final = "ds_trio.leader.json"


def read_leader(data_dir: Path) -> dict[str, Any] | None:
    """What the current (or last) leader published, or None."""
    try:
        info = json.loads((data_dir / LEADER_INFO).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


class LeaderLock:
    """One worker's claim on leadership of a data dir."""

    def __init__(self, data_dir: Path) -> None:
        self._dir = data_dir
        self._fd = os.open(data_dir / LEADER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        self.held = False

    def try_acquire(self) -> bool:
        """Take the lock if no one holds it."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self.held = True
        return True

    async def acquire(self) -> None:
        """Wait until this worker holds the lock (cancel-safe: the thread is abandoned)."""
        fd = self._fd
        await trio.to_thread.run_sync(fcntl.flock, fd, fcntl.LOCK_EX, abandon_on_cancel=True)
        self.held = True

    def publish(self, info: dict[str, Any]) -> None:
        """Tell the other workers how to reach the leader (call while holding the lock)."""
        temporary = self._dir / f"{LEADER_INFO}.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(info).encode())
        finally:
            os.close(fd)
        os.replace(temporary, self._dir / LEADER_INFO)

    def close(self) -> None:
        """Give up the lock (and any claim on it); a leader also withdraws what it published."""
        if self.held:
            info = read_leader(self._dir)
            if info is not None and info.get("pid") == os.getpid():
                (self._dir / LEADER_INFO).unlink(missing_ok=True)
        os.close(self._fd)
        self.held = False
