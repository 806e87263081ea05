"""The command-line client: `ds-trio create|append|read|tail|head|close|delete`.

Layers, each importing only those before it: `model`, `sse` and `progress`
are pure (no I/O; from the server they use only `ds_trio.protocol`'s
parsers); `console` and `upload` are stdio and request bodies; `session`
does the HTTP with httpx; `cli` parses command lines.
"""

from __future__ import annotations

from .cli import COMMANDS as COMMANDS
from .cli import add_commands as add_commands
from .cli import main as main
from .cli import parse_command_line as parse_command_line
from .cli import run as run
from .model import EXIT_CODES_HELP as EXIT_CODES_HELP
from .model import Exit as Exit

__all__ = [
    "COMMANDS",
    "EXIT_CODES_HELP",
    "Exit",
    "add_commands",
    "main",
    "parse_command_line",
    "run",
]
