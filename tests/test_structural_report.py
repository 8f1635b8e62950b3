"""`workbench compare --structural` (workbench/prune/report.py) on a hand-made structural run:
rows per stage over seeds, speed-ups on the same engine, and the papers' claims judged."""
from __future__ import annotations

from pathlib import Path

import pytest

from workbench.config import ConfigError
from workbench.prune.report import claims, split_stage, structural_report
from workbench.results import read_csv, write_csv


def _run(folder: Path, kwon_drop: float) -> None:
    rows = []
    for seed, jitter in ((0, 0.0), (1, 0.002), (2, -0.002)):
        base = {"seed": seed, "params": 100, "disk_mb": 1.0, "macro_f1": 0.8, "train_seconds": 0}
        rows += [{**base, "stage": "teacher", "accuracy": 0.86},
                 {**base, "stage": "kwon-50", "accuracy": 0.86 - kwon_drop + jitter, "flops_removed": 0.5,
                  "pruning_seconds": 10},
                 {**base, "stage": "gradfree-40", "accuracy": 0.80 + jitter, "flops_removed": 0.4},
                 {**base, "stage": "kwon-40-runtime", "accuracy": 0.85}]
    write_csv(folder / "seeds.csv", rows)
    write_csv(folder / "speed.csv", [
        {"stage": "teacher", "engine": "torch-fp32", "batch": 1, "samples_per_s": 40.0},
        {"stage": "kwon-50", "engine": "torch-fp32", "batch": 1, "samples_per_s": 80.0},
        {"stage": "teacher", "engine": "wb-int8", "batch": 1, "samples_per_s": 100.0},
        {"stage": "kwon-50", "engine": "wb-int8", "batch": 1, "samples_per_s": 150.0}])


def test_rows_speedups_and_claims(tmp_path):
    _run(tmp_path, kwon_drop=0.005)
    rows = {r["stage"]: r for r in structural_report(tmp_path)}
    assert set(rows) == {"teacher", "kwon-50", "gradfree-40"}  # helper stages are not rows
    k = rows["kwon-50"]
    assert k["n_seeds"] == 3 and k["mean_accuracy"] == pytest.approx(0.855)
    assert k["std_accuracy"] == pytest.approx(0.002)
    assert k["drop_points"] == pytest.approx(0.5)
    assert k["torch_b1_speedup"] == pytest.approx(2.0) and k["wb_int8_b1_speedup"] == pytest.approx(1.5)
    lines = claims(list(rows.values()))
    assert "**held**" in lines[0] and "kwon-50" in lines[0]          # 50% removed within 1 point
    assert "did not hold" in lines[1]                                 # gradfree lost 6 points > 4
    assert (tmp_path / "table.md").exists() and (tmp_path / "accuracy_vs_throughput.png").exists()
    assert len(read_csv(tmp_path / "summary.csv")) == 3


def test_claim_fails_when_the_drop_is_too_large(tmp_path):
    _run(tmp_path, kwon_drop=0.02)
    rows = structural_report(tmp_path)
    assert "did not hold" in claims(rows)[0]


def test_split_stage_and_missing_run(tmp_path):
    assert split_stage("kwon-40") == ("kwon", 0.4) and split_stage("vocab") == ("vocab", None)
    assert split_stage("vocab+kwon-40") == ("vocab+kwon", 0.4)
    with pytest.raises(ConfigError, match="no seeds.csv"):
        structural_report(tmp_path)
