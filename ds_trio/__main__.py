"""`python -m ds_trio dev|serve|token|<client command>`: run a server, make a token, use streams."""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Final

import trio

from . import __version__, client
from .auth import hash_token, new_token
from .auth.grants import GrantError, parse_static_token
from .config import Config, ConfigError, env_settings, read_toml
from .http.access import build_access
from .server import open_store, serve, tune_gc, wait_for_signal
from .store import Store
from .store.lmdb import StoreOpenError
from .workers.supervisor import WorkerSocket, become_worker, report_ready, supervise

__all__ = ["main"]

log = logging.getLogger("ds_trio")


# (flag, help); each flag sets the Config field of the same name.
_FLAGS: Final = (
    ("--host", "address to listen on (default 127.0.0.1)"),
    ("--port", "port to listen on; 0 picks a free one (default 4437)"),
    ("--data-dir", "LMDB data directory (default: in memory)"),
    ("--stream-root", "URL path of the stream root (default /v1/stream)"),
    ("--long-poll-timeout", "how long a long-poll waits, e.g. 500ms, 30s (default 30s)"),
    ("--sse-reconnect-interval", "when SSE responses end, e.g. 60s (default 60s)"),
    ("--max-append-bytes", "largest request body, e.g. 64MiB (default 64MiB)"),
    ("--max-read-bytes", "most data per catch-up response, e.g. 1MiB (default 1MiB)"),
    ("--store-threads", "worker threads for LMDB calls (default 8)"),
    ("--workers", "server processes sharing one port and the data dir (default 1)"),
    ("--lmdb-map-size", "initial LMDB map size; it grows (default 1GiB)"),
    ("--cors-origin", "allowed origin(s), comma-separated, or * (default *)"),
    ("--trusted-proxies", "proxy addresses/networks whose X-Forwarded-* headers count"),
    ("--shutdown-grace", "time in-flight requests get on shutdown (default 10s)"),
    ("--log-level", "debug, info, warning or error (default info)"),
    ("--tokens-file", "a TOML file of [[tokens]]: turns access control on"),
    ("--rate-limit", "requests per second per client, e.g. 50 (default 0: off)"),
    ("--max-live-readers-per-client", "concurrent live reads: long-poll, SSE, WebSocket (default 10000)"),
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ds-trio",
        description="A Durable Streams server, and a client for it.",
        epilog=client.EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ds_trio {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("dev", "serve with zero configuration: in memory on 127.0.0.1:4437"),
        ("serve", "serve with settings from --config, then DS_TRIO_* variables, then flags"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--config", type=Path, help="a TOML file of settings")
        for flag, flag_help in _FLAGS:
            command.add_argument(flag, help=flag_help)
        command.add_argument(
            "--access-log", action=argparse.BooleanOptionalAction, default=None, help="log requests"
        )
        command.add_argument(
            "--console",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="serve the browser console at / (default: on in dev without tokens, off in serve)",
        )
    token = commands.add_parser("token", help="make a bearer token and print its [[tokens]] entry")
    token.add_argument("name", help="a name for the token, shown in logs and rate limits")
    token.add_argument(
        "--scopes", default="read", help="comma-separated: read, write, admin (default read)"
    )
    token.add_argument(
        "--streams", default="**", help="comma-separated stream globs, e.g. 'events/**' (default **)"
    )
    client.add_commands(commands)
    return parser


def _make_token(args: argparse.Namespace) -> int:
    """Print a new token once, and the entry that lets it in (holding only its digest)."""
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    streams = [s.strip() for s in args.streams.split(",") if s.strip()]
    secret = new_token()
    entry = {"name": args.name, "sha256": hash_token(secret), "scopes": scopes, "streams": streams}
    try:
        parse_static_token(entry)
    except GrantError as exc:
        print(f"ds-trio: {exc}", file=sys.stderr)
        return 2
    # The secret to the terminal only: `>> tokens.toml` keeps the entry, not the secret.
    print(f"token for {args.name} (shown once; give it to the client): {secret}", file=sys.stderr)
    print("[[tokens]]")
    for key, value in entry.items():
        print(f"{key} = {json.dumps(value)}")
    return 0


def _config(args: argparse.Namespace) -> Config:
    """TOML file, then (for `serve`) environment, then flags: later ones win."""
    settings: dict[str, object] = read_toml(args.config) if args.config else {}
    if args.command == "dev":  # development: webhooks may call back to this machine over http
        settings.setdefault("webhook_allow_http_loopback", True)
    if args.command == "serve":
        settings.update(env_settings())
    names = [flag[2:].replace("-", "_") for flag, _ in _FLAGS] + ["access_log", "console"]
    settings.update({name: getattr(args, name) for name in names if getattr(args, name) is not None})
    # Checked once, whole: workers = 2 may come before data_dir.
    config = Config.from_mapping(settings)
    if args.command == "dev" and "console" not in settings and not config.access_control:
        # Development: the browser console at /, unless tokens say this server is shared.
        config = config.with_changes(console=True)
    return config


def _cannot_listen(config: Config, exc: BaseException) -> int:
    failure = _bind_failure(exc)
    if failure is None:
        raise exc
    where = f"{config.host}:{config.port}"
    reason = failure.strerror or str(failure)
    hint = "try --port 0" if failure.errno == errno.EADDRINUSE else "check --host"
    print(f"ds-trio: cannot listen on {where}: {reason} ({hint})", file=sys.stderr)
    return 2


async def _supervise(config: Config, argv: Sequence[str]) -> int:
    try:
        return await supervise(config, argv)
    except StoreOpenError as exc:
        print(f"ds-trio: cannot use the data dir: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        return _cannot_listen(config, exc)


async def _run(config: Config, worker: WorkerSocket | None = None) -> int:
    try:
        store = await open_store(config)
    except StoreOpenError as exc:
        print(f"ds-trio: cannot use the data dir: {exc}", file=sys.stderr)
        return 2
    if worker is None:
        return await _serve(config, store, wait_for_signal)
    # Open until the worker exits: a second SIGTERM then finds a handler, not the default.
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        return await _serve(config, store, partial(worker.wait_for_stop, signals), worker)


async def _serve(
    config: Config,
    store: Store,
    shutdown_trigger: Callable[[], Awaitable[None]],
    worker: WorkerSocket | None = None,
) -> int:
    async with trio.open_nursery() as nursery:
        try:
            service = await nursery.start(
                partial(
                    serve,
                    config,
                    store=store,
                    listen_fd=None if worker is None else worker.listen_fd,
                    shutdown_trigger=shutdown_trigger,
                )
            )
        except (OSError, BaseExceptionGroup) as exc:
            return _cannot_listen(config, exc)
        if worker is not None:
            report_ready(worker)
            tune_gc()
            return 0
        for url in service.bound_urls:
            host_port = url.split("://", 1)[1]
            print(f"ds_trio {__version__}: streams at http://{host_port}{config.stream_root}/", flush=True)
            if config.console:
                print(f"console at http://{host_port}/", flush=True)
        where = "memory (data is lost on exit)" if config.data_dir is None else str(config.data_dir)
        print(f"store: {where}; Ctrl-C to stop", flush=True)
        _report_access(config)
        tune_gc()
    return 0


def _report_access(config: Config) -> None:
    if config.access_control:
        print("access control: on (bearer tokens required)", flush=True)
    elif not _is_loopback(config.host):
        log.warning(
            "access control is off and %s is reachable from other machines: anyone there "
            "can create, append to and delete streams (see the README's Security section)",
            config.host,
        )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _bind_failure(exc: BaseException) -> OSError | None:
    """The OSError that stopped the server from listening, if that is what happened."""
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        matched, _ = exc.split(OSError)
        while isinstance(matched, BaseExceptionGroup):
            matched = matched.exceptions[0]
        return matched
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m ds_trio` and the `ds-trio` script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    worker = become_worker()
    args = client.parse_command_line(_parser(), argv)
    if args.command == "token":
        return _make_token(args)
    if args.command in client.COMMANDS:
        return client.main(args)
    try:
        config = _config(args)
        build_access(config)  # reads the token and key files: their errors now, in one line
    except ConfigError as exc:
        print(f"ds-trio: bad configuration: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if config.log_level != "debug":  # one line per webhook POST or forwarded request otherwise
        logging.getLogger("httpx").setLevel(logging.WARNING)
    if config.workers > 1 and worker is None:
        return trio.run(_supervise, config, argv)
    return trio.run(_run, config, worker)


if __name__ == "__main__":
    sys.exit(main())
