"""The benchmark's report: percentiles, ratios, the table and the JSON document.

Formatting and arithmetic only; nothing here runs or times anything (performance is measured
by `make bench`, never asserted in a test).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "bench" / "report.py"
_SPEC = importlib.util.spec_from_file_location("bench_report", _PATH)
report = importlib.util.module_from_spec(_SPEC)
sys.modules["bench_report"] = report  # dataclasses resolve their module by name
_SPEC.loader.exec_module(report)


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert report.percentile(values, 50) == 50.0
    assert report.percentile(values, 99) == 99.0
    assert report.percentile(values, 100) == 100.0
    assert report.percentile([3.0, 1.0, 2.0], 50) == 2.0


def test_percentile_of_one_value_and_of_none():
    assert report.percentile([7.5], 99) == 7.5
    assert report.percentile([], 50) is None


@pytest.mark.parametrize("pct", [0, -1, 101])
def test_percentile_rejects_out_of_range(pct):
    with pytest.raises(ValueError):
        report.percentile([1.0], pct)


def test_latency_summary_counts_and_orders():
    summary = report.latency_summary([4.0, 1.0, 3.0, 2.0])
    assert summary == {"n": 4, "p50": 2.0, "p90": 4.0, "p99": 4.0, "max": 4.0, "mean": 2.5}
    assert report.latency_summary([])["p50"] is None


def test_throughput_ratio_is_service_over_raw():
    assert report.throughput_ratio(1100.0, 2200.0) == pytest.approx(0.5)
    assert report.throughput_ratio(None, 2200.0) is None
    assert report.throughput_ratio(10.0, 0.0) is None


def test_latency_ratio_is_service_over_raw():
    assert report.latency_ratio(3.0, 1.5) == pytest.approx(2.0)
    assert report.latency_ratio(3.0, None) is None


def _throughput_row(**changes):
    values = dict(
        scenario="1. single POST",
        kind="throughput",
        unit="events/s",
        rate=1234.4,
        p50_ms=12.345,
        p99_ms=48.0,
        raw_rate=2468.8,
        notes=["non-2xx 0"],
    )
    return report.Row(**{**values, **changes})


def test_throughput_row_shows_a_percentage_of_raw():
    cells = report.table_cells(_throughput_row())
    assert cells == [
        "1. single POST",
        "1,234 events/s",
        "12.3",
        "48.0",
        "2,469 events/s",
        "50%",
        "non-2xx 0",
    ]


def test_latency_row_shows_raw_p50_p99_and_a_factor():
    row = report.Row(
        "4. timeline",
        "latency",
        "req/s",
        rate=250.0,
        p50_ms=4.0,
        p99_ms=150.5,
        raw_p50_ms=1.0,
        raw_p99_ms=2.25,
        notes=["n=200", "GIN used: yes"],
    )
    cells = report.table_cells(row)
    assert cells[1:] == [
        "250 req/s",
        "4.00",
        "150",
        "1.00 / 2.25 ms",
        "4.00x",
        "n=200; GIN used: yes",
    ]


def test_missing_values_print_as_dashes_and_na():
    row = report.Row("5. search", "info", notes=["skipped: no catalog table"])
    assert report.table_cells(row) == [
        "5. search",
        "-",
        "-",
        "-",
        "-",
        "n/a",
        "skipped: no catalog table",
    ]
    no_raw = _throughput_row(raw_rate=None)
    assert report.table_cells(no_raw)[4:6] == ["-", "n/a"]


def test_small_rates_keep_one_decimal():
    assert report.format_rate(41.06, "req/s") == "41.1 req/s"
    assert report.format_rate(100.0) == "100"
    assert report.format_rate(None) == "-"


def test_table_pads_columns_to_the_widest_cell():
    rows = [_throughput_row(), _throughput_row(scenario="2. a much longer scenario name")]
    lines = report.format_table(rows).splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("scenario ")
    assert set(lines[1].replace(" ", "")) == {"-"}
    # every column starts at the same offset on every line
    rate_column = lines[0].index("rate")
    assert lines[2][rate_column:].startswith("1,234 events/s")
    assert lines[3][rate_column:].startswith("1,234 events/s")


def test_json_document_carries_rows_ratios_machine_and_table(tmp_path):
    rows = [_throughput_row()]
    document = report.report_document(rows, {"nproc": 2}, {"duration": 20.0})
    path = tmp_path / "results" / "bench.json"
    report.write_json(path, document)
    loaded = json.loads(path.read_text())
    assert loaded["machine"] == {"nproc": 2}
    assert loaded["options"] == {"duration": 20.0}
    (row,) = loaded["rows"]
    assert row["ratio"] == pytest.approx(0.5)
    assert row["ratio_meaning"] == "service rate / raw rate"
    assert row["notes"] == ["non-2xx 0"]
    assert loaded["table"] == report.format_table(rows)
