"""Measuring one stage's model into its row of the run's metrics: accuracy and macro-F1 on the
evaluation split, a flag for a degenerate classifier, size and sparsity, and speed (timed in a
worker process, pipeline/speed.py)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from workbench.data import Task
from workbench.data.metrics import degenerate_reason
from workbench.evaluate import accuracy_metrics, is_torch_quantized, per_layer_sparsity, storage_stats
from workbench.pipeline.spec import PipelineSpec
from workbench.pipeline.speed import stage_speed

if TYPE_CHECKING:
    from workbench.pipeline.run import StageData


def engine_name(model: nn.Module) -> str:
    if hasattr(model, "workbench_engine"):
        return str(model.workbench_engine)
    return "torch-int8" if is_torch_quantized(model) else "torch-fp32"


def measure_stage(stage: str, model: nn.Module, data: StageData, spec: PipelineSpec, task: Task, *,
                  quick: bool, seed: int) -> dict[str, Any]:
    """The metrics of stage `stage`'s `model` on `data` (its evaluation split, under the stage's
    tokenizer), measured as `spec.eval` says (`spec.quick` when `quick`); `seed` is recorded."""
    ev = spec.eval
    m: dict[str, Any] = {"stage": stage, "engine": engine_name(model)}
    m.update(accuracy_metrics(model, data.eval, data.collate, task.num_labels, ev.batch_size,
                              counts=True))
    # one class for everything, or no better than guessing: flagged, not hidden (data/metrics.py)
    m["degenerate"] = degenerate_reason(m["pred_counts"], m["label_counts"], m["macro_f1"],
                                        task.label_names)
    m.update(storage_stats(model, compress=not quick))  # zlib_mb: None in quick runs (2-4 s a stage)
    m["sparsity"] = 1.0 - m["nonzero_params"] / max(1, m["params"])
    iters = spec.quick.speed_iters if quick else ev.speed_iters
    vocab = data.tokenizer.vocab_size  # random ids: within the model's (maybe trimmed) vocabulary
    model_vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    vocab = min(vocab, model_vocab) if isinstance(model_vocab, int) else vocab
    # in a fresh worker process per stage, with threads, ISA and load average (pipeline/speed.py)
    m.update(stage_speed(model, vocab, ev.seq_len, ev.speed_batches, iters=iters, warmup=1 if quick else 3))
    m["seq_len"], m["seed"] = ev.seq_len, seed
    m["per_layer_sparsity"] = per_layer_sparsity(model)
    return m
