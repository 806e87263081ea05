"""Reporting the matrix: the printed table, the JSON record and the PNG chart.

`results` maps target name -> case id -> Outcome, or an error string when
the case could not run on that target.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Final

from scenarios import Case, Figure, Outcome
from servers import NODE_DIR, REPO, TARGETS

Results = dict[str, dict[str, Outcome | str]]

# (column title, numerator target, denominator target)
RATIOS: Final = (
    ("mem/ceil", "ds_trio-memory", "ceiling"),
    ("lmdb/mem", "ds_trio-lmdb", "ds_trio-memory"),
    ("mem/node", "ds_trio-memory", "node-memory"),
    ("lmdb/nfile", "ds_trio-lmdb", "node-file"),
    ("2w/1w", "ds_trio-lmdb-2w", "ds_trio-lmdb"),
)
BUSY_CLIENT_PCT: Final = 85.0  # a client this busy may be what limits the figure
BUSY_BOX_PCT: Final = 15.0  # CPU neither server nor client had (other + stolen; quiet: ~3%)
PYTHON_PACKAGES: Final = ("ds_trio", "hypercorn", "quart", "quart-trio", "trio", "lmdb")


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "missing"
    return (done.stdout or done.stderr).strip().splitlines()[0].split(" [")[0]


def _ds_trio_source() -> str:
    """The commit ds_trio's code came from, and whether the work tree changed it."""

    def git(*args: str) -> str:
        argv = ["git", "-C", str(REPO), *args]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "ds_trio", "pyproject.toml")
    return f"{commit} + uncommitted changes" if dirty else commit


def box() -> dict[str, object]:
    """The machine and the versions of everything under test."""
    cpu_model = "unknown"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    server_package = json.loads(
        (NODE_DIR / "node_modules" / "@durable-streams" / "server" / "package.json").read_text()
    )
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": _version(["node", "--version"]),
        "wrk": _version(["wrk", "-v"]),
        "ds_trio_source": _ds_trio_source(),
        "versions": {
            **{name: metadata.version(name) for name in PYTHON_PACKAGES},
            "@durable-streams/server": server_package["version"],
        },
    }


def _number(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _cell(outcome: Outcome | str | None, key: str) -> str:
    if outcome is None:
        return ""
    if isinstance(outcome, str):
        return "ERROR"
    figure = outcome.figures.get(key)
    if figure is None:
        return ""
    return _number(figure.value) + ("" if figure.ok else "!")


def _ratio(results: Results, case: str, key: str, top: str, bottom: str) -> str:
    values = []
    for target in (top, bottom):
        outcome = results.get(target, {}).get(case)
        figure = outcome.figures.get(key) if isinstance(outcome, Outcome) else None
        if figure is None or not figure.ok or not figure.value:
            return ""
        values.append(figure.value)
    return f"{values[0] / values[1]:.2f}x"


def _rows(cases: list[Case], results: Results) -> list[tuple[str, str, str, str]]:
    """(case id, figure key, label, unit + direction) for every figure measured."""
    rows: list[tuple[str, str, str, str]] = []
    for case in cases:
        figures: dict[str, Figure] = {}
        for per_case in results.values():
            outcome = per_case.get(case.id)
            if isinstance(outcome, Outcome):
                figures = {**outcome.figures, **figures}
        for key, figure in figures.items():
            direction = {"higher": "higher better", "lower": "lower better"}.get(
                figure.better, "must be 0"
            )
            rows.append((case.id, key, figure.label, f"{figure.unit}, {direction}"))
    return rows


def table(cases: list[Case], targets: list[str], results: Results) -> str:
    """The printed table: one row per figure, a column per target, then ratios."""
    ratios = [r for r in RATIOS if r[1] in targets and r[2] in targets]
    header = ["case", "figure", "unit", *targets, *(title for title, _, _ in ratios)]
    lines = [header]
    for case_id, key, label, unit in _rows(cases, results):
        cells = [_cell(results[t].get(case_id), key) for t in targets]
        direction = unit.rsplit(", ", 1)[1]
        shown = (
            []
            if direction == "must be 0"
            else [_ratio(results, case_id, key, top, bottom) for _, top, bottom in ratios]
        )
        lines.append([case_id, label, unit, *cells, *shown])
    for case in cases:
        for side in ("server", "client"):
            cells = []
            for t in targets:
                outcome = results[t].get(case.id)
                cells.append(
                    _number(outcome.cpu[f"{side}_pct"]) if isinstance(outcome, Outcome) else ""
                )
            lines.append([case.id, f"{side} CPU", "% of one core", *cells])
    widths = [max(len(str(line[i])) for line in lines if i < len(line)) for i in range(len(header))]
    text = []
    for index, line in enumerate(lines):
        cols = [
            str(c).ljust(w) if i < 3 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(line, widths))
        ]
        text.append("  ".join(cols).rstrip())
        if index == 0:
            text.append("  ".join("-" * w for w in widths))
    text.append("")
    if ratios:
        text.append("Ratios are left/right of the targets named (ds_trio over the other); above 1")
        text.append("favours ds_trio in 'higher better' rows, below 1 in 'lower better' rows.")
    text.append(
        "'!' marks a figure whose run had errors (left out of ratios); ERROR: the run failed."
    )
    text.extend(_warnings(cases, targets, results))
    return "\n".join(text)


def _warnings(cases: list[Case], targets: list[str], results: Results) -> list[str]:
    notes = []
    for case in cases:
        for target in targets:
            outcome = results[target].get(case.id)
            if isinstance(outcome, str):
                notes.append(f"ERROR {case.id} on {target}: {outcome.splitlines()[0][:200]}")
                continue
            if outcome is None:
                continue
            if outcome.cpu["client_pct"] >= BUSY_CLIENT_PCT:
                notes.append(
                    f"note: {case.id} on {target}: the client used {outcome.cpu['client_pct']:.0f}% "
                    "of a core; the load generator may be limiting this figure"
                )
            other, steal = outcome.cpu["other_pct"], outcome.cpu["steal_pct"]
            if other + steal >= BUSY_BOX_PCT:
                notes.append(
                    f"note: {case.id} on {target}: {other:.0f}% of a core went to other processes "
                    f"or kernel threads and {steal:.0f}% was stolen by the hypervisor; this figure "
                    "may be disturbed"
                )
    return notes


def write_json(path: Path, record: dict[str, object], results: Results) -> None:
    """The JSON record: `record` (date, box, settings, ...) plus every outcome."""
    serialised = {
        target: {
            case: ({"error": outcome} if isinstance(outcome, str) else asdict(outcome))
            for case, outcome in per_case.items()
        }
        for target, per_case in results.items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**record, "results": serialised}, indent=2) + "\n")


def chart(path: Path, cases: list[Case], targets: list[str], results: Results, title: str) -> None:
    """A grid of small bar charts, one per figure, a bar per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in _rows(cases, results) if not row[3].endswith("must be 0")]
    columns = 4
    grid_rows = max(1, math.ceil(len(rows) / columns))
    fig, axes = plt.subplots(
        grid_rows, columns, figsize=(4.2 * columns, 3.1 * grid_rows), squeeze=False
    )
    colours = {name: f"C{i}" for i, name in enumerate(TARGETS)}
    for ax, (case_id, key, label, unit) in zip(axes.flat, rows):
        values, notes = [], []
        for target in targets:
            outcome = results[target].get(case_id)
            figure = outcome.figures.get(key) if isinstance(outcome, Outcome) else None
            values.append(figure.value if figure and figure.value is not None else 0.0)
            notes.append("not run" if outcome is None else "failed" if figure is None or not figure.ok else "")
        bars = ax.bar(range(len(targets)), values, color=[colours[t] for t in targets])
        for bar, value, note in zip(bars, values, notes):
            bar.set_hatch("//" if note == "failed" else "")
            ax.annotate(
                note or _number(value),
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center", va="bottom", fontsize=7,
            )  # fmt: skip
        ax.set_title(f"{case_id}: {label}\n({unit})", fontsize=8)
        ax.set_xticks(range(len(targets)), targets, rotation=30, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.margins(y=0.15)
    for ax in list(axes.flat)[len(rows) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
