"""`python -m ds_trio dev|serve`: run a Durable Streams server."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import trio

from . import __version__
from .config import Config, ConfigError, env_settings, parse_duration, parse_size
from .server import open_store, serve, wait_for_signal
from .store.lmdb import StoreOpenError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ds-trio", description="A Durable Streams server.")
    parser.add_argument("--version", action="version", version=f"ds_trio {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("dev", "serve with zero configuration: in memory on 127.0.0.1:4437"),
        ("serve", "serve with settings from --config, DS_TRIO_* variables and flags"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--config", type=Path, help="a TOML file of settings")
        command.add_argument("--host", help="address to listen on (default 127.0.0.1)")
        command.add_argument("--port", type=int, help="port to listen on; 0 picks a free one")
        command.add_argument("--data-dir", type=Path, help="LMDB data directory (default: memory)")
        command.add_argument("--long-poll-timeout", type=parse_duration, help="e.g. 500ms, 30s")
        command.add_argument("--sse-reconnect-interval", type=parse_duration, help="e.g. 60s")
        command.add_argument("--max-append-bytes", type=parse_size, help="e.g. 64MiB")
        command.add_argument("--max-read-bytes", type=parse_size, help="e.g. 1MiB")
        command.add_argument("--access-log", action="store_true", default=None)
    return parser


def _config(args: argparse.Namespace) -> Config:
    config = Config.from_toml(args.config) if args.config else Config()
    if args.command == "serve":
        config = config.with_changes(**env_settings())
    flags = {
        name: getattr(args, name)
        for name in (
            "host",
            "port",
            "data_dir",
            "long_poll_timeout",
            "sse_reconnect_interval",
            "max_append_bytes",
            "max_read_bytes",
            "access_log",
        )
        if getattr(args, name) is not None
    }
    return config.with_changes(**flags)


async def _run(config: Config) -> int:
    try:
        store = await open_store(config)
    except StoreOpenError as exc:
        print(f"ds-trio: cannot use the data dir: {exc}", file=sys.stderr)
        return 2
    async with trio.open_nursery() as nursery:
        service = await nursery.start(
            partial(serve, config, store=store, shutdown_trigger=wait_for_signal)
        )
        for url in service.bound_urls:
            host_port = url.split("://", 1)[1]
            print(f"ds_trio {__version__}: streams at http://{host_port}{config.stream_root}/", flush=True)
        where = "memory (data is lost on exit)" if config.data_dir is None else str(config.data_dir)
        print(f"store: {where}; Ctrl-C to stop", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m ds_trio` and the `ds-trio` script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = _config(args)
    except ConfigError as exc:
        print(f"ds-trio: {exc}", file=sys.stderr)
        return 2
    return trio.run(_run, config)


if __name__ == "__main__":
    sys.exit(main())
