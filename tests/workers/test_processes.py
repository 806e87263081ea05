"""Servers of two worker processes on one LMDB data dir, as real processes.

Each worker also listens on a private loopback port (published in the data
dir), so a test can put a reader in one worker and the writer in the other.
The long-poll timeout is 30 s in these tests: a reader answered with data in
well under that was woken across workers, not timed out.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from ds_trio.workers.bus import read_peers

from ..e2e.conformance import running_hypercorn
from .helpers import TEXT, leader_pid, live_readers, start_workers, summary, until_reading, worker_urls

ROUNDS = 30  # cross-worker wake-ups measured per test
WAKE_BOUND = 5.0  # seconds: far below the 30 s long-poll timeout, far above any real wake-up


@pytest.fixture(name="two_workers")
def _two_workers(tmp_path: Path):
    server = start_workers(tmp_path / "data", "--long-poll-timeout", "30s")
    try:
        yield server, tmp_path / "data"
    finally:
        assert server.stop() == 0


def _pair(data: Path) -> tuple[str, str]:
    urls = list(worker_urls(data).values())
    assert len(urls) == 2, urls
    return urls[0], urls[1]


async def test_a_long_poll_in_one_worker_wakes_on_an_append_in_the_other(two_workers) -> None:
    _, data = two_workers
    first, second = _pair(data)
    latencies: list[float] = []
    async with httpx.AsyncClient(timeout=40) as http:
        created = await http.put(f"{first}/v1/stream/lp", headers=TEXT)
        offset = created.headers["stream-next-offset"]
        for index in range(ROUNDS):
            reader, writer = (first, second) if index % 2 == 0 else (second, first)
            answered: dict[str, object] = {}

            async def poll(reader: str = reader, offset: str = offset) -> None:
                response = await http.get(
                    f"{reader}/v1/stream/lp", params={"offset": offset, "live": "long-poll"}
                )
                answered["at"], answered["response"] = time.perf_counter(), response

            async with trio.open_nursery() as nursery:
                nursery.start_soon(poll)
                await until_reading(http, reader, "long-poll")
                acked = await http.post(f"{writer}/v1/stream/lp", content=b"m%d;" % index, headers=TEXT)
                acked_at = time.perf_counter()
                assert acked.status_code == 204
            response = answered["response"]
            assert isinstance(response, httpx.Response) and response.status_code == 200
            assert response.content == b"m%d;" % index
            latencies.append(float(answered["at"]) - acked_at)  # type: ignore[arg-type]
            offset = response.headers["stream-next-offset"]
    print(f"\ncross-worker long-poll wake after the writer's ack: {summary(latencies)}")
    assert max(latencies) < WAKE_BOUND


async def _sse_data(response: httpx.Response, send: trio.MemorySendChannel[tuple[str, float]]) -> None:
    """Send each data event's text, with when it arrived."""
    kind = ""
    async with send:
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:") and kind == "data":
                await send.send((line[5:].lstrip(), time.perf_counter()))


async def test_an_sse_reader_in_one_worker_sees_every_append_made_in_the_other(two_workers) -> None:
    _, data = two_workers
    reader, writer = _pair(data)
    received: list[str] = []
    latencies: list[float] = []
    async with httpx.AsyncClient(timeout=40) as http:
        await http.put(f"{writer}/v1/stream/sse", headers=TEXT)
        async with trio.open_nursery() as nursery:
            async with http.stream(
                "GET", f"{reader}/v1/stream/sse", params={"offset": "-1", "live": "sse"}
            ) as response:
                assert response.status_code == 200
                send, events = trio.open_memory_channel[tuple[str, float]](ROUNDS)
                nursery.start_soon(_sse_data, response, send)
                await until_reading(http, reader, "sse")
                for index in range(ROUNDS):
                    acked = await http.post(f"{writer}/v1/stream/sse", content=f"e{index}", headers=TEXT)
                    acked_at = time.perf_counter()
                    assert acked.status_code == 204
                    with trio.fail_after(WAKE_BOUND):
                        text, arrived_at = await events.receive()
                    received.append(text)
                    latencies.append(arrived_at - acked_at)
                nursery.cancel_scope.cancel()
    assert received == [f"e{i}" for i in range(ROUNDS)]
    print(f"\ncross-worker SSE event after the writer's ack: {summary(latencies)}")


async def test_close_delete_and_expiry_in_one_worker_release_readers_in_the_other(two_workers) -> None:
    _, data = two_workers
    first, second = _pair(data)
    leader = leader_pid(data)
    follower = next(url for pid, url in worker_urls(data).items() if pid != leader)
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=40) as http:
        for name in ("closing", "deleting"):
            await http.put(f"{first}/v1/stream/{name}", headers=TEXT)
        tail = (await http.head(f"{first}/v1/stream/closing")).headers["stream-next-offset"]
        # Expiry is swept by the leader; the reader waits in the other worker.
        await http.put(f"{first}/v1/stream/expiring", headers={**TEXT, "Stream-TTL": "1"})
        outcomes: dict[str, httpx.Response] = {}

        async def poll(name: str, worker: str) -> None:
            outcomes[name] = await http.get(
                f"{worker}/v1/stream/{name}", params={"offset": tail, "live": "long-poll"}
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll, "closing", second)
            nursery.start_soon(poll, "expiring", follower)
            await until_reading(http, second, "long-poll", 1)
            async with http.stream(
                "GET", f"{second}/v1/stream/deleting", params={"offset": tail, "live": "sse"}
            ) as sse:
                await until_reading(http, second, "sse")
                closed = await http.post(f"{first}/v1/stream/closing", headers={"Stream-Closed": "true"})
                assert closed.status_code == 204
                assert (await http.delete(f"{first}/v1/stream/deleting")).status_code == 204
                with trio.fail_after(WAKE_BOUND):
                    async for _ in sse.aiter_bytes():
                        pass  # ends when the server ends the response
    assert outcomes["closing"].status_code == 204
    assert outcomes["closing"].headers["stream-closed"] == "true"
    assert outcomes["expiring"].status_code in (204, 404)
    assert time.perf_counter() - started < 15  # none of them waited out its 30 s


async def test_when_the_leader_dies_the_other_worker_takes_over_and_a_new_one_starts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_workers(data, "--long-poll-timeout", "30s")
    try:
        base = server.base_url + "/v1/stream"
        leader = leader_pid(data)
        assert leader in worker_urls(data)
        survivor_pid, survivor = next((p, u) for p, u in worker_urls(data).items() if p != leader)
        subscription = {"type": "pull-wake", "streams": ["work"], "wake_stream": "wakes"}
        async with httpx.AsyncClient(timeout=40) as http:
            await http.put(f"{base}/work", headers=TEXT, content=b"job")
            made = await http.put(f"{base}/__ds/subscriptions/sub", json=subscription)
            assert made.status_code == 201
            await http.put(f"{base}/ttl", headers={**TEXT, "Stream-TTL": "2"})
            tail = (await http.head(f"{base}/ttl")).headers["stream-next-offset"]
            marker = len(server.output)
            released: list[httpx.Response] = []

            async def wait_on_expiring() -> None:
                released.append(
                    await http.get(f"{survivor}/v1/stream/ttl", params={"offset": tail, "live": "long-poll"})
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait_on_expiring)
                await until_reading(http, survivor, "long-poll")
                os.kill(leader, signal.SIGKILL)
                # The survivor takes over: it sweeps the expired stream and releases its reader.
            assert released[0].status_code in (204, 404)
            await trio.to_thread.run_sync(
                partial(server.wait_for_output, r"takes over the subscriptions", 10, after=marker)
            )
            assert leader_pid(data) == survivor_pid
            # The subscriptions answer on the public port, whichever worker takes the request.
            for _ in range(20):
                got = await http.get(f"{base}/__ds/subscriptions/sub")
                assert got.status_code == 200, got.text
                assert got.json()["subscription_id"] == "sub"
            await http.post(f"{base}/work", headers=TEXT, content=b"more")
            claimed = await http.post(f"{base}/__ds/subscriptions/sub/claim", json={"worker": "w"})
            assert claimed.status_code == 200, claimed.text
        restarted = await trio.to_thread.run_sync(
            partial(server.wait_for_output, r"worker \d serving \(pid (\d+)\)", 30, after=marker)
        )
        assert int(restarted.group(1)) != leader
        assert set(worker_urls(data)) == {survivor_pid, int(restarted.group(1))}
    finally:
        assert server.stop() == 0


def test_another_server_on_the_data_dir_of_a_running_one_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    owner = start_workers(data)
    try:
        for command in (["dev"], ["serve", "--workers", "2"]):
            second = subprocess.run(
                [sys.executable, "-m", "ds_trio", *command, "--port", "0", "--data-dir", str(data)],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert second.returncode == 2, second.stderr
            assert f"in use by another ds_trio server (pid {owner.process.pid})" in second.stderr
        assert len(worker_urls(data)) == 2
    finally:
        assert owner.stop() == 0


def test_the_memory_store_refuses_more_than_one_worker() -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "ds_trio", "serve", "--workers", "2", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2
    assert "the in-memory store lives in one process" in refused.stderr


def test_sigterm_stops_every_worker_and_their_registrations_go(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_workers(data, workers=3)
    pids = set(worker_urls(data))
    assert len(pids) == 3
    assert server.stop() == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert read_peers(data) == {}
    assert leader_pid(data) is None  # the leader's secret goes with it
    log = "".join(server.output)
    assert "Traceback" not in log and "restarting" not in log


async def test_hypercorn_workers_join_one_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = dict(os.environ, DS_TRIO_DATA_DIR=str(data), DS_TRIO_LONG_POLL_TIMEOUT="30s")
    async with running_hypercorn(env, "--workers", "2", "--bind", "127.0.0.1:0") as process:
        assert process.stdout is not None
        seen = b""
        with trio.fail_after(30):
            while len(worker_urls(data)) < 2 or leader_pid(data) is None:
                chunk = await process.stdout.receive_some(4096)
                assert chunk, seen.decode()
                seen += chunk
        reader, writer = _pair(data)
        async with httpx.AsyncClient(timeout=40) as http:
            created = await http.put(f"{writer}/v1/stream/h", headers=TEXT)
            tail = created.headers["stream-next-offset"]
            answered: list[httpx.Response] = []

            async def poll() -> None:
                answered.append(
                    await http.get(f"{reader}/v1/stream/h", params={"offset": tail, "live": "long-poll"})
                )

            with trio.fail_after(WAKE_BOUND * 2):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(poll)
                    await until_reading(http, reader, "long-poll")
                    await http.post(f"{writer}/v1/stream/h", content=b"across", headers=TEXT)
            assert answered[0].status_code == 200 and answered[0].content == b"across"
            assert await live_readers(http, reader, "long-poll") == 0
    assert process.returncode == 0


def test_hypercorn_workers_refuse_to_share_an_in_memory_store() -> None:
    command = [sys.executable, "-m", "hypercorn", "--worker-class", "trio", "--workers", "2"]
    env = {k: v for k, v in os.environ.items() if k != "DS_TRIO_DATA_DIR"}
    ended = subprocess.run(
        [*command, "--bind", "127.0.0.1:0", "ds_trio.asgi:app"],
        env=env, capture_output=True, text=True, timeout=60, start_new_session=True,
    )  # fmt: skip
    # One worker refuses with one line and exit status 2; Hypercorn's master then
    # stops the other (its own exit status is Hypercorn's business: 0 in 0.18).
    output = ended.stdout + ended.stderr
    assert "ds_trio cannot start: the in-memory store lives in one process" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_data_dir_that_cannot_be_created_is_named_in_one_line(tmp_path: Path, workers: str) -> None:
    (tmp_path / "file").write_text("")
    refused = subprocess.run(
        [sys.executable, "-m", "ds_trio", "serve", "--workers", workers, "--port", "0",
         "--data-dir", str(tmp_path / "file" / "data")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f"ds-trio: cannot use the data dir: cannot use {tmp_path / 'file' / 'data'}: Not a directory"
    )


def test_a_worker_that_cannot_start_stops_the_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("not a data dir")
    refused = subprocess.run(
        [sys.executable, "-m", "ds_trio", "serve", "--workers", "2", "--port", "0", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert re.search(r"not empty and is not a ds_trio data directory", refused.stderr)
    assert sorted(os.listdir(data)) == ["notes.txt"]


async def test_a_client_cannot_pose_as_a_forwarding_worker(tmp_path: Path) -> None:
    settings = tmp_path / "ds_trio.toml"
    settings.write_text("webhook_allow_http_loopback = true\n")
    data = tmp_path / "data"
    server = start_workers(data, "--config", str(settings))
    forged = {"DS-Trio-Forward": "guess", "DS-Trio-Base-Url": "http://evil.example"}
    try:
        async with httpx.AsyncClient(timeout=20) as http:
            for index, worker in enumerate(worker_urls(data).values()):  # the leader, and the other
                made = await http.put(
                    f"{worker}/v1/stream/__ds/subscriptions/hook-{index}",
                    json={"type": "webhook", "streams": ["s"], "webhook": {"url": "http://127.0.0.1:9/hook"}},
                    headers=forged,
                )
                assert made.status_code == 201, made.text
                jwks_url = made.json()["webhook"]["signing"]["jwks_url"]
                assert jwks_url == f"{worker}/v1/stream/__ds/jwks.json"
    finally:
        assert server.stop() == 0


async def test_sigterm_to_the_whole_process_group_releases_every_reader(tmp_path: Path) -> None:
    """What systemd does by default: every process gets SIGTERM, then the supervisor passes on its own."""
    data = tmp_path / "data"
    server = start_workers(data, "--long-poll-timeout", "30s")
    readers = 10
    answers: list[int] = []
    try:
        base = server.base_url + "/v1/stream"
        async with httpx.AsyncClient(timeout=40, limits=httpx.Limits(max_connections=50)) as http:
            tail = (await http.put(f"{base}/g", headers=TEXT)).headers["stream-next-offset"]

            async def poll() -> None:
                response = await http.get(f"{base}/g", params={"offset": tail, "live": "long-poll"})
                answers.append(response.status_code)

            async with trio.open_nursery() as nursery:
                for _ in range(readers):
                    nursery.start_soon(poll)
                with trio.fail_after(10):
                    while sum([await live_readers(http, url, "long-poll") for url in worker_urls(data).values()]) < readers:
                        await trio.sleep(0.005)  # asking the workers over HTTP: no event to wait on
                os.killpg(server.process.pid, signal.SIGTERM)
        exit_code = await trio.to_thread.run_sync(server.wait, 30)
    finally:
        if server.process.poll() is None:
            server.kill()
    assert exit_code == 0
    assert answers == [204] * readers
    assert read_peers(data) == {}
    log = "".join(server.output)
    assert log.count("shutting down: releasing") == 2 and "restarting" not in log
