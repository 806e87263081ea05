"""The direction of imports: protocol <- store <- live/subscriptions <- http <- workers <- server.

The pure core must stay pure (no trio, quart, hypercorn, lmdb, httpx or
cryptography), and no layer may reach up into one built on it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ds_trio"
IO_LIBRARIES = {"trio", "quart", "quart_trio", "hypercorn", "lmdb", "httpx", "cryptography", "werkzeug"}
# package -> ds_trio packages it must never import
FORBIDDEN = {
    "protocol": {"store", "live", "http", "server", "config", "subscriptions", "metrics", "asgi",
                 "auth", "client"},
    "store": {"live", "http", "server", "config", "subscriptions", "metrics", "asgi", "auth",
              "client"},
    "live": {"store", "http", "server", "config", "subscriptions", "client"},
    "subscriptions": {"store", "http", "server", "config", "client"},
    "auth": {"store", "live", "http", "server", "config", "subscriptions", "workers", "asgi",
             "client"},
    "http": {"workers", "server", "asgi", "client"},
    "workers": {"server", "asgi", "client"},
    # The command-line client talks to a server over HTTP only; of ours it uses the protocol.
    "client": {"store", "live", "http", "server", "config", "subscriptions", "workers", "auth", "asgi"},
}
CLIENT_CORE = ("model.py", "sse.py", "progress.py")  # the client's pure part


def _imports(path: Path) -> set[str]:
    """Absolute module names `path` imports (relative imports resolved)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                found.add(node.module)
    return found


def _modules(layer: str) -> list[Path]:
    root = PACKAGE / layer
    return sorted(root.rglob("*.py")) if root.is_dir() else [PACKAGE / f"{layer}.py"]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_only_point_down(layer: str) -> None:
    wrong = []
    for path in _modules(layer):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "ds_trio" and len(parts) > 1 and parts[1] in FORBIDDEN[layer]:
                wrong.append(f"{path.name} imports {name}")
    assert wrong == []


def test_the_protocol_core_does_no_io() -> None:
    wrong = [
        f"{path.name} imports {name}"
        for path in _modules("protocol")
        for name in _imports(path)
        if name.split(".")[0] in IO_LIBRARIES
    ]
    assert wrong == []


def test_the_client_core_does_no_io() -> None:
    wrong = [
        f"{path.name} imports {name}"
        for path in _modules("client")
        if path.name in CLIENT_CORE
        for name in _imports(path)
        if name.split(".")[0] in IO_LIBRARIES
    ]
    assert wrong == []
