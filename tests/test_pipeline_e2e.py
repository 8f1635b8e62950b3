"""The demo recipe end to end in --quick mode, on the real embedded model and data."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from workbench.cli import main
from workbench.pipeline import PipelineSpec

DEMO = Path(__file__).resolve().parent.parent / "recipes" / "demo.yaml"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    assert main(["run", str(DEMO), "--quick", "--results", str(root), "--name", "demo"]) == 0
    return root / "demo"


def test_quick_demo_writes_results(quick_run):
    metrics = json.loads((quick_run / "metrics.json").read_text())
    stages = {s["stage"]: s for s in metrics["stages"]}
    assert list(stages) == ["teacher", "student", "pruned", "int8", "runtime"]
    assert metrics["quick"] is True and metrics["split"] == "test"
    png = quick_run / "accuracy_vs_throughput.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((quick_run / "stages.csv").open()))
    assert [r["stage"] for r in rows] == list(stages)
    # the recipe as run is itself a valid recipe
    assert PipelineSpec.from_yaml(quick_run / "recipe.yaml").to_dict()["stages"][2]["recipes"][0][
        "magnitude_prune"]["sparsity"] == 0.85


def test_quick_demo_stages_do_what_they_say(quick_run):
    stages = {s["stage"]: s for s in json.loads((quick_run / "metrics.json").read_text())["stages"]}
    teacher, student, pruned, int8, runtime = (stages[k] for k in ("teacher", "student", "pruned", "int8", "runtime"))
    # the teacher learned the task: well above chance (0.5) on the real test split
    assert teacher["accuracy"] > 0.6, teacher
    assert 0 < teacher["macro_f1"] <= 1
    assert student["params"] < teacher["params"]  # 3 of 6 layers
    encoder = {k: v for k, v in pruned["per_layer_sparsity"].items() if ".layer." in k}
    assert encoder and all(abs(v - 0.85) < 0.01 for v in encoder.values()), encoder
    assert pruned["nonzero_params"] < student["nonzero_params"] * 0.8
    # int8 Linear weights (the fp32 word embeddings, 11.7M of the 17.4M parameters, stay fp32)
    assert int8["engine"] == "torch-int8" and int8["disk_mb"] < pruned["disk_mb"] - 10
    assert runtime["engine"].startswith("workbench")
    # the runtime stage is the pruned model on our int8 kernels: same predictions up to int8 noise
    assert abs(runtime["accuracy"] - pruned["accuracy"]) <= 0.05, (runtime["accuracy"], pruned["accuracy"])
    for s in stages.values():
        assert s["throughput_b1"] > 0 and s["throughput_b8"] > 0 and s["seq_len"] == 128
        assert s["zlib_mb"] is None and s["disk_mb"] > 0   # quick runs skip zlib (2-4 s a stage)


def test_rerun_resumes_finished_stages(quick_run):
    before = {s["stage"]: s for s in json.loads((quick_run / "metrics.json").read_text())["stages"]}
    assert main(["run", str(DEMO), "--quick", "--results", str(quick_run.parent), "--name", "demo"]) == 0
    after = {s["stage"]: s for s in json.loads((quick_run / "metrics.json").read_text())["stages"]}
    for name in ("teacher", "student", "pruned"):
        assert after[name].get("reused_from"), name  # not retrained
        assert after[name]["accuracy"] == before[name]["accuracy"]
