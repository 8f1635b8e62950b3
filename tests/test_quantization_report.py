"""`workbench compare RUN --quantization`: drops against the right fp32 stage, spread over seeds,
same-engine speed-ups, and the QAT verdict."""
from __future__ import annotations

import csv

import pytest

from workbench.config import ConfigError
from workbench.quantize.report import quantization_report


def _write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _seed_row(seed, stage, acc, disk, engine="torch-fp32"):
    return {"seed": seed, "stage": stage, "engine": engine, "accuracy": acc, "macro_f1": acc, "disk_mb": disk,
            "throughput_b1": 100.0, "throughput_b8": 200.0}


@pytest.fixture
def run(tmp_path):
    rows = []
    for seed in (0, 1, 2):
        rows += [_seed_row(seed, "teacher", 0.86, 80.0), _seed_row(seed, "pruned", 0.80, 40.0),
                 _seed_row(seed, "pruned.qat", 0.80 - 0.005 * seed, 10.0, "torch-int8")]
    rows += [_seed_row(0, "teacher.static_mse", 0.85, 20.0, "torch-int8"),
             _seed_row(0, "pruned.dynamic", 0.75, 10.0, "torch-int8")]
    _write(tmp_path / "seeds.csv", rows)
    speed = [{"stage": s, "engine": "ort-int8", "batch": 1, "samples_per_s": v}
             for s, v in (("teacher", 50.0), ("teacher.static_mse", 100.0))]
    _write(tmp_path / "speed.csv", speed)
    return tmp_path


def test_drops_are_against_each_stages_own_fp32_reference(run, tmp_path):
    rows = {r["stage"]: r for r in quantization_report(run, tmp_path / "out")}
    assert rows["teacher.static_mse"]["drop_points"] == pytest.approx(1.0)
    assert rows["pruned.dynamic"]["drop_points"] == pytest.approx(5.0)  # against pruned (0.80), not the teacher
    assert rows["pruned.qat"]["n_seeds"] == 3
    assert rows["pruned.qat"]["mean_accuracy"] == pytest.approx(0.795)
    assert rows["pruned.qat"]["std_accuracy"] == pytest.approx(0.005)
    assert rows["pruned.dynamic"]["size_ratio"] == pytest.approx(0.25)
    assert rows["teacher.static_mse"]["ort-int8_b1_speedup"] == pytest.approx(2.0)
    text = (tmp_path / "out" / "table.md").read_text()
    assert "least loss: **static_mse**" in text and "least loss: **qat**" in text
    assert "oBERT's claim" in text and "**held**" in text  # qat lost 0.5 F1 points on average
    assert "loses less than **1 of 1** post-training methods" in text  # 0.5 points vs pruned.dynamic's 5
    assert (tmp_path / "out" / "accuracy_vs_size.png").exists()


def test_a_run_without_quantized_stages_is_refused(tmp_path):
    _write(tmp_path / "seeds.csv", [_seed_row(0, "teacher", 0.86, 80.0)])
    with pytest.raises(ConfigError, match="<reference>.<method>"):
        quantization_report(tmp_path)
    with pytest.raises(ConfigError, match="no seeds.csv"):
        quantization_report(tmp_path / "missing")
