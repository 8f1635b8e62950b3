"""The paths online users take, exercised with local files: a model folder written by
save_pretrained and a CSV task, through a whole pipeline."""
from __future__ import annotations

import json

import pytest
import torch

from workbench.models import load_model
from workbench.pipeline import PipelineRun, PipelineSpec


def _tiny_model_dir(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    _, tokenizer = load_model("minilm-l6", num_labels=2)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=128, num_labels=2)
    path = tmp_path / "tiny-bert"
    BertForSequenceClassification(cfg).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_local_model_folder_loads_with_a_new_head(tmp_path):
    path = _tiny_model_dir(tmp_path)
    model, tokenizer = load_model(str(path), num_labels=3)
    assert model.config.num_labels == 3 and model.classifier.out_features == 3
    out = model(**tokenizer(["a fine film"], return_tensors="pt")).logits
    assert out.shape == (1, 3)


def test_pipeline_on_local_model_and_csv_task(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    model_dir = _tiny_model_dir(tmp_path)
    words = {"good": "pos", "great": "pos", "bad": "neg", "awful": "neg"}
    rows = [f"the film was {w} number {i},{y}" for i in range(40) for w, y in words.items()]
    (tmp_path / "reviews.csv").write_text("review,sentiment\n" + "\n".join(rows) + "\n")
    spec = PipelineSpec.from_dict({
        "name": "local", "model": str(model_dir), "seed": 0,
        "task": {"name": str(tmp_path / "reviews.csv"), "text_column": "review", "label_column": "sentiment"},
        "eval": {"speed_batches": [1], "speed_iters": 1, "seq_len": 16},
        "stages": [
            {"name": "teacher", "recipes": ["finetune"], "train": {"epochs": 10, "batch_size": 16, "lr": 2e-3, "warmup": 0.0}},
            {"name": "pruned", "recipes": [{"magnitude_prune": {"sparsity": 0.5, "block": [4, 1]}}]},
            {"name": "int8", "recipes": ["dynamic_int8"]},
        ]})
    metrics = PipelineRun(spec, results_root=tmp_path / "results").run()
    assert [m["stage"] for m in metrics] == ["teacher", "pruned", "int8"]
    saved = json.loads((tmp_path / "results" / "local" / "metrics.json").read_text())
    assert saved["task"] == str(tmp_path / "reviews.csv") and len(saved["stages"]) == 3
    assert metrics[0]["accuracy"] > 0.7  # four words decide the label: a 2-layer model learns it
    layer = {k: v for k, v in metrics[1]["per_layer_sparsity"].items() if "encoder.layer.0." in k}
    assert layer and all(abs(v - 0.5) < 1e-6 for v in layer.values())


def test_sequence_lengths_fit_the_models_position_table(tmp_path, monkeypatch):
    """A model with 64 positions and a text longer than 64 tokens: the task's default truncation
    (128) is lowered to 64 (it failed inside the forward, after training, before); a max_length or
    eval seq_len set longer than the model holds is an error before any work."""
    import pytest
    import yaml
    from conftest import tiny_spec, write_tiny_task

    from workbench.config import ConfigError
    from workbench.models.families import max_sequence_length

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    csv_path, folder = write_tiny_task(tmp_path, repeats=10)  # max_position_embeddings 64
    with csv_path.open("a") as f:
        f.write(" ".join(["the film was good"] * 30) + ",pos\n")  # 122 tokens
    stages = [{"name": "ft", "recipes": ["finetune"], "train": {"epochs": 1, "batch_size": 16}}]
    PipelineRun(PipelineSpec.from_dict(tiny_spec(csv_path, folder, stages)), results_root=tmp_path / "r").run()
    assert yaml.safe_load((tmp_path / "r" / "s" / "recipe.yaml").read_text())["task"]["max_length"] == 64
    for section, key in (("task", "max_length"), ("eval", "seq_len")):
        raw = tiny_spec(csv_path, folder, stages)
        raw[section][key] = 100
        with pytest.raises(ConfigError, match=f"'{key}' 100 is longer than model .* holds 64 tokens"):
            PipelineRun(PipelineSpec.from_dict(raw), results_root=tmp_path / "r2").run()
        assert not (tmp_path / "r2").exists()
    from transformers import RobertaConfig
    assert max_sequence_length(RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512


def test_a_text_pair_task_through_a_pipeline(tmp_path, monkeypatch):
    """Premise and hypothesis columns (`text_pair_column`): the label is whether the two texts'
    words agree, so only a model that reads both learns it. The compiled runtime gets the segment
    ids too (same accuracy as its source); ONNX exports (fp32, dynamic int8 and QDQ) take them as
    a `token_type_ids` input and pass export's logit check, and `bench --run`'s `ort-exported`
    runs them; a pseudo-label pool of single texts is refused first."""
    from workbench.cli import main
    from workbench.config import ConfigError

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    model_dir = _tiny_model_dir(tmp_path)
    polarity = {"good": 1, "great": 1, "bad": 0, "awful": 0}
    rows = [f"the film was {a} number {i},it was {b},{'agree' if polarity[a] == polarity[b] else 'disagree'}"
            for i in range(12) for a in polarity for b in polarity]
    (tmp_path / "pairs.csv").write_text("premise,hypothesis,label\n" + "\n".join(rows) + "\n")
    task = {"name": str(tmp_path / "pairs.csv"), "text_column": "premise", "text_pair_column": "hypothesis"}

    def spec(stages):
        return PipelineSpec.from_dict({"name": "pairs", "model": str(model_dir), "seed": 0, "task": task,
                                       "eval": {"speed_batches": [1], "speed_iters": 1, "seq_len": 16},
                                       "stages": stages})

    teacher = {"name": "teacher", "recipes": ["finetune"],
               "train": {"epochs": 30, "batch_size": 16, "lr": 3e-3, "warmup": 0.0}}
    pool = tmp_path / "pool.txt"
    pool.write_text("a good film\n")
    bad = PipelineRun(spec([teacher, {"name": "pl", "recipes": [{"pseudo_label": {"pool": str(pool)}}]}]),
                      results_root=tmp_path / "results")
    try:
        bad.run()
        raise AssertionError("a pool of single texts was accepted for a pair task")
    except ConfigError as err:
        assert "has text pairs and a pool holds single texts" in str(err)
    assert not (tmp_path / "results" / "pairs" / "metrics.json").exists()  # refused before any stage
    metrics = PipelineRun(spec([teacher, {"name": "rt", "recipes": ["workbench_runtime"]},
                                {"name": "dyn", "from": "teacher", "recipes": ["dynamic_int8"]},
                                {"name": "static", "from": "teacher", "recipes": ["static_int8"]}]),
                          results_root=tmp_path / "results").run()
    assert metrics[0]["accuracy"] > 0.7, metrics[0]["accuracy"]
    assert abs(metrics[1]["accuracy"] - metrics[0]["accuracy"]) <= 0.05
    run = tmp_path / "results" / "pairs"
    for stage in ("teacher", "dyn", "static"):
        assert main(["export", str(run), "--stage", stage, "--format", "onnx"]) == 0, stage
        import onnxruntime as ort
        sess = ort.InferenceSession(str(run / "export" / f"{stage}.onnx"), providers=["CPUExecutionProvider"])
        assert "token_type_ids" in [i.name for i in sess.get_inputs()], stage
    assert main(["export", str(run), "--stage", "teacher", "--format", "hf"]) == 0
    # --accuracy: the written file on the run's own evaluation examples, beside the stage
    from workbench.export import export_stage
    for stage, fmt, i in (("teacher", "onnx", 0), ("teacher", "hf", 0), ("dyn", "onnx", 2)):
        got = export_stage(run, stage, fmt, accuracy=True).accuracy
        assert got.split == "test" and got.examples == json.loads((run / "metrics.json").read_text())["eval_examples"], got
        assert got.stage_accuracy == pytest.approx(metrics[i]["accuracy"]), (stage, got)
        if stage == "teacher":  # fp32: the same predictions (segment ids fed: a pair task)
            assert got.disagreements == 0 and got.accuracy == got.stage_accuracy and got.max_abs_diff < 1e-4, got
    from workbench.bench.runs import bench_run_stages
    rows = bench_run_stages(run, stages=["teacher"], engines=["torch-fp32", "ort-exported"], batches=[1],
                            runs=1, seq_len=16)
    assert {r["engine"]: r["status"] for r in rows} == {"torch-fp32": "ok", "ort-exported": "ok"}, rows
