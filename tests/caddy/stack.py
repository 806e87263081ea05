"""Real Caddy in front of a real ds_trio process, configured by the repo's Caddyfile.

The test Caddyfile is built from the top-level `Caddyfile`: its snippets and
the body of its production site are used verbatim, served at
`http://127.0.0.1:P` (plain) and `https://127.0.0.1:Q` (`tls internal`), and
the commented load-balancer variant is uncommented and served at
`http://127.0.0.1:R`. Only the global options differ: no admin API, no
redirect listener on :80, no system trust store, HTTP/1.1 and HTTP/2 only.

Rules: loopback only; ports are picked by binding port 0 and closing; Caddy's
state (its internal CA included) lives in a temporary directory given to it as
HOME/XDG_DATA_HOME/XDG_CONFIG_HOME and removed afterwards; every wait is
bounded; only the processes started here are stopped, by their handles.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import httpx
import pytest

from ..e2e.conformance import ServerProcess

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO_CADDYFILE: Final = Path(__file__).resolve().parents[2] / "Caddyfile"
STARTUP_TIMEOUT: Final = 30.0  # seconds Caddy gets to listen and answer
STOP_TIMEOUT: Final = 15.0  # seconds Caddy gets to exit after SIGTERM
POLL_INTERVAL: Final = 0.05  # seconds between start-up probes
SITE_HEADER: Final = "{$DS_TRIO_DOMAIN:streams.example.com} {"
LB_SITE_HEADER: Final = ":4437 {"


def caddy_binary() -> str:
    """The `caddy` executable; fails the test (never skips) when it is missing."""
    path = shutil.which("caddy")
    if path is None:
        pytest.fail(
            "caddy is not installed: these tests need Debian's caddy package "
            "(`apt-get install caddy`; .ci/run installs it)",
            pytrace=False,
        )
    return path


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that were free a moment ago."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


# --- Adapting the repo's Caddyfile ------------------------------------------


def top_level_blocks(text: str) -> dict[str, str]:
    """Each top-level `header {` ... `}` block of a Caddyfile: header -> body."""
    blocks: dict[str, str] = {}
    header: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        if header is None:
            if line.endswith("{") and line[:1] not in ("", "#", "\t", " "):
                header, body = line, []
        elif line == "}":
            blocks[header] = "\n".join(body)
            header = None
        else:
            body.append(line)
    assert header is None, f"unterminated block {header!r} in the Caddyfile"
    return blocks


def commented_block(text: str, header: str) -> str:
    """The body of a block that is commented out with `# ` line prefixes."""
    lines = text.splitlines()
    start = lines.index(f"# {header}")
    body: list[str] = []
    for line in lines[start + 1 :]:
        if line == "# }":
            return "\n".join(body)
        assert line.startswith("# "), f"not a commented Caddyfile line: {line!r}"
        body.append(line[2:])
    raise AssertionError(f"unterminated commented block {header!r}")


def snippets(blocks: dict[str, str]) -> str:
    return "\n".join(f"{h}\n{b}\n}}" for h, b in blocks.items() if h.startswith("("))


@dataclass(frozen=True)
class CaddyPorts:
    http: int  # the production site over plain HTTP
    https: int  # the production site over HTTPS (tls internal)
    lb: int  # the load-balancer variant (plain HTTP)


def caddyfile_for_tests(ports: CaddyPorts, source: Path = REPO_CADDYFILE) -> str:
    """The repo's Caddyfile adapted to test ports, `tls internal` and no admin API."""
    text = source.read_text()
    blocks = top_level_blocks(text)
    assert SITE_HEADER in blocks, f"{source} has no `{SITE_HEADER}` site"
    site = blocks[SITE_HEADER]
    lb_site = commented_block(text, LB_SITE_HEADER)
    return f"""{{
\tadmin off
\tskip_install_trust
\tauto_https disable_redirects
\thttp_port {ports.http}
\thttps_port {ports.https}
\tgrace_period 2s
\tservers {{
\t\tprotocols h1 h2
\t}}
}}

{snippets(blocks)}

http://127.0.0.1:{ports.http} {{
{site}
}}

https://127.0.0.1:{ports.https} {{
\ttls internal
{site}
}}

http://127.0.0.1:{ports.lb} {{
{lb_site}
}}
"""


def caddy_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """A minimal environment that keeps all of Caddy's state in `state_dir`."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(state_dir / "home"),
        "XDG_DATA_HOME": str(state_dir / "data"),
        "XDG_CONFIG_HOME": str(state_dir / "config"),
    }
    env.update(extra)
    return env


def run_caddy(
    *args: str, env: dict[str, str], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """A one-shot caddy command (validate, adapt), bounded by `timeout`."""
    command = [caddy_binary(), *args]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


# --- Processes --------------------------------------------------------------


class CaddyProcess:
    """`caddy run` on a config file; its output goes to a log file."""

    def __init__(self, config: Path, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [caddy_binary(), "run", "--config", str(config), "--adapter", "caddyfile"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def access_log(self) -> list[dict[str, object]]:
        """Caddy's JSON access-log entries (the `log` directive of the site)."""
        entries = []
        for line in self.log().splitlines():
            if line.startswith("{") and '"logger":"http.log.access' in line:
                entries.append(json.loads(line))
        return entries

    def check_running(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"caddy exited with {self.process.returncode}:\n{self.log()}")

    def stop(self) -> int:
        """SIGTERM (graceful) and wait, SIGKILL if it hangs; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)
        self._log.close()
        return self.process.returncode


@dataclass
class ProxiedServer:
    """ds_trio behind Caddy: the public URLs and the upstream one."""

    ds: ServerProcess
    caddy: CaddyProcess
    ports: CaddyPorts
    state_dir: Path  # Caddy's HOME/XDG dirs; removed afterwards
    work_dir: Path  # scratch space for the test (reports and the like)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.ports.https}"

    @property
    def lb_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.lb}"

    @property
    def upstream_url(self) -> str:
        return self.ds.base_url

    @property
    def root_ca(self) -> Path:
        """Caddy's internal CA certificate, which signs the HTTPS site's cert."""
        return self.state_dir / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies the HTTPS site against Caddy's internal CA (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.root_ca))


def _wait_until_ready(server: ProxiedServer) -> None:
    """Bounded start-up poll: each site answers /healthz through the proxy."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    pending = {server.http_url: False, server.lb_url: False, server.https_url: True}
    last_error: Exception | None = None
    while pending:
        server.caddy.check_running()
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"caddy did not serve {sorted(pending)} within {STARTUP_TIMEOUT}s "
                f"(last error: {last_error!r}):\n{server.caddy.log()}"
            )
        for url, tls in list(pending.items()):
            if tls and not server.root_ca.exists():
                continue
            verify: ssl.SSLContext | bool = server.ssl_context() if tls else True
            try:
                response = httpx.get(f"{url}/healthz", verify=verify, timeout=2.0)
            except (httpx.TransportError, ssl.SSLError) as exc:
                last_error = exc
                continue
            if response.status_code == 200:
                del pending[url]
            else:
                last_error = RuntimeError(f"{url}/healthz: {response.status_code} {response.text}")
        if pending:
            time.sleep(POLL_INTERVAL)


@contextlib.contextmanager
def proxied_server(*ds_args: str) -> Iterator[ProxiedServer]:
    """Start ds_trio (trusting 127.0.0.1 as its proxy) and Caddy in front of it.

    On the way out both are stopped and checked: Caddy exits cleanly, ds_trio
    exits 0 and never answered 500 or logged a traceback.
    """
    caddy_binary()
    with tempfile.TemporaryDirectory(prefix="ds_trio_caddy_") as tmp:
        state_dir = Path(tmp) / "caddy"
        work_dir = Path(tmp) / "work"
        for directory in (state_dir / "home", state_dir / "data", state_dir / "config", work_dir):
            directory.mkdir(parents=True)
        ds = ServerProcess("--trusted-proxies", "127.0.0.1", "--access-log", *ds_args)
        caddy: CaddyProcess | None = None
        try:
            ports = CaddyPorts(*free_ports(3))
            config = work_dir / "Caddyfile"
            config.write_text(caddyfile_for_tests(ports))
            upstream = ds.base_url.removeprefix("http://")
            env = caddy_env(state_dir, DS_TRIO_UPSTREAM=upstream)
            caddy = CaddyProcess(config, env, work_dir / "caddy.log")
            server = ProxiedServer(ds, caddy, ports, state_dir, work_dir)
            _wait_until_ready(server)
            yield server
        finally:
            caddy_code = caddy.stop() if caddy is not None else 0
            ds_code = ds.stop()
            if caddy is not None:
                _print_tail("caddy", caddy.log())
            _print_tail("ds_trio", "".join(ds.output))
        ds_log = "".join(ds.output)
        answered = re.findall(r'" (\d{3}) ', ds_log)
        assert "500" not in answered, ds_log[-5000:]
        assert "Traceback" not in ds_log, ds_log[-5000:]
        assert ds_code == 0, f"ds_trio exited with {ds_code}"
        assert caddy_code == 0, f"caddy exited with {caddy_code}"


def _print_tail(name: str, log: str, lines: int = 40) -> None:
    """Shown by pytest only when the test fails."""
    tail = "\n".join(log.splitlines()[-lines:])
    print(f"--- last {lines} lines of the {name} log ---\n{tail}")
