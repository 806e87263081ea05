"""SIGKILL one worker of a two-worker server, again and again, under idempotent writers.

Each writer is an idempotent producer on its own stream that keeps appending
through the public port; when a request dies with its worker, it retries the
same (id, epoch, seq) until answered, as a producer client does. The
supervisor restarts each killed worker. Checks:

- every retry is answered 200 (stored now) or 204 (stored before), never 409;
- each stream holds exactly the acknowledged records, once each, in order,
  also after a full restart;
- the surviving worker kept serving: appends were acknowledged while only it ran.

The seed is printed (`crash seed: N`); `DS_TRIO_CRASH_SEED=N` replays it.
"""

from __future__ import annotations

import os
import random
import signal
from functools import partial
from pathlib import Path
from typing import Final

import httpx
import trio

from ds_trio.workers.bus import read_peers

from ..e2e.conformance import ServerProcess
from .test_kill import master_seed

KILLS: Final = 6
WRITERS: Final = 3
KILL_DELAY: Final = (0.1, 0.5)  # seconds of writing before each kill
MAX_ATTEMPTS: Final = 400  # per record, while workers die and come back
RETRY_PAUSE: Final = 0.02  # seconds between attempts at one record
RESTART_TIMEOUT: Final = 30.0  # seconds for the supervisor to bring a worker back
OCTET: Final = {"Content-Type": "application/octet-stream"}


class Writer:
    def __init__(self, index: int) -> None:
        self.stream = f"w{index}"
        self.producer = f"producer-{index}"
        self.acked: list[bytes] = []
        self.statuses: dict[int, int] = {}
        self.retries = 0

    async def run(self, base: str, stop: trio.Event, acks: list[int]) -> None:
        limits = httpx.Limits(max_keepalive_connections=1)
        async with httpx.AsyncClient(timeout=10, limits=limits) as http:
            seq = 0
            while not stop.is_set():
                record = b"%s:%d;" % (self.stream.encode(), seq)
                headers = {**OCTET, "Producer-Id": self.producer, "Producer-Epoch": "0",
                           "Producer-Seq": str(seq)}
                for attempt in range(MAX_ATTEMPTS):
                    try:
                        response = await http.post(f"{base}/{self.stream}", content=record, headers=headers)
                    except httpx.TransportError:
                        self.retries += 1
                        await trio.sleep(RETRY_PAUSE)
                        continue
                    self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
                    if response.status_code == 503:  # a worker going away mid-request
                        await trio.sleep(RETRY_PAUSE)
                        continue
                    assert response.status_code in (200, 204), (seq, attempt, response.status_code, response.text)
                    assert attempt > 0 or response.status_code == 200, f"{self.stream}:{seq} a duplicate at first try"
                    break
                else:
                    raise AssertionError(f"{self.stream}:{seq} never acknowledged")
                self.acked.append(record)
                acks[0] += 1
                seq += 1


def _live_workers(data: Path) -> list[int]:
    alive = []
    for info in read_peers(data).values():
        try:
            os.kill(info["pid"], 0)
        except ProcessLookupError:
            continue
        alive.append(info["pid"])
    return alive


async def _read(http: httpx.AsyncClient, url: str) -> bytes:
    content, offset = b"", "-1"
    for _ in range(1000):
        response = await http.get(url, params={"offset": offset})
        assert response.status_code == 200, response.text
        content += response.content
        offset = response.headers["stream-next-offset"]
        if response.headers.get("stream-up-to-date") == "true":
            return content
    raise AssertionError("the stream did not end")


async def test_sigkill_one_worker_at_a_time_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    seed = master_seed()
    print(f"crash seed: {seed}")
    rng = random.Random(seed)
    data = tmp_path / "data"
    server = await trio.to_thread.run_sync(
        lambda: ServerProcess("--data-dir", str(data), "--workers", "2", command="serve")
    )
    writers = [Writer(k) for k in range(WRITERS)]
    acks = [0]
    served_alone: list[int] = []
    try:
        base = server.base_url + "/v1/stream"
        async with httpx.AsyncClient(timeout=10) as http:
            for writer in writers:
                assert (await http.put(f"{base}/{writer.stream}", headers=OCTET)).status_code == 201
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            for writer in writers:
                nursery.start_soon(writer.run, base, stop, acks)
            for kill in range(KILLS):
                await trio.sleep(rng.uniform(*KILL_DELAY))
                victim = rng.choice(sorted(_live_workers(data)))
                marker = len(server.output)
                os.kill(victim, signal.SIGKILL)
                before = acks[0]
                await trio.to_thread.run_sync(
                    partial(server.wait_for_output, r"worker \d serving", RESTART_TIMEOUT, after=marker)
                )
                served_alone.append(acks[0] - before)
            stop.set()
        async with httpx.AsyncClient(timeout=10) as http:
            for writer in writers:
                assert await _read(http, f"{base}/{writer.stream}") == b"".join(writer.acked), writer.stream
        assert server.stop() == 0
        server = await trio.to_thread.run_sync(
            lambda: ServerProcess("--data-dir", str(data), "--workers", "2", command="serve")
        )
        async with httpx.AsyncClient(timeout=10) as http:
            for writer in writers:
                content = await _read(http, f"{server.base_url}/v1/stream/{writer.stream}")
                assert content == b"".join(writer.acked), f"crash seed {seed}: {writer.stream} after restart"
    finally:
        if server.process.poll() is None:
            assert server.stop() == 0
    log = "".join(server.output)
    assert "Traceback" not in log
    statuses = {k: sum(w.statuses.get(k, 0) for w in writers) for k in (200, 204, 503)}
    print(
        f"crash seed {seed}: {KILLS} worker kills; records acked {[len(w.acked) for w in writers]}; "
        f"transport retries {sum(w.retries for w in writers)}; statuses {statuses}; "
        f"acked while one worker ran, per kill: {served_alone}"
    )
    assert sum(served_alone) > 0, f"crash seed {seed}: the surviving worker did not serve"
    assert all(len(w.acked) > KILLS for w in writers), f"crash seed {seed}: the writers barely wrote"
