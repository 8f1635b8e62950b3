"""Measure a model: accuracy, macro-F1, parameters, non-zeros, size, latency and throughput.

Any model works that takes `input_ids`/`attention_mask` and returns an object with `.logits`
(Hugging Face models, torch-quantized copies, the workbench runtime's `EngineModule`). A model
may describe its own storage with `workbench_stats(compress: bool) -> {"params",
"nonzero_params", "disk_bytes", and "zlib_bytes" when compress}`; otherwise parameters and
buffers are counted, int8 packed weights included.
"""
from __future__ import annotations

import io
import statistics
import time
import zlib
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from workbench.config import ConfigError
from workbench.data.metrics import classification_metrics
from workbench.forward import model_inputs
from workbench.models.arch import architecture
from workbench.train import example_lengths


def is_torch_quantized(model: nn.Module) -> bool:
    """True for a torch.ao quantized model (its Linear layers hold packed int8 weights)."""
    return any(hasattr(m, "_packed_params") for m in model.modules())


@torch.no_grad()
def predict(model: nn.Module, data: Any, collate: Callable[[list], dict], batch_size: int = 64) -> np.ndarray:
    """Logits for every example, in the order of `data`.

    Examples are batched shortest first so that a batch pads to lengths close to its own
    (about 2x less work than padding random batches on short-sentence tasks); attention masks
    make each example's logits independent of its batch-mates.
    """
    model.eval()
    n = len(data)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    order = np.argsort(example_lengths(data), kind="stable")
    out = []
    for start in range(0, n, batch_size):
        batch = collate([data[int(i)] for i in order[start:start + batch_size]])
        out.append(model(**model_inputs(batch)).logits.float().cpu().numpy())
    logits = np.empty((n, out[0].shape[1]), dtype=np.float32)
    logits[order] = np.concatenate(out)
    return logits


def accuracy_metrics(model: nn.Module, data: Any, collate: Callable[[list], dict], num_labels: int,
                     batch_size: int = 64, counts: bool = False) -> dict[str, Any]:
    """accuracy and macro_f1 on `data`; with `counts`, also pred_counts and label_counts (examples
    predicted as / labelled with each class)."""
    logits = predict(model, data, collate, batch_size)
    labels = np.asarray([int(data[i]["labels"]) for i in range(len(data))])
    preds = logits.argmax(-1) if logits.size else np.zeros(0, dtype=np.int64)
    return classification_metrics(preds, labels, num_labels, counts=counts)


def _tensors(model: nn.Module) -> list[torch.Tensor]:
    """Every stored tensor; torch.ao's packed int8 Linear weights appear in the state dict as a
    (weight, bias) tuple."""
    out = []
    for v in model.state_dict().values():
        if isinstance(v, torch.Tensor):
            out.append(v)
        elif isinstance(v, tuple):  # torch.ao dynamic quantized linear: (packed params) -> (w, b)
            out.extend(t for t in v if isinstance(t, torch.Tensor))
    return [t.int_repr() if t.is_quantized else t for t in out if t.dtype != torch.int64 or t.numel() > 1]


def storage_stats(model: nn.Module, compress: bool = True) -> dict[str, float | None]:
    """params, nonzero_params, disk_mb (serialized state) and zlib_mb (the same, compressed; None
    when not `compress`: zlib takes 2-4 s for a MiniLM, which quick runs skip)."""
    stats_fn = getattr(model, "workbench_stats", None)
    if callable(stats_fn):
        s = stats_fn(compress=compress)
        zlib_bytes = s.get("zlib_bytes", s["disk_bytes"]) if compress else None
        return {"params": int(s["params"]), "nonzero_params": int(s["nonzero_params"]),
                "disk_mb": s["disk_bytes"] / 2**20, "zlib_mb": None if zlib_bytes is None else zlib_bytes / 2**20}
    tensors = [t for t in _tensors(model) if t.is_floating_point() or t.dtype in (torch.int8, torch.uint8)]
    params = sum(t.numel() for t in tensors)
    nonzero = sum(int(torch.count_nonzero(t)) for t in tensors)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    raw = buf.getvalue()
    return {"params": params, "nonzero_params": nonzero, "disk_mb": len(raw) / 2**20,
            "zlib_mb": compressed_size(raw) / 2**20 if compress else None}


def compressed_size(raw: bytes, chunk: int = 8 << 20) -> int:
    """Bytes after zlib (level 1), compressed in 8 MiB chunks on a thread pool (zlib releases
    the GIL), which is how a model file would be compressed in parallel."""
    from concurrent.futures import ThreadPoolExecutor

    view = memoryview(raw)
    parts = [view[i:i + chunk] for i in range(0, len(raw), chunk)] or [view]
    with ThreadPoolExecutor(max_workers=max(1, min(len(parts), torch.get_num_threads()))) as pool:
        return sum(pool.map(lambda part: len(zlib.compress(part, 1)), parts))


@torch.no_grad()
def speed_inputs(vocab_size: int, seq_len: int, batch_size: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """The random token batch speed is measured on (seeded: every engine sees the same one)."""
    g = torch.Generator().manual_seed(seed)
    low = 1000 if vocab_size > 1001 else 0  # a small (e.g. trimmed) vocabulary: any of its ids
    ids = torch.randint(low, max(low + 1, vocab_size - 1), (batch_size, seq_len), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def measure_speed(model: nn.Module, vocab_size: int, seq_len: int = 128, batch_size: int = 1,
                  iters: int = 20, warmup: int = 3, seed: int = 0) -> dict[str, float]:
    """Median latency (ms) of one forward pass on random tokens and the samples/s it implies."""
    inputs = speed_inputs(vocab_size, seq_len, batch_size, seed)
    model.eval()
    for _ in range(warmup):
        model(**inputs)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        model(**inputs)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {"latency_ms": 1000 * median, "throughput": batch_size / median,
            "latency_ms_min": 1000 * min(times), "latency_ms_max": 1000 * max(times)}


def _linear_weight(m: nn.Module) -> torch.Tensor | None:
    """The 2-D weight of a Linear, plain or torch-quantized (int8 values for packed ones)."""
    if isinstance(m, nn.Linear):
        return m.weight
    unpack = getattr(getattr(m, "_packed_params", None), "_weight_bias", None)
    if callable(unpack):
        w = unpack()[0]
        return w.int_repr() if w.is_quantized else w
    return None


def per_layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Fraction of zeros in the weight of each encoder Linear (plain or torch-quantized), by
    qualified name in layer order.

    The encoder Linears come from the architecture adapter (`workbench.models.arch`); a model
    that describes itself (`workbench_layer_sparsity()`, e.g. the runtime's EngineModule) is
    asked; a model of an unsupported family reports every Linear it has.
    """
    sparsity_fn = getattr(model, "workbench_layer_sparsity", None)
    if callable(sparsity_fn):
        return dict(sparsity_fn())
    try:
        modules = architecture(model).encoder_linears()
    except ConfigError:
        modules = dict(model.named_modules())
    out = {}
    for name, m in modules.items():
        w = _linear_weight(m)
        if w is not None and w.numel():  # a layer shrunk to zero width has nothing to report
            out[name] = float((w == 0).float().mean())
    return out
