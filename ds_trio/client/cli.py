"""`ds-trio create|append|read|tail|head|close|delete`: the client's command line.

Rule: this module only turns a command line into one call of a `session`
command and its outcome into an exit status. Arguments are checked before
anything is sent, so a usage error never half-happens.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Final

import trio

from . import session
from .console import Console
from .model import (
    DEFAULT_SERVER,
    EXIT_CODES_HELP,
    ClientError,
    Exit,
    Producer,
    Unavailable,
    UsageError,
    create_headers,
    stream_url,
)
from .session import Session, TailState
from .upload import Upload

__all__ = [
    "COMMANDS",
    "add_commands",
    "build_parser",
    "execute",
    "main",
    "parse_command_line",
    "run",
    "wait_for_interrupt",
]

COMMANDS: Final = ("create", "append", "read", "tail", "head", "close", "delete")
SERVER_ENV: Final = "DS_TRIO_URL"
TOKEN_ENV: Final = "DS_TRIO_TOKEN"

Command = Callable[[Session, Console, str], Awaitable[Exit]]
Interrupted = Callable[[], Awaitable[object]]


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the client's subcommands to `ds-trio`'s (or a test's) parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "target", metavar="URL", help="a stream URL, or a stream name under --server"
    )
    common.add_argument(
        "--server", help=f"stream root that names resolve against (${SERVER_ENV}; {DEFAULT_SERVER})"
    )
    common.add_argument("--token", help=f"bearer token for Authorization (${TOKEN_ENV})")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            parents=[common],
            help=summary,
            description=summary,
            epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    create = command("create", "create a stream (prints its next offset)")
    _add_body_options(create, "initial data")
    create.add_argument(
        "--content-type", default="application/octet-stream", help="(default %(default)s)"
    )
    lifetime = create.add_mutually_exclusive_group()
    lifetime.add_argument(
        "--ttl", metavar="SECONDS", help="expire after this long without reads or writes"
    )
    lifetime.add_argument("--expires-at", metavar="RFC3339", help="expire at this time")
    create.add_argument("--closed", action="store_true", help="create it closed: its data is final")

    append = command("append", "append to a stream (prints its next offset)")
    _add_body_options(append, "data to append")
    append.add_argument("--content-type", help="(default: the stream's own, asked with a HEAD)")
    append.add_argument("--close", action="store_true", help="close the stream with this append")
    append.add_argument(
        "--producer", metavar="ID", help="idempotent producer id (with --epoch, --seq)"
    )
    append.add_argument("--epoch", type=int, metavar="N", help="the producer's epoch")
    append.add_argument("--seq", type=int, metavar="N", help="the producer's sequence number")

    read = command("read", "print a stream's data up to its current end")
    read.add_argument(
        "--from", dest="offset", default="-1", metavar="OFFSET", help="(default -1: the start)"
    )
    read.add_argument("--json", action="store_true", help="JSON streams: one message per line")

    tail = command("tail", "print data as it arrives, until the stream closes; Ctrl-C stops")
    tail.add_argument(
        "--from",
        dest="offset",
        default="now",
        metavar="OFFSET",
        help="an offset, -1 or now (default)",
    )
    tail.add_argument(
        "--mode", choices=("long-poll", "sse"), default="long-poll", help="(default %(default)s)"
    )
    tail.add_argument("--json", action="store_true", help="JSON streams: one message per line")

    command("head", "print a stream's metadata: content type, next offset, closed, TTL or expiry")
    command("close", "close a stream: no more appends (prints its final offset)")
    command("delete", "delete a stream")


def _add_body_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("data", nargs="?", metavar="DATA", help=f"{what}; - reads stdin")
    parser.add_argument(
        "--data",
        dest="data_option",
        metavar="TEXT",
        help=f"{what}; --data=-x for text that starts with -",
    )
    parser.add_argument("--file", metavar="FILE", help=f"read the {what} from FILE (- for stdin)")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show upload progress on stderr (default: when stderr is a terminal)",
    )


def build_parser() -> argparse.ArgumentParser:
    """A parser of the client's commands alone, as `ds-trio` parses them."""
    parser = argparse.ArgumentParser(
        prog="ds-trio", epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def _upload(args: argparse.Namespace) -> Upload | None:
    given = [value for value in (args.data, args.data_option, args.file) if value is not None]
    if len(given) > 1:
        raise UsageError("give only one of DATA, --data and --file")
    if args.file is not None and args.file != "-":
        return Upload(path=Path(args.file), progress=args.progress)
    if args.file == "-" or args.data == "-":
        return Upload(progress=args.progress)
    text = args.data if args.data is not None else args.data_option
    return None if text is None else Upload(data=os.fsencode(text))  # argv's own bytes


def _create(args: argparse.Namespace) -> Command:
    headers = create_headers(
        args.content_type, ttl=args.ttl, expires_at=args.expires_at, closed=args.closed
    )
    return partial(session.create, headers=headers, upload=_upload(args))


def _append(args: argparse.Namespace) -> Command:
    upload = _upload(args)
    if upload is None and not args.close:
        raise UsageError("give DATA, --data TEXT, --file FILE or - for stdin (or --close alone)")
    producer = Producer.from_options(args.producer, args.epoch, args.seq)
    return partial(
        session.append,
        content_type=args.content_type,
        close=args.close,
        producer=producer,
        upload=upload,
    )


def _read(args: argparse.Namespace) -> Command:
    return partial(session.read, offset=args.offset, as_json=args.json)


_COMMANDS: Final[dict[str, Callable[[argparse.Namespace], Command]]] = {
    "create": _create,
    "append": _append,
    "read": _read,
    "head": lambda _: session.head,
    "close": lambda _: session.close,
    "delete": lambda _: session.delete,
}


async def wait_for_interrupt() -> None:
    """Return at the first SIGINT (Ctrl-C), which trio then delivers here, not as an exception."""
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async for _ in signals:
            return


async def execute(
    args: argparse.Namespace,
    console: Console,
    *,
    environ: Mapping[str, str],
    interrupted: Interrupted = wait_for_interrupt,
) -> int:
    """Run one parsed client command; its exit status. Errors end as one stderr line."""
    try:
        url = stream_url(args.target, args.server or environ.get(SERVER_ENV) or DEFAULT_SERVER)
        token = args.token if args.token is not None else environ.get(TOKEN_ENV)
        command = None if args.command == "tail" else _COMMANDS[args.command](args)
        async with Session.open(token or None) as client:
            if command is None:
                return await _tail(client, console, url, args, interrupted)
            return await command(client, console, url)
    except ClientError as exc:
        console.say(exc.message)
        return exc.code


async def _tail(
    client: Session, console: Console, url: str, args: argparse.Namespace, interrupted: Interrupted
) -> int:
    state = TailState(args.offset)
    follow = partial(session.tail, client, console, url, state, mode=args.mode, as_json=args.json)
    try:
        code = await _unless_interrupted(follow, interrupted)
    except Unavailable as exc:
        console.say(f"{exc.message}; resume with --from {state.offset}")
        return exc.code
    if code is None:
        console.say(f"interrupted; resume with --from {state.offset}")
        return Exit.INTERRUPTED
    return code


async def _unless_interrupted(
    work: Callable[[], Awaitable[Exit]], interrupted: Interrupted
) -> Exit | None:
    """`work`'s result, or None when `interrupted` returned first and `work` was cancelled."""
    outcome: list[Exit] = []
    failure: list[Exception] = []
    async with trio.open_nursery() as nursery:

        async def run_work() -> None:
            try:
                outcome.append(await work())
            except Exception as exc:  # noqa: BLE001 (re-raised below as itself, not in a group)
                failure.append(exc)
            nursery.cancel_scope.cancel()

        nursery.start_soon(run_work)
        await interrupted()
        nursery.cancel_scope.cancel()
    if failure:
        raise failure[0]
    return outcome[0] if outcome else None


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """`parser.parse_args(argv)`, also taking DATA after options (`create s --content-type T x`).

    argparse matches an optional positional as empty once an option follows the
    one before it, so a DATA given after options would be refused as unknown.
    """
    args, extra = parser.parse_known_args(list(argv))
    if len(extra) == 1 and getattr(args, "data", "given") is None and not extra[0].startswith("--"):
        args.data = extra[0]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


async def run(
    argv: Sequence[str],
    console: Console,
    *,
    environ: Mapping[str, str] | None = None,
    interrupted: Interrupted = wait_for_interrupt,
) -> int:
    """Parse and run a client command line (`["read", "chat"]`); its exit status."""
    try:
        args = parse_command_line(build_parser(), argv)
    except SystemExit as exc:  # argparse has printed the usage message
        return exc.code if isinstance(exc.code, int) else Exit.USAGE
    return await execute(
        args, console, environ=os.environ if environ is None else environ, interrupted=interrupted
    )


def main(args: argparse.Namespace) -> int:
    """`ds-trio <client command>` after `ds_trio.__main__` parsed it."""
    console = Console.from_sys()
    try:
        return trio.run(partial(execute, args, console, environ=os.environ))
    except KeyboardInterrupt:  # Ctrl-C outside a tail: nothing to resume
        console.say("interrupted")
        return Exit.INTERRUPTED
    except BrokenPipeError:  # `| head` stopped reading: stop too, and quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return Exit.BROKEN_PIPE
