"""The pure protocol core of ds_trio.

Rule: nothing in this package performs I/O or imports trio, quart, hypercorn or
lmdb. Time and randomness are passed in by the caller, so every function here
is deterministic and unit-tested on its own. The stores and the HTTP layer
build on it; it depends on the standard library only.
"""
