"""Operational routes outside the stream root: liveness, readiness, metrics."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio
from prometheus_client import CONTENT_TYPE_LATEST
from quart import Response
from quart_trio import QuartTrio

from ..protocol.errors import ProtocolError
from .common import body_response, text_response

if TYPE_CHECKING:
    from .app import StreamService

__all__ = ["add_routes"]

log = logging.getLogger("ds_trio.http")


def add_routes(app: QuartTrio, service: StreamService) -> None:
    """Add /healthz, /readyz and /metrics to `app`."""

    @app.route("/healthz", methods=["GET", "HEAD"])
    async def healthz() -> Response:
        """Liveness: the process answers."""
        return text_response(200, "ok")

    @app.route("/readyz", methods=["GET", "HEAD"])
    async def readyz() -> Response:
        """Readiness: the store is open and a write commits."""
        if service.watchers.closed:
            return text_response(503, "shutting down")
        try:
            await service.store.check_writable()
        except ProtocolError as error:
            log.warning("not ready: %s", error.message)
            return text_response(503, f"store not writable: {error.message}")
        return text_response(200, "ready")

    @app.route("/metrics", methods=["GET"])
    async def metrics() -> Response:
        """Prometheus metrics, with store sizes, watchers and tasks read at scrape time."""
        stats = await service.store.stats()
        service.metrics.streams.set(stats.streams)
        service.metrics.store_bytes.set(stats.bytes)
        service.metrics.watchers.set(service.watchers.statistics().total)
        service.metrics.tasks.set(trio.lowlevel.current_statistics().tasks_living)
        body = service.metrics.render()
        return body_response(
            200, body, {"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"}
        )
