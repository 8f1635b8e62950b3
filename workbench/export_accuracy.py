"""`workbench export ... --accuracy`: the exported file's accuracy on the run's own evaluation
examples, beside the stage's.

The export's check compares logits on a probe batch of 8 texts within a bound; that says the file
computes the stage's function, not what the differences cost on real data. An int8 graph may
round differently from the stage it came from: a `dynamic_int8` stage's ONNX file quantizes its
activations on ONNX Runtime's grids, not torch's. So this runs the written file in ONNX Runtime
(or the Hugging Face folder in transformers) on exactly the examples the run measured the stage
on (its `eval.split`, the same `--quick` subset, tokenized with the stage's own tokenizer) and
reports both accuracies and how many predictions differ.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn


class OnnxClassifier(nn.Module):
    """An exported .onnx sequence classifier, called as the evaluator calls models:
    `forward(input_ids, attention_mask, token_type_ids)` -> an object with `.logits`. Inputs the
    graph does not take are not fed; segment ids it takes and is not given are 0."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, **_: Any) -> SimpleNamespace:
        given = {"input_ids": input_ids,
                 "attention_mask": torch.ones_like(input_ids) if attention_mask is None else attention_mask,
                 "token_type_ids": torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids}
        feed = {n: given[n].cpu().numpy().astype(np.int64) for n in self.input_names}
        return SimpleNamespace(logits=torch.from_numpy(np.asarray(self.session.run(None, feed)[0], np.float32)))


@dataclass
class ExportedAccuracy:
    """The exported file and its stage on the run's evaluation examples."""

    split: str
    examples: int
    accuracy: float
    stage_accuracy: float
    """The stage itself on the same examples, recomputed now (the run's metrics.json agrees
    unless the stage is rebuilt with another outcome)."""
    disagreements: int
    """Examples whose predicted class differs between the file and the stage."""
    max_abs_diff: float
    """The largest |Δlogit| between the file and the stage over these examples."""


def exported_accuracy(runner: Any, stage: str, model: nn.Module, tokenizer: Any, exported: nn.Module) -> ExportedAccuracy:
    """`exported` (an `OnnxClassifier` or a reloaded Hugging Face model) and the stage's `model`
    on the examples `runner` (the run's `PipelineRun`) measured the stage on."""
    from workbench.evaluate import classification_metrics, predict

    if getattr(runner, "data", None) is None:  # (a static_int8 export has prepared it already)
        runner._prepare()
    stage_data = runner._data_for(tokenizer, model, stage)
    data = stage_data.eval
    labels = np.asarray([int(data[i]["labels"]) for i in range(len(data))])
    batch = runner.spec.eval.batch_size
    mine, theirs = (predict(m, data, stage_data.collate, batch) for m in (exported, model))
    k = runner.task.num_labels

    def acc(logits: np.ndarray) -> float:
        return float(classification_metrics(logits.argmax(-1), labels, k)["accuracy"])

    if not len(labels):
        return ExportedAccuracy(runner.spec.eval.split, 0, 0.0, 0.0, 0, 0.0)
    return ExportedAccuracy(runner.spec.eval.split, len(labels), acc(mine), acc(theirs),
                            int((mine.argmax(-1) != theirs.argmax(-1)).sum()), float(np.abs(mine - theirs).max()))

