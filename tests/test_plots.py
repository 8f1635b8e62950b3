"""Plots: labelled axes, non-empty PNGs, graceful degradation; `workbench report` on a run."""
from __future__ import annotations

import json

import pytest


def stages():
    layers = {f"bert.encoder.layer.{i}.{n}": s for i in range(2)
              for n, s in (("attention.self.query", 0.8), ("intermediate.dense", 0.9))}
    base = {"engine": "torch-fp32", "params": 1_000_000, "disk_mb": 4.0, "macro_f1": 0.7, "seq_len": 128}
    return [
        {**base, "stage": "teacher", "accuracy": 0.85, "nonzero_params": 1_000_000, "sparsity": 0.0,
         "latency_ms_b1": 10.0, "throughput_b1": 100.0, "per_layer_sparsity": {k: 0.0 for k in layers}},
        {**base, "stage": "pruned", "accuracy": 0.82, "nonzero_params": 300_000, "sparsity": 0.7,
         "latency_ms_b1": 6.0, "throughput_b1": 166.0, "per_layer_sparsity": layers},
        {**base, "stage": "int8", "engine": "workbench-int8", "accuracy": 0.81, "nonzero_params": 300_000,
         "sparsity": 0.7, "latency_ms_b1": 2.5, "throughput_b1": 400.0, "per_layer_sparsity": layers},
    ]


def png_ok(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_pareto_figure_labels_front_teacher_and_peers(tmp_path):
    from workbench.plots import pareto_figure, pareto_indices, read_peers, save_figure

    (tmp_path / "engines.csv").write_text(
        "model,engine,threads,batch,seq_len,status,samples_per_s\n"
        "minilm,ort-int8,1,1,128,ok,150.5\nminilm,torch-fp32,1,1,128,ok,90\n"
        "minilm,torch-fp32,1,8,128,ok,300\ndistilbert,ort-int8,1,1,128,ok,40\nminilm,wb-int8,1,1,128,failed,\n"
        "minilm,ort-int8,1,1,32,ok,900\n")
    peers = read_peers(tmp_path / "engines.csv", seq_len=128)
    assert [p["engine"] for p in peers] == ["ort-int8", "torch-fp32"]
    assert read_peers(tmp_path / "missing.csv") == []
    trials = [{"number": i, "accuracy": a, "throughput": t}
              for i, (a, t) in enumerate([(0.8, 100), (0.75, 300), (0.7, 200), (0.82, 50)])]
    assert sorted(pareto_indices([(t["accuracy"], t["throughput"]) for t in trials])) == [0, 1, 3]
    fig = pareto_figure(trials, teacher=stages()[0], peers=peers, seq_len=128, title="t")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "throughput (samples/s, batch 1, seq 128)"
    assert ax.get_ylabel() == "accuracy"
    labels = ax.get_legend_handles_labels()[1]
    assert "Pareto front" in labels and any(lbl.startswith("teacher") for lbl in labels)
    assert any("ort-int8" in lbl for lbl in labels)
    save_figure(fig, tmp_path / "p.png")
    png_ok(tmp_path / "p.png")
    # no trials, no peers: still a figure
    fig = pareto_figure([])
    assert fig.axes[0].get_ylabel() == "accuracy"


def test_importance_figure_and_degradation(tmp_path):
    import optuna

    from workbench.plots import importance_figure, param_importance, param_importances

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "maximize"])
    imps, why = param_importances(study)
    assert imps == {} and ">= 2 complete trials" in why
    fig = importance_figure(imps, why)
    assert fig.axes[0].get_xlabel().startswith("importance")
    study.set_user_attr("objectives", ["accuracy", "throughput"])
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("x", 0, 1) * 0 + t.suggest_int("y", 0, 3)),
                   n_trials=8)
    imps, why = param_importances(study)
    assert why is None and set(imps) == {"accuracy", "throughput"} and set(imps["accuracy"]) == {"x", "y"}
    param_importance(imps, tmp_path / "i.png")
    png_ok(tmp_path / "i.png")


def test_per_layer_sparsity_and_waterfall(tmp_path):
    from workbench.plots import per_layer_sparsity_figure, stage_waterfall, stage_waterfall_figure

    fig = per_layer_sparsity_figure(stages())
    ax = fig.axes[0]
    assert ax.get_ylabel() == "fraction of zero weights" and ax.get_xlabel().startswith("encoder layer")
    assert len(ax.get_lines()) == 2  # the unpruned teacher is not drawn
    assert [t.get_text() for t in ax.get_xticklabels()][:2] == ["L0 query", "L0 ffn_in"]
    fig = stage_waterfall_figure(stages())
    assert [a.get_ylabel() for a in fig.axes] == ["non-zero parameters (M)", "latency, batch 1 (ms)", "test accuracy"]
    assert all(a.get_xlabel() == "stage" for a in fig.axes)
    stage_waterfall(stages(), tmp_path / "w.png")
    png_ok(tmp_path / "w.png")
    per_layer_sparsity_figure([{"stage": "x", "per_layer_sparsity": {}}])  # nothing pruned: no error


def test_report_of_a_run(tmp_path, monkeypatch):
    from workbench.cli import main

    run = tmp_path / "results" / "myrun"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"run": "myrun", "task": "rt-sentiment", "model": "minilm-l6",
                                                  "quick": True, "stages": stages()}))
    monkeypatch.chdir(tmp_path)
    assert main(["report", "myrun"]) == 0
    report = run / "report"
    for name in ("accuracy_vs_throughput.png", "per_layer_sparsity.png", "stage_waterfall.png"):
        png_ok(report / name)
    text = (report / "README.md").read_text()
    assert "| pruned | torch-fp32 | 0.8200 |" in text and "![stage waterfall](stage_waterfall.png)" in text
    assert main(["report", "nothing-here"]) == 2


@pytest.mark.parametrize("name", ["accuracy_vs_throughput"])
def test_pipeline_plot_still_works(tmp_path, name):
    from workbench import plots

    getattr(plots, name)(stages(), tmp_path / "a.png", title="x")
    png_ok(tmp_path / "a.png")
