"""Stream storage: one `Store` interface, in-memory and LMDB implementations."""

from .base import ReadResult, Store
from .memory import MemoryStore

__all__ = ["MemoryStore", "ReadResult", "Store"]
