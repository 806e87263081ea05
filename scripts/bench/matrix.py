#!/usr/bin/env python3
"""The side-by-side benchmark: every scenario against every target, on loopback.

Targets: ds_trio (memory, LMDB), a bare Quart-Trio app on Hypercorn (the
stack's ceiling) and the Node reference server (memory, file). Each case
runs on a freshly started server. Prints a table with ratios, writes a JSON
record and a PNG chart. Set up and run everything with

    scripts/bench/run [--quick] [--targets ...] [--scenarios ...] [--out F] [--chart F]

which calls this script; see scripts/bench/README.md for what is measured.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from report import box, chart, table, write_json
from scenarios import FULL, QUICK, SCENARIOS, Case, Settings, cases
from servers import REPO, TARGETS, Server, raise_open_files_limit

MIN_OPEN_FILES = 16384  # 5,000 client and 5,000 server sockets, with room


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS), metavar="TARGET",
        help=f"targets to run (default: all of {', '.join(TARGETS)})",
    )  # fmt: skip
    parser.add_argument(
        "--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS), metavar="SCENARIO",
        help=f"scenarios to run (default: all of {', '.join(SCENARIOS)})",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="short runs and small N: a smoke test")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.json")
    parser.add_argument("--chart", type=Path, default=REPO / "docs" / "benchmarks.png")
    return parser.parse_args(argv)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_case(case: Case, target: str, settings: Settings):
    """One case on a fresh server: its Outcome, or the error that stopped it."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-case-"))
    server = None
    try:
        server = Server(TARGETS[target], settings.long_poll_timeout)
        return case.run(server, settings, workdir)
    except Exception as exc:  # noqa: BLE001 - one broken run must not lose the rest
        detail = "".join(traceback.format_exception_only(exc)).strip()
        if server is not None:
            detail += f"\n--- {target} output ---\n{server.log_tail()}"
        return detail
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    settings = QUICK if args.quick else FULL
    targets = [t for t in TARGETS if t in args.targets]
    open_files = raise_open_files_limit()
    if open_files < MIN_OPEN_FILES:
        _log(f"warning: open-files limit {open_files} < {MIN_OPEN_FILES}; raise `ulimit -n`")
    plan = cases(settings, args.scenarios)
    results: dict[str, dict] = {t: {} for t in targets}
    started = time.monotonic()
    # Case by case, every target in turn: drift on the box hits all targets alike.
    for case in plan:
        for target in targets:
            only = TARGETS[target].scenarios
            if only is not None and case.scenario not in only:
                continue
            _log(f"[{time.monotonic() - started:6.0f}s] {case.id} on {target}")
            outcome = results[target][case.id] = run_case(case, target, settings)
            if isinstance(outcome, str):
                _log(f"  ERROR: {outcome}")
    wall = time.monotonic() - started
    print(table(plan, targets, results))
    print(f"\n{len(plan)} cases x {len(targets)} targets in {wall:.0f} s")
    record = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(sys.argv if argv is None else ["matrix.py", *argv]),
        "wall_seconds": round(wall, 1),
        "box": box(),
        "settings": {
            **asdict(settings),
            "quick": args.quick,
            "cpu": "utime+stime over the load generator's run, % of one core",
            "appends": f"wrk -t{settings.writers} -c{settings.writers}, a stream per connection",
            "reads": "wrk -t1 -c1, no Accept-Encoding (identity)",
        },
        "targets": {
            t: {"description": TARGETS[t].description, "read_cap": TARGETS[t].read_cap}
            for t in targets
        },
        "cases": {case.id: case.scenario for case in plan},
    }
    write_json(args.out, record, results)
    mode = "quick smoke run" if args.quick else "full run"
    title = f"ds_trio benchmarks ({mode}, {record['date'][:10]}, {record['box']['nproc']} cores)"
    chart(args.chart, plan, targets, results, title)
    _log(f"wrote {args.out} and {args.chart}")
    failed = any(isinstance(o, str) or not all(f.ok for f in o.figures.values())
                 for per in results.values() for o in per.values())  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
