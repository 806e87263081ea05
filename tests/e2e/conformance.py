"""Running the official conformance suite against a real ds_trio process."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

SUITE_DIR = Path(__file__).resolve().parent.parent / "conformance"
_URL_RE = re.compile(r"streams at (http://\S+?)/v1/stream/")


@dataclass
class SuiteResult:
    """Per-test outcomes of one conformance run, grouped by top-level describe."""

    outcomes: dict[str, str] = field(default_factory=dict)  # "Group > ... > name" -> status

    def counts(self, predicate=lambda title: True) -> Counter[str]:
        return Counter(status for title, status in self.outcomes.items() if predicate(title))

    def failures(self, predicate=lambda title: True) -> list[str]:
        return sorted(t for t, s in self.outcomes.items() if predicate(t) and s != "passed")


class ServerProcess:
    """`python -m ds_trio dev --port 0 ARGS` in a child process (`command` for another).

    A reader thread drains its output (so a chatty server never blocks on a
    full pipe) and signals when the server has printed its URL. The server
    runs in a session of its own, so `kill` takes its workers with it.
    """

    def __init__(self, *args: str, startup_timeout: float = 30.0, command: str = "dev") -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ds_trio", command, "--host", "127.0.0.1", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.output: list[str] = []
        self._new_output = threading.Condition()
        self._ready = threading.Event()
        self.base_url = ""
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        if not self._ready.wait(startup_timeout) or not self.base_url:
            self.kill()
            raise RuntimeError("ds_trio did not report its URL:\n" + "".join(self.output))

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._new_output:
                self.output.append(line)
                self._new_output.notify_all()
            match = _URL_RE.search(line)
            if match and not self.base_url:
                self.base_url = match.group(1)
                self._ready.set()
        self._ready.set()  # the process ended

    def wait_for_output(self, pattern: str, timeout: float, *, after: int = 0) -> re.Match[str]:
        """The first match of `pattern` in an output line from line `after` on, waiting for it."""
        compiled = re.compile(pattern)
        seen = after
        with self._new_output:
            while True:
                for line in self.output[seen:]:
                    if match := compiled.search(line):
                        return match
                seen = len(self.output)
                if not self._new_output.wait(timeout):
                    raise TimeoutError(f"no {pattern!r} in the output:\n" + "".join(self.output[-40:]))

    def _finish(self) -> None:
        self._reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM the server and wait for it; returns its exit code."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._finish()

    def wait(self, timeout: float) -> int:
        """Wait for the server to exit by itself (after a signal sent elsewhere); its exit code."""
        try:
            return self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is not None:
                self._finish()

    def kill(self) -> int:
        """SIGKILL the server and every process of its session; returns its exit code."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        code = self.process.wait()
        self._finish()
        return code


@asynccontextmanager
async def running_hypercorn(env: dict[str, str], *args: str) -> AsyncIterator[trio.Process]:
    """`hypercorn --worker-class trio ARGS ds_trio.asgi:app`, stdout piped; SIGTERM at the end.

    Check `process.returncode` after the block.
    """
    command = [sys.executable, "-m", "hypercorn", "--worker-class", "trio", *args, "ds_trio.asgi:app"]
    process = await trio.lowlevel.open_process(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await process.wait()
        assert process.stdout is not None
        await process.stdout.aclose()


def run_suite(
    base_url: str, report: Path, timeout: float = 1200.0, token: str | None = None
) -> SuiteResult:
    """Run the pinned suite (vitest) against `base_url`; parse its JSON report.

    With `token`, every request the suite sends carries it (auth-setup.mjs).
    """
    npx = shutil.which("npx")
    if npx is None or not (SUITE_DIR / "node_modules").is_dir():
        raise RuntimeError(
            "the conformance suite is not installed: run `npm ci` in tests/conformance "
            "(scripts/test does this)"
        )
    env = dict(os.environ, DS_TRIO_CONFORMANCE_URL=base_url, DS_TRIO_LONG_POLL_TIMEOUT_MS="500")
    env.pop("DS_TRIO_CONFORMANCE_TOKEN", None)
    if token is not None:
        env["DS_TRIO_CONFORMANCE_TOKEN"] = token
    subprocess.run(
        [npx, "vitest", "run", "--reporter=dot", "--reporter=json", f"--outputFile.json={report}"],
        cwd=SUITE_DIR,
        env=env,
        timeout=timeout,
        check=False,
    )
    data = json.loads(report.read_text())
    result = SuiteResult()
    for test_file in data["testResults"]:
        for test in test_file["assertionResults"]:
            title = " > ".join([*test["ancestorTitles"], test["title"]])
            result.outcomes[title] = test["status"]
    if not result.outcomes:
        raise RuntimeError("the conformance suite reported no tests")
    return result
