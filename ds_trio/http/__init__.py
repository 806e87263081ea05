"""The thin HTTP layer: Quart-Trio routes that parse, call the store, and render."""

from .app import StreamService, create_app

__all__ = ["StreamService", "create_app"]
