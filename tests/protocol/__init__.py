"""Unit tests for the pure protocol core, `ds_trio.protocol`: synchronous, no I/O."""
