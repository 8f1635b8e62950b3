"""`workbench export RUN [--stage NAME] --format onnx|hf [--out PATH]`: a finished stage as a file
another runtime loads, checked before it is reported.

What each stage kind becomes:
  * fp32 stages (dense, masked-sparse, structurally shrunk, trimmed vocabulary): `--format onnx`
    is the graph of `workbench bench`'s ONNX Runtime peer (`bench.engines.onnx_files`: TorchScript
    export at opset 17, ORT's BERT fusions, per-layer head counts for unevenly pruned layers),
    so it needs ONNX Runtime's contrib ops (`com.microsoft`) to run. `--format hf` is a
    `save_pretrained` folder with the stage's own tokenizer, reloaded with plain
    `AutoModelForSequenceClassification` for the check.
  * a `dynamic_int8` stage: `--format onnx` is its source stage's fp32 graph through
    `onnxruntime.quantization.quantize_dynamic` (QInt8 weights, integer MatMul ops; zero-width
    MatMuls of removed blocks stay fp32). Checked against the fp32 source, since ORT and torch
    quantize activations differently (torch's x86 engine with 7-bit activation grids): the
    exported graph must be no further from the fp32 model than the int8 bound below or than the
    torch int8 stage itself is, whichever is larger (the stage's own error is in the notes).
    `--format hf` fails: a torch quantized model has no Hugging Face save format.
  * a static int8 stage (`static_int8`, after `smoothquant` or not, or a converted `qat` stage):
    `--format onnx` is a QDQ graph with the stage's own calibrated input scales and per-channel
    int8 weights (`workbench.export_int8`), checked within `export_int8.qdq_bound`.
  * a structurally shrunk stage (recorded `workbench_edits`: uneven heads or FFN widths) has no
    `--format hf` export: a Hugging Face config describes uniform layers, so plain
    `from_pretrained` cannot rebuild it. The command fails naming the edits; the stage's own
    folder (`<run>/artifacts/<stage>/model`) reloads with `workbench.models.edits.load_edited_model`,
    and `--format onnx` exports it.
  * other inference-only stages (`workbench_runtime`, ...) are refused: export their source stage.

Inputs: `input_ids` and `attention_mask`, and `token_type_ids` too when the task has text pairs
and the model reads segment ids (BERT, MiniLM, ELECTRA: the probe's second texts are segment 1),
so the graph tells a pair's two texts apart as the stage does.

The check: a fixed probe batch (the first PROBE_SIZE validation texts of the run's task, padded,
tokenized with the stage's tokenizer) through the exported file and through the stage itself.
fp32: max |Δlogit| <= FP32_ATOL. Dynamic int8: against the fp32 source, max |Δlogit| <=
max(INT8_ATOL + INT8_RTOL * max |logit|, the torch int8 stage's own max |Δlogit| to it). In all, every probe row whose reference
top-2 margin exceeds twice the bound must keep its argmax (near-ties may flip). The file is
written in a temporary folder beside the destination and renamed into place only after the check
passes; on any failure nothing is left behind.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from workbench.config import ConfigError, config_to_dict
from workbench.data.pairs import tokenize_texts
from workbench.export_accuracy import ExportedAccuracy, OnnxClassifier, exported_accuracy
from workbench.export_int8 import export_qdq, is_qdq_stage, qdq_bound

FORMATS = ("onnx", "hf")
PROBE_SIZE = 8
FP32_ATOL = 1e-4
INT8_ATOL, INT8_RTOL = 0.05, 0.05


@dataclass
class ExportResult:
    """What `export_stage` wrote and how well the exported file reproduced the stage."""

    stage: str
    kind: str  # "fp32", "dynamic_int8" or "static_int8" (QDQ)
    format: str
    path: Path
    examples: int
    max_abs_diff: float
    argmax_agreement: float
    bound: float
    notes: str = ""
    accuracy: ExportedAccuracy | None = None
    """With `accuracy=True`: the written file and the stage on the run's evaluation examples."""


def reference_logits(model: nn.Module, probe: dict[str, torch.Tensor]) -> np.ndarray:
    """The stage's own logits on the probe batch (the check's reference)."""
    return _logits(model, probe)


def _logits(model: nn.Module, probe: dict[str, torch.Tensor]) -> np.ndarray:
    with torch.inference_mode():
        return model(**probe).logits.float().numpy()


def check_logits(stage: str, got: np.ndarray, ref: np.ndarray, bound: float) -> tuple[float, float]:
    """(max |Δlogit|, argmax agreement); a ConfigError naming the stage when out of bounds."""
    if got.shape != ref.shape:
        raise ConfigError(f"export of stage '{stage}': the exported logits have shape {got.shape}, "
                          f"the stage's {ref.shape}")
    diff = float(np.abs(got - ref).max()) if ref.size else 0.0
    agree = got.argmax(-1) == ref.argmax(-1)
    top2 = np.sort(ref, axis=-1)[:, -2:] if ref.shape[-1] > 1 else np.zeros((len(ref), 2))
    decisive = (top2[:, 1] - top2[:, 0]) > 2 * bound
    if not np.isfinite(diff) or diff > bound or not agree[decisive].all():
        raise ConfigError(f"export of stage '{stage}': the exported logits do not match the stage's (max |Δlogit| "
                          f"{diff:.3g} > {bound:.3g} allowed, or argmax differs on {int((~agree & decisive).sum())} "
                          "clear-cut probe texts); nothing was written")
    return diff, float(agree.mean())


def export_stage(run: str | Path, stage: str | None = None, fmt: str = "onnx",
                 out: str | Path | None = None, accuracy: bool = False) -> ExportResult:
    """Export one finished stage of `run` (default: its last measured stage), check its logits
    on the probe batch, then move it to `out` (default `<run>/export/<stage>.onnx` or
    `<run>/export/<stage>-hf/`). Every refusal is a ConfigError naming the stage and the reason.
    `accuracy`: then run the written file and the stage on the run's evaluation examples
    (`workbench.export_accuracy`)."""
    from workbench.pipeline.eval_other import load_stage_model, run_folder
    from workbench.pipeline.run import PipelineRun, engine_name
    from workbench.pipeline.spec import PipelineSpec
    from workbench.results import read_json

    folder = run_folder(run)
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    info = read_json(folder / "metrics.json")
    spec = PipelineSpec.from_yaml(folder / "recipe.yaml")
    names = [s.name for s in spec.stages]
    measured = {m["stage"]: m for m in info["stages"]}
    if stage is None:
        done = [n for n in names if n in measured]
        if not done:
            raise ConfigError(f"run '{folder.name}' has no finished stage to export")
        stage = done[-1]
    if stage not in names:
        raise ConfigError(f"run '{folder.name}' has no stage '{stage}' (stages: {', '.join(names)})")
    index = names.index(stage)
    runner = PipelineRun(spec, results_root=folder.parent, run_name=folder.name, quick=bool(info.get("quick")))
    source = runner._source(index)
    kind = _stage_kind(spec.stages[index], names[source] if source is not None else None, fmt)
    if kind == "static_int8":
        runner._prepare()  # a rebuilt static_int8 stage calibrates on the run's own training batches
    dest = Path(out) if out is not None else folder / "export" / (f"{stage}.onnx" if fmt == "onnx" else f"{stage}-hf")

    if fmt == "onnx" and dest.is_dir():
        raise ConfigError(f"--out {dest} is a folder; give the .onnx file's path")
    cache: dict[int, Any] = {}
    found = load_stage_model(runner, index, measured, cache)
    if found is None:
        raise ConfigError(f"stage '{stage}' of run '{folder.name}' is not finished (no saved model); "
                          "finish it with `workbench run` first")
    model, tokenizer = found
    if kind == "fp32" and engine_name(model) != "torch-fp32":
        raise ConfigError(f"stage '{stage}' is a {engine_name(model)} model, which export does not support")
    texts = _probe_texts(spec)
    probe = _tokenize(tokenizer, texts, spec.task.max_length)
    ref = reference_logits(model, probe)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as tmp:
        if fmt == "onnx" and kind == "static_int8":
            written, got, notes = export_qdq(stage, model, probe, Path(tmp))
        elif fmt == "onnx":
            fp32 = model if kind == "fp32" else load_stage_model(runner, source, measured, cache)[0]
            written, got, notes = _to_onnx(stage, fp32, kind == "dynamic_int8", probe, Path(tmp))
            if kind == "dynamic_int8":  # both int8 models approximate the fp32 source: compare with it
                stage_logits, ref = ref, reference_logits(fp32, probe)
                stage_err = float(np.abs(stage_logits - ref).max()) if ref.size else 0.0
                notes += f"; checked against the fp32 source (the torch int8 stage is {stage_err:.3g} from it)"
        else:
            written, got, notes = _to_hf(stage, model, tokenizer, texts, spec.task.max_length, probe, Path(tmp))
        bound = (FP32_ATOL if kind == "fp32" else qdq_bound(ref) if kind == "static_int8"
                 else max(INT8_ATOL + INT8_RTOL * float(np.abs(ref).max()), stage_err))
        diff, agree = check_logits(stage, got, ref, bound)
        _move_into_place(written, dest)
    measured_on = None
    if accuracy:
        if fmt == "onnx":
            exported: nn.Module = OnnxClassifier(dest)
        else:
            from transformers import AutoModelForSequenceClassification

            exported = AutoModelForSequenceClassification.from_pretrained(str(dest), local_files_only=True).eval()
        measured_on = exported_accuracy(runner, stage, model, tokenizer, exported)
    return ExportResult(stage, kind, fmt, dest, len(texts), diff, agree, bound, notes, measured_on)


def _stage_kind(stage: Any, source: str | None, fmt: str) -> str:
    """"fp32", "dynamic_int8" or "static_int8", from the stage's recipes (before any model loads)."""
    from workbench.recipes.base import recipe_class

    where = f"stage '{stage.name}'"
    if is_qdq_stage([(n, config_to_dict(c)) for n, c in stage.recipes]):
        if fmt == "hf":
            raise ConfigError(f"stage '{stage.name}' is a static int8 model (int8 layers with calibrated input scales), "
                              "which has no Hugging Face save format; use --format onnx (QDQ)")
        return "static_int8"
    if stage.trains or not all(recipe_class(n, where).inference_only for n, _ in stage.recipes):
        return "fp32"
    instead = f"; export its source stage '{source}' instead" if source else ""
    recipes = [n for n, _ in stage.recipes]
    if recipes == ["dynamic_int8"] and config_to_dict(stage.recipes[0][1]).get("targets") is None:
        if fmt == "hf":
            raise ConfigError(f"stage '{stage.name}' is a torch dynamic-int8 model, which has no Hugging Face "
                              f"save format; use --format onnx (integer ops){instead}")
        return "dynamic_int8"
    why = ("dynamic_int8 with `targets` (a partly quantized model) has no ONNX int8 equivalent here"
           if recipes == ["dynamic_int8"] else f"its recipes ({', '.join(recipes)}) build an inference-only model "
                                               "that export does not support")
    raise ConfigError(f"stage '{stage.name}' cannot be exported: {why}{instead}")


def _probe_texts(spec: Any) -> list[str]:
    from workbench.data import load_task

    texts = list(load_task(spec.task, seed=spec.seed).splits["validation"]["text"][:PROBE_SIZE])
    if not texts:
        raise ConfigError(f"task '{spec.task.name}' has no validation texts to check the export on")
    return texts


def _tokenize(tokenizer: Any, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """The probe batch: input ids and mask, and the segment ids where some are not 0 (a text
    pair's second text, for a model that reads them)."""
    enc = tokenize_texts(tokenizer, texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    probe = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if "token_type_ids" in enc and bool(enc["token_type_ids"].any()):
        probe["token_type_ids"] = enc["token_type_ids"]
    return probe


def _to_onnx(stage: str, model: nn.Module, int8: bool, probe: dict[str, torch.Tensor],
             tmp: Path) -> tuple[Path, np.ndarray, str]:
    """The bench's ONNX graph (fp32 or dynamic int8) in `tmp`, and its ORT logits on the probe."""
    import onnxruntime as ort

    from workbench.bench.engines import onnx_files

    try:
        opt, q8, notes = onnx_files(model, tmp, stage, segments="token_type_ids" in probe)
        path = q8 if int8 else opt
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {k: v.numpy().astype(np.int64) for k, v in probe.items()})[0]
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"stage '{stage}' could not be exported to ONNX: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}; nothing was written") from None
    return path, np.asarray(got, dtype=np.float32), notes + (", quantize_dynamic QInt8" if int8 else "")


def _to_hf(stage: str, model: nn.Module, tokenizer: Any, texts: list[str], max_length: int,
           probe: dict[str, torch.Tensor], tmp: Path) -> tuple[Path, np.ndarray, str]:
    """A save_pretrained folder in `tmp`, and the logits of its plain-HF reload on the probe."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    edits = list(getattr(model.config, "workbench_edits", None) or [])
    if edits:
        ops = sorted({f"{e['op']} (layer {e.get('layer', '?')})" for e in edits})
        raise ConfigError(
            f"stage '{stage}' is structurally shrunk ({', '.join(ops[:4])}{' ...' if len(ops) > 4 else ''}): "
            "a Hugging Face config describes uniform layers, so plain from_pretrained cannot rebuild it; use "
            "--format onnx, or load its folder with workbench.models.edits.load_edited_model")
    folder = tmp / "hf"
    try:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        reloaded = AutoModelForSequenceClassification.from_pretrained(str(folder), local_files_only=True).eval()
        again = _tokenize(AutoTokenizer.from_pretrained(str(folder), local_files_only=True), texts, max_length)
    except Exception as exc:
        raise ConfigError(f"stage '{stage}' could not be saved and reloaded as a Hugging Face folder: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; nothing was written") from None
    if not all(torch.equal(again[k], probe[k]) for k in probe):
        raise ConfigError(f"export of stage '{stage}': the saved tokenizer does not reproduce the stage's token ids")
    return folder, _logits(reloaded, again), "save_pretrained; reloads with AutoModelForSequenceClassification"


def _move_into_place(written: Path, dest: Path) -> None:
    """Rename the checked file/folder onto `dest` (same filesystem); an earlier export there is
    replaced only once the new one is in place."""
    if written.is_dir():
        old = None
        if dest.exists():
            old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old."))
            os.replace(dest, old / "x")
        os.replace(written, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(written, dest)
