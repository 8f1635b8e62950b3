"""`workbench export RUN --stage S --format onnx|hf`: every exportable stage kind loads in its
target runtime with the stage's logits; refusals name the stage and the reason and leave no file.
Tiny: the 2-layer BERT of test_platform fine-tuned 3 steps, then a 50%-sparse copy, a shrunk copy
(uneven heads, layer 1's FFN removed), dynamic int8, our runtime (never exportable) and a
trimmed vocabulary (its own tokenizer)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from test_platform import _spec, _tiny_dir


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from workbench.pipeline import PipelineRun

    tmp = tmp_path_factory.mktemp("export")
    mp = pytest.MonkeyPatch()
    mp.setenv("WORKBENCH_CACHE", str(tmp / "cache"))
    spec = _spec(tmp, [
        {"name": "t", "recipes": ["finetune"], "train": {"epochs": 1, "batch_size": 16, "max_steps": 3}},
        {"name": "sparse", "from": "t", "recipes": [{"magnitude_prune": {"sparsity": 0.5}}]},
        {"name": "shrunk", "from": "t", "recipes": [{"structured_prune": {
            "heads": 0.5, "neurons": 0.99, "targets": ["bert.encoder.layer.1"]}}]},
        {"name": "int8", "from": "shrunk", "recipes": ["dynamic_int8"]},
        {"name": "wb", "from": "t", "recipes": ["workbench_runtime"]},
        {"name": "trim", "from": "t", "recipes": ["trim_vocab"]},  # its own, smaller tokenizer
    ], str(_tiny_dir(tmp, "tiny")))
    PipelineRun(spec, results_root=tmp / "r").run()
    yield tmp / "r" / "p"
    mp.undo()


def _stage(folder: Path, name: str):
    from workbench.models.edits import load_edited_model
    from workbench.models.vocab import load_stage_tokenizer

    return load_edited_model(folder / "artifacts" / name / "model"), load_stage_tokenizer(folder / "artifacts" / name / "model")


def _leftovers(folder: Path) -> list[Path]:
    return sorted((folder / "export").glob(".*")) if (folder / "export").exists() else []


def test_the_shrunk_stage_really_has_uneven_heads_and_no_ffn_in_layer_1(run):
    model, _ = _stage(run, "shrunk")
    layer = model.bert.encoder.layer
    assert layer[1].intermediate.dense.out_features == 0 and layer[0].intermediate.dense.out_features == 64
    assert layer[1].attention.self.query.out_features == 16 and layer[0].attention.self.query.out_features == 32


@pytest.mark.parametrize("stage", ["t", "sparse", "shrunk", "int8", "trim"])
def test_onnx_export_loads_in_ort_with_the_stage_logits(run, stage, capsys):
    import onnx
    import onnxruntime as ort
    import torch

    from workbench.cli import main
    from workbench.export import INT8_ATOL, INT8_RTOL

    assert main(["export", str(run), "--stage", stage, "--format", "onnx"]) == 0
    out = capsys.readouterr().out
    path = run / "export" / f"{stage}.onnx"
    assert f"written: {path}" in out and "max |Δlogit|" in out and "argmax agreement" in out
    assert not _leftovers(run)
    # an independent check: other texts than the probe, the file as a user would load it
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    model, tok = _stage(run, "shrunk" if stage == "int8" else stage)
    texts = ["the film was great number 3", "awful", "the film was bad number 12 and good number 4"]
    enc = tok(texts, padding=True, return_tensors="pt")
    if stage == "int8":
        from workbench.recipes.quantize.dynamic import quantize_dynamic_int8

        assert "checked against the fp32 source (the torch int8 stage is" in out  # both approximate it

        assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops  # integer ops, not fake-quant
        model = quantize_dynamic_int8(model)
    with torch.no_grad():
        ref = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input_ids": enc["input_ids"].numpy(), "attention_mask": enc["attention_mask"].numpy()})[0]
    bound = INT8_ATOL + INT8_RTOL * np.abs(ref).max() if stage == "int8" else 1e-4
    assert np.abs(got - ref).max() <= bound
    if stage == "sparse":  # the masked stage's zeros are in the file, not its dense source's weights
        from onnx import numpy_helper

        weights = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer
                   if len(t.dims) == 2 and max(t.dims) <= 128]  # the encoder's Linears, not the embeddings
        assert sum((w == 0).mean() >= 0.45 for w in weights) >= 8  # 2 layers x (QKV, out, FFN in, FFN out)


@pytest.mark.parametrize("stage", ["sparse", "trim"])
def test_hf_export_reloads_in_plain_transformers(run, stage, capsys):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from workbench.cli import main

    assert main(["export", str(run), "--stage", stage, "--format", "hf"]) == 0
    path = run / "export" / f"{stage}-hf"
    assert f"written: {path}" in capsys.readouterr().out and not _leftovers(run)
    model, tok = _stage(run, stage)
    plain = AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True).eval()
    enc = AutoTokenizer.from_pretrained(str(path))(["the film was good number 7"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(plain(**enc).logits, model(**enc).logits, atol=1e-6)
    if stage == "trim":
        assert plain.config.vocab_size == len(tok) < 1000  # the trimmed vocabulary, not MiniLM's 30522
    assert main(["export", str(run), "--stage", stage, "--format", "hf"]) == 0  # an earlier export is replaced
    assert (path / "config.json").exists() and not _leftovers(run)


@pytest.mark.parametrize("argv, says", [
    (["--stage", "nope", "--format", "onnx"], "run 'p' has no stage 'nope' (stages: t, sparse, shrunk, int8, wb, trim)"),
    (["--stage", "wb", "--format", "onnx"], "stage 'wb' cannot be exported: its recipes (workbench_runtime) build an "
                                            "inference-only model that export does not support; export its source "
                                            "stage 't' instead"),
    (["--stage", "int8", "--format", "hf"], "stage 'int8' is a torch dynamic-int8 model, which has no Hugging Face "
                                            "save format; use --format onnx"),
    (["--stage", "shrunk", "--format", "hf"], "stage 'shrunk' is structurally shrunk (ffn_neurons (layer 1), heads "
                                              "(layer 1)): a Hugging Face config describes uniform layers"),
])
def test_unexportable_stages_fail_naming_stage_and_reason_and_leave_no_file(run, argv, says, tmp_path, capsys):
    from workbench.cli import main

    out = tmp_path / "x"
    assert main(["export", str(run), *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("workbench: error: ") and says in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_logit_mismatch_fails_and_leaves_no_file(run, tmp_path, monkeypatch, capsys):
    import workbench.export as export
    from workbench.cli import main

    real = export.reference_logits
    monkeypatch.setattr(export, "reference_logits", lambda model, probe: real(model, probe) + 1e-3)
    for fmt in ("onnx", "hf"):
        out = tmp_path / f"t.{fmt}"
        assert main(["export", str(run), "--stage", "t", "--format", fmt, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "export of stage 't': the exported logits do not match the stage's (max |Δlogit| 0.001" in err, err
        assert list(tmp_path.iterdir()) == []
