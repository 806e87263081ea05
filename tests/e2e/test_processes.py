"""The server as a process: data-dir ownership, Hypercorn's own CLI, and a
SIGTERM with many live readers and a write in flight."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from .conformance import ServerProcess, running_hypercorn

TEXT = {"Content-Type": "text/plain"}
WRITE_BYTES = 48 << 20


def test_a_second_server_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    owner = ServerProcess("--data-dir", str(data))
    try:
        second = subprocess.run(
            [sys.executable, "-m", "ds_trio", "dev", "--port", "0", "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 2
        assert f"in use by another ds_trio server (pid {owner.process.pid})" in second.stderr
        with httpx.Client() as client:
            assert client.put(f"{owner.base_url}/v1/stream/s", headers=TEXT).status_code == 201
    finally:
        assert owner.stop() == 0


async def test_hypercorn_serves_the_asgi_app_from_the_environment(tmp_path: Path) -> None:
    env = dict(os.environ, DS_TRIO_DATA_DIR=str(tmp_path / "data"), DS_TRIO_LONG_POLL_TIMEOUT="200ms")
    async with running_hypercorn(env, "--bind", "127.0.0.1:0") as process:
        assert process.stdout is not None
        seen = b""
        with trio.fail_after(30):
            while (match := re.search(rb"Running on (http://\S+)", seen)) is None:
                chunk = await process.stdout.receive_some(4096)
                assert chunk, seen.decode()
                seen += chunk
        base = match.group(1).decode()
        async with httpx.AsyncClient(timeout=10) as client:
            created = await client.put(f"{base}/v1/stream/s", headers=TEXT, content=b"hello")
            assert created.status_code == 201
            tail = created.headers["stream-next-offset"]
            poll = await client.get(f"{base}/v1/stream/s", params={"offset": tail, "live": "long-poll"})
            assert poll.status_code == 204  # the environment's 200ms timeout applies
            assert (await client.get(f"{base}/readyz")).text.strip() == "ready"
    assert process.returncode == 0
    reopened = ServerProcess("--data-dir", str(tmp_path / "data"))
    try:
        with httpx.Client() as client:
            assert client.get(f"{reopened.base_url}/v1/stream/s").content == b"hello"
    finally:
        reopened.stop()


async def test_sigterm_releases_live_readers_and_settles_the_write_in_flight(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServerProcess(
        "--data-dir", str(data), "--long-poll-timeout", "60s", "--sse-reconnect-interval", "60s",
        "--max-append-bytes", "80MiB", "--shutdown-grace", "30s", "--access-log",
    )
    stream = f"{server.base_url}/v1/stream/s"
    outcomes: dict[str, list[object]] = {"long-poll": [], "sse": [], "write": []}
    try:
        exit_code = await _release_under_sigterm(server, stream, outcomes)
    except BaseException:
        print("".join(server.output[-40:]))  # the server's view, for the failure report
        raise
    finally:
        server.stop()
    assert exit_code == 0
    [write_outcome] = outcomes["write"]
    # Each reader ended: at the tail (204; SSE: the opening control event, then
    # a clean end), or with the write's data if it committed before the release.
    assert set(outcomes["long-poll"]) <= ({204, 200} if write_outcome == 204 else {204})
    # SSE ends after the next control event once shutdown starts: the opening one,
    # or the one after the first chunk of the write's data.
    assert set(outcomes["sse"]) <= ({1, 2} if write_outcome == 204 else {1})
    assert len(outcomes["long-poll"]) == len(outcomes["sse"]) == 100
    reopened = ServerProcess("--data-dir", str(data))
    try:
        with httpx.Client(timeout=30) as client:
            head = client.head(stream.replace(server.base_url, reopened.base_url))
    finally:
        reopened.stop()
    durable = head.headers["stream-next-offset"] != outcomes["tail"][0]
    assert durable == (write_outcome == 204), write_outcome


async def _release_under_sigterm(
    server: ServerProcess, stream: str, outcomes: dict[str, list[object]]
) -> int:
    limits = httpx.Limits(max_connections=400)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        tail = (await client.put(stream, headers=TEXT, content=b"x")).headers["stream-next-offset"]
        outcomes["tail"] = [tail]

        async def long_poll() -> None:
            response = await client.get(stream, params={"offset": tail, "live": "long-poll"})
            outcomes["long-poll"].append(response.status_code)

        async def sse() -> None:
            params = {"offset": tail, "live": "sse"}
            async with client.stream("GET", stream, params=params) as response:
                body = b"".join([chunk async for chunk in response.aiter_bytes()])
            outcomes["sse"].append(body.count(b"event: control"))

        async def write() -> None:
            try:
                response = await client.post(stream, headers=TEXT, content=b"w" * WRITE_BYTES)
                outcomes["write"].append(response.status_code)
            except httpx.TransportError:
                outcomes["write"].append("unanswered")

        async def watchers() -> float:
            text = (await client.get(f"{server.base_url}/metrics")).text
            found = re.findall(r'ds_trio_live_readers\{mode="[a-z-]+"\} (\S+)', text)
            return sum(float(value) for value in found)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for _ in range(100):
                    nursery.start_soon(long_poll)
                    nursery.start_soon(sse)
                while await watchers() < 200:  # noqa: ASYNC110 - another process's state
                    await trio.sleep(0.05)
                nursery.start_soon(write)
                await trio.sleep(0.2)  # let the large body start flowing
                server.process.send_signal(signal.SIGTERM)
                return await trio.to_thread.run_sync(server.process.wait, 30)
    raise AssertionError("unreachable")


def test_a_busy_port_is_a_one_line_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "ds_trio", "dev", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use (try --port 0)" in result.stderr
    assert "Traceback" not in result.stderr


def test_server_processes_tune_the_garbage_collector() -> None:
    # In a child: the test process must keep the default collector.
    probe = (
        "import gc; from ds_trio.server import GC_THRESHOLDS, tune_gc; "
        "before = gc.get_freeze_count(); tune_gc(); "
        "assert gc.get_threshold() == GC_THRESHOLDS, gc.get_threshold(); "
        "assert gc.get_freeze_count() > max(before, 10000), gc.get_freeze_count(); "
        "print('tuned')"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "tuned"
