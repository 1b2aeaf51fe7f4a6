"""Numbers and presentation of the benchmark: percentiles, ratios, the table and the JSON file.

Pure functions only (no I/O besides `write_json`), so the formatting and the ratio math are
unit-tested (test/unit/test_bench_report.py) without running anything.

A row compares the service with the raw database path measured in the same run. Two kinds:
- throughput rows (`kind="throughput"`): rate in events/s or req/s; ratio = service rate /
  raw rate, shown as a percentage (higher is better, 100 % = as fast as raw PostgreSQL);
- latency rows (`kind="latency"`): p50/p99 in ms; ratio = service p50 / raw p50, shown as a
  factor (lower is better, 1.0× = no overhead over raw PostgreSQL).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HEADERS = ("scenario", "rate", "p50 ms", "p99 ms", "raw baseline", "ratio", "notes")


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile (the smallest value with at least pct % of values ≤ it)."""
    if not values:
        return None
    if not 0 < pct <= 100:
        raise ValueError("pct must be in (0, 100]")
    ordered = sorted(values)
    rank = math.ceil(pct / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float | int | None]:
    return {
        "n": len(latencies_ms),
        "p50": percentile(latencies_ms, 50),
        "p90": percentile(latencies_ms, 90),
        "p99": percentile(latencies_ms, 99),
        "max": max(latencies_ms) if latencies_ms else None,
        "mean": sum(latencies_ms) / len(latencies_ms) if latencies_ms else None,
    }


def throughput_ratio(service_rate: float | None, raw_rate: float | None) -> float | None:
    """service / raw for rates; None when either side is missing or raw is zero."""
    if service_rate is None or not raw_rate:
        return None
    return service_rate / raw_rate


def latency_ratio(service_ms: float | None, raw_ms: float | None) -> float | None:
    """service / raw for latencies (≥ 1 means the service adds time); None when missing."""
    if service_ms is None or not raw_ms:
        return None
    return service_ms / raw_ms


@dataclass
class Row:
    scenario: str
    kind: str  # "throughput" | "latency" | "info"
    unit: str = ""  # "events/s" | "req/s" for throughput rows
    rate: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    raw_rate: float | None = None
    raw_p50_ms: float | None = None
    raw_p99_ms: float | None = None
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.kind == "throughput":
            return throughput_ratio(self.rate, self.raw_rate)
        if self.kind == "latency":
            return latency_ratio(self.p50_ms, self.raw_p50_ms)
        return None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        data["ratio_meaning"] = {
            "throughput": "service rate / raw rate",
            "latency": "service p50 / raw p50",
        }.get(self.kind)
        return data


def format_rate(rate: float | None, unit: str = "") -> str:
    if rate is None:
        return "-"
    text = f"{rate:,.0f}" if rate >= 100 else f"{rate:,.1f}"
    return f"{text} {unit}".rstrip()


def format_ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_ratio(row: Row) -> str:
    ratio = row.ratio
    if ratio is None:
        return "n/a"
    if row.kind == "throughput":
        return f"{ratio * 100:.0f}%"
    return f"{ratio:.2f}x"


def format_raw(row: Row) -> str:
    if row.kind == "throughput":
        return format_rate(row.raw_rate, row.unit)
    if row.kind == "latency":
        if row.raw_p50_ms is None:
            return "n/a"
        return f"{format_ms(row.raw_p50_ms)} / {format_ms(row.raw_p99_ms)} ms"
    return "-"


def table_cells(row: Row) -> list[str]:
    return [
        row.scenario,
        format_rate(row.rate, row.unit),
        format_ms(row.p50_ms),
        format_ms(row.p99_ms),
        format_raw(row),
        format_ratio(row),
        "; ".join(row.notes),
    ]


def format_table(rows: Sequence[Row]) -> str:
    """One plain-text table, columns padded to their widest cell."""
    cells = [list(HEADERS)] + [table_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADERS))]
    lines = []
    for index, line in enumerate(cells):
        lines.append("  ".join(value.ljust(widths[i]) for i, value in enumerate(line)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def report_document(rows: Sequence[Row], machine: dict[str, Any], options: dict[str, Any]):
    return {
        "schema": "datastorage-bench/1",
        "machine": machine,
        "options": options,
        "rows": [row.as_dict() for row in rows],
        "table": format_table(rows),
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
