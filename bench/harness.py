"""Timing, comparison with a limit measured in the same run, and the report.

Each operation is timed twice in the same run: through the service (a real gRPC
channel to a server in another process) and as its *limit*, the cheapest way
to do the same work on this machine (an empty gRPC call plus the same SQL run
raw with psycopg2). The ratio limit-time / service-time says how close the
service is to the hardware (1.0 = at the limit), and stays meaningful on a
noisy machine because both sides share its noise.
"""
from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Timing:
    p50_ms: float
    p99_ms: float
    mean_ms: float

    @property
    def ops_per_s(self) -> float:
        return 1000.0 / self.mean_ms if self.mean_ms else float("inf")


def measure(call: Callable[[], Any], repeat: int, warmup: int = 20) -> Timing:
    """Latencies of ``repeat`` sequential calls after ``warmup`` unmeasured ones."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return Timing(
        p50_ms=statistics.median(samples),
        p99_ms=samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        mean_ms=statistics.fmean(samples),
    )


def combined(*timings: Timing) -> Timing:
    """The limit of work that needs each of ``timings`` in turn (an RPC and a query)."""
    return Timing(*(sum(getattr(t, name) for t in timings) for name in ("p50_ms", "p99_ms", "mean_ms")))


@dataclass(frozen=True)
class Row:
    operation: str
    service_ops_per_s: float
    service_p50_ms: float
    service_p99_ms: float
    limit_ops_per_s: float | None
    ratio: float | None
    goal: float | None
    note: str = ""

    @classmethod
    def compare(cls, operation: str, service: Timing, limit: Timing | None, goal: float | None, note: str = "") -> Row:
        ratio = limit.mean_ms / service.mean_ms if limit else None
        return cls(
            operation,
            round(service.ops_per_s, 1),
            round(service.p50_ms, 3),
            round(service.p99_ms, 3),
            round(limit.ops_per_s, 1) if limit else None,
            round(ratio, 3) if ratio is not None else None,
            goal,
            note,
        )

    @property
    def verdict(self) -> str:
        if self.goal is None or self.ratio is None:
            return ""
        return "met" if self.ratio >= self.goal else "missed"


def table(rows: list[Row]) -> str:
    header = ("operation", "service ops/s", "p50 ms", "p99 ms", "limit ops/s", "ratio", "goal", "")
    lines = [header] + [
        (
            r.operation,
            f"{r.service_ops_per_s:,.1f}",
            f"{r.service_p50_ms:.3f}",
            f"{r.service_p99_ms:.3f}",
            "" if r.limit_ops_per_s is None else f"{r.limit_ops_per_s:,.1f}",
            "" if r.ratio is None else f"{r.ratio:.2f}",
            "" if r.goal is None else f">= {r.goal:g}",
            r.verdict + (f" ({r.note})" if r.note else ""),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    rendered = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    rendered.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(rendered)


def write_results(rows: list[Row], directory: Path) -> tuple[Path, Path | None]:
    """``latest.json`` (the rows) and ``latest.png`` (a chart of the ratios) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "latest.json"
    fields = ("operation", "service_ops_per_s", "service_p50_ms", "service_p99_ms", "limit_ops_per_s", "ratio", "goal")
    json_path.write_text(json.dumps([{k: asdict(r)[k] for k in fields} for r in rows], indent=2) + "\n")
    return json_path, _chart(rows, directory / "latest.png")


def _chart(rows: list[Row], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    compared = [r for r in rows if r.ratio is not None]
    if not compared:
        return None
    figure, axes = plt.subplots(figsize=(10, 0.5 * len(compared) + 1.5))
    names = [r.operation for r in compared]
    colors = [{"met": "#3a7d44", "missed": "#c0392b"}.get(r.verdict, "#7f8c8d") for r in compared]
    axes.barh(names, [r.ratio for r in compared], color=colors)
    for index, row in enumerate(compared):
        if row.goal is not None:
            axes.plot([row.goal, row.goal], [index - 0.4, index + 0.4], color="black", linewidth=2)
    axes.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    axes.invert_yaxis()
    axes.set_xscale("log")
    axes.set_xlabel("limit time / service time (1.0 = at the limit; black tick = goal; grey = no goal)")
    axes.set_title("VERSATIL ML metadata service: make bench")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
