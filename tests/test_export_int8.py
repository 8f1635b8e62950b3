"""`workbench export --format onnx` of static int8 stages (static_int8, smoothquant + static_int8,
a converted qat stage trained under pruning masks) as QDQ graphs: they load in ONNX Runtime with
the stage's logits within `export_int8.qdq_bound` (0.02 + 2% of max |logit|), hold the stage's
own scales and int8 weights; `--format hf` refuses them, naming the stage. Dense, masked-sparse,
shrunk and dynamic int8 exports are tested in test_export.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from test_platform import _spec, _tiny_dir


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from workbench.pipeline import PipelineRun

    tmp = tmp_path_factory.mktemp("export_int8")
    mp = pytest.MonkeyPatch()
    mp.setenv("WORKBENCH_CACHE", str(tmp / "cache"))
    spec = _spec(tmp, [
        {"name": "t", "recipes": ["finetune"], "train": {"epochs": 1, "batch_size": 16, "max_steps": 4, "lr": 1e-3}},
        {"name": "t.static", "from": "t", "recipes": [{"static_int8": {"num_examples": 32}}]},
        {"name": "t.smooth", "from": "t", "recipes": [
            "smoothquant", {"static_int8": {"num_examples": 32, "observer": "mse",
                                            "targets": ["re:.*encoder.*"]}}]},  # the head stays fp32
        {"name": "p.qat", "from": "t", "recipes": [
            {"magnitude_prune": {"sparsity": 0.5}}, "finetune", {"qat": {"freeze_observers_at": 0.5}}],
         "train": {"epochs": 1, "batch_size": 16, "max_steps": 4, "lr": 1e-3}},
    ], str(_tiny_dir(tmp, "tiny")))
    runner = PipelineRun(spec, results_root=tmp / "r")
    runner.run()
    yield runner
    mp.undo()


def _leftovers(folder: Path) -> list[Path]:
    return sorted((folder / "export").glob(".*")) if (folder / "export").exists() else []


@pytest.mark.parametrize("stage", ["t.static", "t.smooth", "p.qat"])
def test_static_int8_stages_export_as_qdq_with_their_own_scales_and_logits(run, stage, capsys):
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from workbench.cli import main
    from workbench.export_int8 import qdq_bound
    from workbench.recipes.quantize.static import Int8Linear

    folder = run.run_dir
    assert main(["export", str(folder), "--stage", stage, "--format", "onnx"]) == 0
    path = folder / "export" / f"{stage}.onnx"
    assert f"written: {path}" in capsys.readouterr().out and not _leftovers(folder)
    model = run.models[stage]
    layers = {n: m for n, m in model.named_modules() if isinstance(m, Int8Linear)}
    assert layers
    graph = onnx.load(str(path)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("DequantizeLinear") >= len(layers) and "QuantizeLinear" in ops
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"})
    int8 = [a for a in consts.values() if a.dtype == np.int8 and a.ndim == 2]
    assert len(int8) == len(layers)  # the weights are stored as int8, one per quantized Linear
    input_scales = {float(consts[n.input[1]]) for n in graph.node
                    if n.op_type == "QuantizeLinear" and n.input[1] in consts}
    assert input_scales == {float(np.float32(m.input_scale)) for m in layers.values()}  # the stage's own grids
    if stage == "p.qat":  # the pruned zeros are int8 zeros in the file
        assert sum((w == 0).mean() >= 0.45 for w in int8) == 12
    # an independent check: other texts than the probe, the file as a user would load it
    tok = run.stage_data[stage].tokenizer
    enc = tok(["the film was great number 3", "awful", "the film was bad number 12 and good number 4"],
              padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input_ids": enc["input_ids"].numpy(), "attention_mask": enc["attention_mask"].numpy()})[0]
    assert np.abs(got - ref).max() <= qdq_bound(ref)


def test_static_int8_stages_have_no_hf_export(run, tmp_path, capsys):
    from workbench.cli import main

    out = tmp_path / "x"
    assert main(["export", str(run.run_dir), "--stage", "p.qat", "--format", "hf", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "stage 'p.qat' is a static int8 model" in err and "use --format onnx (QDQ)" in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_qdq_logit_mismatch_fails_and_leaves_no_file(run, tmp_path, monkeypatch, capsys):
    import workbench.export as export
    from workbench.cli import main

    real = export.reference_logits
    monkeypatch.setattr(export, "reference_logits", lambda model, probe: real(model, probe) + 0.5)
    out = tmp_path / "s.onnx"
    assert main(["export", str(run.run_dir), "--stage", "t.static", "--format", "onnx", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "export of stage 't.static': the exported logits do not match the stage's" in err, err
    assert list(tmp_path.iterdir()) == []
