"""Several worker processes serving one data dir: the peer bus, leadership, supervision."""

from .duties import start_duties, sweep_expired
from .group import WorkerGroup

__all__ = ["WorkerGroup", "start_duties", "sweep_expired"]
