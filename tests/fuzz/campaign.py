"""Running a campaign: a real server per store, lanes until the deadline, then the audit.

The audit reads back every modelled stream (HEAD, then catch-up reads from
-1 following Stream-Next-Offset) and compares it with the model; the server
must still be running, and its output must hold no traceback.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import httpx
import trio

from ..e2e.conformance import ServerProcess
from .calls import OP_TIMEOUT
from .inputs import MAX_APPEND_BYTES, MAX_READ_BYTES, STREAM_ROOT
from .lane import Lane
from .model import Existence, ModelStream

LANES: Final = 3
DEFAULT_SECONDS: Final = 10.0
SERVER_FLAGS: Final = (
    "--long-poll-timeout", "200ms",
    "--sse-reconnect-interval", "300ms",
    "--max-read-bytes", f"{MAX_READ_BYTES}B",
    "--max-append-bytes", f"{MAX_APPEND_BYTES}B",
)  # fmt: skip
# Settings without a flag: a seq gap waits only briefly, webhooks may target loopback, and
# the console is on for both stores (dev alone would turn it on: then / would answer apart).
SERVER_TOML: Final = (
    'producer_gap_wait = "50ms"\nwebhook_allow_http_loopback = true\nconsole = true\n'
)
_BAD_OUTPUT: Final = re.compile(r"Traceback|unhandled error|Error in ASGI|Exception in ")
MAX_READ_PAGES: Final = 10_000


def campaign_seed() -> int:
    """DS_TRIO_FUZZ_SEED, or a fresh random seed."""
    raw = os.environ.get("DS_TRIO_FUZZ_SEED", "").strip()
    return int(raw) if raw else random.SystemRandom().randrange(2**32)


def campaign_seconds() -> float:
    return float(os.environ.get("DS_TRIO_FUZZ_SECONDS", "").strip() or DEFAULT_SECONDS)


def reproduce(seed: int) -> str:
    return f"reproduce with DS_TRIO_FUZZ_SEED={seed}"


@dataclass
class CampaignResult:
    """What one store's campaign found."""

    store: str
    seed: int
    seconds: float
    failures: list[str] = field(default_factory=list)
    logs: list[list[tuple[str, int | None]]] = field(default_factory=list)  # per lane
    statuses: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    streams: Counter[str] = field(default_factory=Counter)  # modelled streams by final state
    ops: int = 0

    def summary(self) -> str:
        statuses = " ".join(f"{k}:{v}" for k, v in sorted(self.statuses.items()))
        kinds = " ".join(f"{k}:{v}" for k, v in self.kinds.most_common())
        streams = ", ".join(f"{v} {k}" for k, v in sorted(self.streams.items()))
        return (
            f"fuzz {self.store} seed={self.seed}: {self.ops} ops in {self.seconds:g}s "
            f"over {LANES} lanes\n  statuses {statuses}\n  operations {kinds}\n"
            f"  modelled streams {sum(self.streams.values())}: {streams}\n"
            f"  failures {len(self.failures)}"
        )

    def report(self) -> str:
        """Every failure, for an assertion message."""
        shown = "\n\n".join(self.failures[:30])
        more = f"\n... and {len(self.failures) - 30} more" if len(self.failures) > 30 else ""
        return f"{self.store}: {len(self.failures)} failures; {reproduce(self.seed)}\n{shown}{more}"


def _refusing_port() -> socket.socket:
    """A bound, never-listening loopback socket: webhooks to it are refused at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def run_campaign(store: str, seed: int, seconds: float, workdir: Path) -> CampaignResult:
    """Start a server for `store` ('memory' or 'lmdb'), fuzz it, audit it, stop it."""
    workdir.mkdir(parents=True, exist_ok=True)
    settings = workdir / "fuzz.toml"
    settings.write_text(SERVER_TOML)
    args = ["--config", str(settings), *SERVER_FLAGS]
    if store == "lmdb":
        server = ServerProcess(*args, "--data-dir", str(workdir / "data"), command="serve")
    else:
        server = ServerProcess(*args)
    result = CampaignResult(store, seed, seconds)
    refusing = _refusing_port()
    webhook_url = f"http://127.0.0.1:{refusing.getsockname()[1]}/hook"
    try:
        trio.run(_fuzz, server.base_url, result, webhook_url)
    finally:
        refusing.close()
        alive = server.process.poll() is None
        if not alive:
            result.failures.append(f"the server exited with {server.process.returncode}")
            server.kill()
        else:
            code = server.stop()
            if code != 0:
                result.failures.append(f"the server exited with {code} on SIGTERM")
        bad = [line.rstrip() for line in server.output if _BAD_OUTPUT.search(line)]
        if bad or not alive:
            tail = "".join(server.output[-60:])
            result.failures.append(f"server output has {len(bad)} bad lines, ends:\n{tail}")
    return result


async def _fuzz(base_url: str, result: CampaignResult, webhook_url: str) -> None:
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=10)
    clients = [httpx.AsyncClient(timeout=10.0, limits=limits) for _ in range(LANES)]
    lanes = [
        Lane(i, result.seed, base_url, client, webhook_url) for i, client in enumerate(clients)
    ]
    deadline = trio.current_time() + result.seconds
    try:
        async with trio.open_nursery() as nursery:
            for lane in lanes:
                nursery.start_soon(lane.run, deadline)
        async with trio.open_nursery() as nursery:
            for lane in lanes:
                nursery.start_soon(_audit, lane)
    finally:
        for client in clients:
            await client.aclose()
    for lane in lanes:
        result.failures += lane.failures
        result.logs.append(lane.log)
        result.statuses += lane.statuses
        result.kinds += lane.kinds
        result.ops += lane.ops
        for stream in lane.model.streams:
            state = stream.existence().value if stream.known else "unknown"
            if stream.known and stream.current is not None and stream.current.content is None:
                state += " (content unknown)"
            result.streams[state] += 1


async def _audit(lane: Lane) -> None:
    """Compare every known modelled stream of `lane` with what the server holds."""
    for stream in lane.model.streams:
        if stream.known:
            try:
                with trio.fail_after(OP_TIMEOUT * 4):
                    await _audit_stream(lane, stream)
            except (trio.TooSlowError, httpx.HTTPError) as exc:
                lane.fail(f"audit of {stream.key}: no answer ({exc!r})")


async def _audit_stream(lane: Lane, stream: ModelStream) -> None:
    url = f"{lane.base_url}{STREAM_ROOT}/{stream.key}"
    existence = stream.existence()
    head = await lane.client.head(url)
    expected_status = {Existence.ABSENT: 404, Existence.LIVE: 200, Existence.SOFT_DELETED: 410}
    where = f"audit of {stream.key}"
    if head.status_code != expected_status[existence]:
        lane.fail(f"{where}: HEAD answered {head.status_code}; the model says {existence.value}")
        return
    incarnation = stream.current
    if existence is not Existence.LIVE or incarnation is None:
        return
    if (head.headers.get("stream-closed") == "true") != incarnation.closed:
        lane.fail(f"{where}: HEAD Stream-Closed {head.headers.get('stream-closed')}; "
                  f"the model says closed={incarnation.closed}")  # fmt: skip
    if head.headers.get("content-type") != incarnation.content_type:
        lane.fail(f"{where}: HEAD Content-Type {head.headers.get('content-type')!r}; "
                  f"the model says {incarnation.content_type!r}")  # fmt: skip
    if incarnation.content is None:
        return
    collected: bytearray | list[object] = [] if incarnation.is_json else bytearray()
    offset = "-1"
    for _ in range(MAX_READ_PAGES):
        page = await lane.client.get(url, params={"offset": offset})
        if page.status_code != 200:
            lane.fail(f"{where}: GET offset={offset} answered {page.status_code}")
            return
        if incarnation.is_json:
            collected += json.loads(page.content)  # type: ignore[operator]
        else:
            collected += page.content  # type: ignore[operator]
        next_offset = page.headers.get("stream-next-offset")
        if page.headers.get("stream-up-to-date") == "true":
            break
        if next_offset is None or next_offset == offset:
            lane.fail(f"{where}: a partial read at {offset} does not advance ({next_offset})")
            return
        offset = next_offset
    else:
        lane.fail(f"{where}: not up to date after {MAX_READ_PAGES} reads")
        return
    if (page.headers.get("stream-closed") == "true") != incarnation.closed:
        lane.fail(
            f"{where}: the last read's Stream-Closed disagrees with closed={incarnation.closed}"
        )
    if next_offset != head.headers.get("stream-next-offset"):
        lane.fail(f"{where}: the reads end at {next_offset}, HEAD says "
                  f"{head.headers.get('stream-next-offset')}")  # fmt: skip
    expected = incarnation.content
    if collected != expected:
        first = next(
            (i for i, (a, b) in enumerate(zip(collected, expected, strict=False)) if a != b),
            min(len(collected), len(expected)),
        )
        lane.fail(
            f"{where}: content differs from the model at unit {first} "
            f"(server {len(collected)} units, model {len(expected)}): "
            f"server {collected[first : first + 40]!r} model {expected[first : first + 40]!r}"
        )


def compare_stores(first: CampaignResult, second: CampaignResult) -> list[str]:
    """Where the same seed drew different statuses from two stores (comparable ops only)."""
    differences: list[str] = []
    for lane, (a_log, b_log) in enumerate(zip(first.logs, second.logs, strict=True)):
        for index, ((a_label, a_status), (b_label, b_status)) in enumerate(
            zip(a_log, b_log, strict=False)
        ):
            if a_label.startswith("~") and a_label == b_label and a_status != b_status:
                break  # a race went differently: from here the lane's runs part legitimately
            if a_label != b_label:
                differences.append(
                    f"lane {lane} op #{index + 1}: the runs diverged ({a_label!r} vs {b_label!r})"
                )
                break
            if a_status is not None and b_status is not None and a_status != b_status:
                differences.append(
                    f"lane {lane} op #{index + 1} {a_label}: {first.store} answered {a_status}, "
                    f"{second.store} {b_status}"
                )
                break  # the lanes' paths part here
    return differences
