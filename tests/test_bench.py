"""`workbench bench --quick` on a tiny model: the table, chart and README are written.

Behaviour only (files, columns, a recorded failure); never speed.
"""
from __future__ import annotations

import argparse
import csv

import pytest

from workbench.bench import cli
from workbench.bench.report import COLUMNS


def _args(argv):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_quick_bench_writes_csv_png_readme(tmp_path):
    out = tmp_path / "bench"
    rc = cli.run(_args(["--quick", "--models", "tiny-distilbert", "--engines", "torch-fp32,wb-int8",
                        "--threads", "1", "--batch", "1", "--out", str(out), "--no-gemm"]))
    assert rc == 0
    with open(out / "engines.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        assert reader.fieldnames == COLUMNS
    assert {r["engine"] for r in rows} == {"torch-fp32", "wb-int8"}
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert (r["model"], r["threads"], r["batch"], r["runs"]) == ("tiny-distilbert", "1", "1", "1")
        assert float(r["samples_per_s"]) > 0
        assert float(r["samples_per_s_min"]) <= float(r["samples_per_s"]) <= float(r["samples_per_s_max"])
        assert float(r["argmax_agree_vs_torch_fp32"]) == 1.0
    wb = next(r for r in rows if r["engine"] == "wb-int8")
    assert "DenseInt8Linear" in wb["notes"]
    assert float(wb["max_abs_err_vs_torch_fp32"]) < 0.05
    assert (out / "engines.png").stat().st_size > 1000
    readme = (out / "README.md").read_text()
    assert "| engine |" in readme and "wb-int8" in readme
    assert not list(out.glob("*.tmp*"))  # atomic writes leave no temporaries


def test_failing_engine_is_recorded_not_fatal(tmp_path, monkeypatch):
    # a timeout stands in for any engine process that dies: the row says why, the run goes on
    out = tmp_path / "bench"
    rc = cli.run(_args(["--quick", "--models", "tiny-distilbert", "--engines", "torch-fp32",
                        "--threads", "1", "--batch", "1", "--out", str(out), "--no-gemm",
                        "--timeout", "0.01"]))
    assert rc == 1  # nothing succeeded
    rows = list(csv.DictReader(open(out / "engines.csv", newline="")))
    assert rows and rows[0]["status"] == "failed" and "timed out" in rows[0]["error"]
    assert "Failures" in (out / "README.md").read_text()


def test_bad_filters_are_rejected():
    with pytest.raises(SystemExit):
        _args(["--engines", "torch-fp32,nope"])
    with pytest.raises(SystemExit):
        _args(["--threads", "0"])
