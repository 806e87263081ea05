"""ds_trio: a Durable Streams server on Trio, Quart-Trio, Hypercorn and LMDB."""

from __future__ import annotations

__version__ = "0.1.0"

from .config import Config as Config
from .http import create_app as create_app
from .server import serve as serve

__all__ = ["Config", "__version__", "create_app", "serve"]
