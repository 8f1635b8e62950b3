"""`BenchEngine`, the interface every `workbench bench` engine implements (the engines themselves
and their registry are in `engines.py`; the ONNX Runtime ones in `ort_engines.py`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


class BenchEngine:
    name = ""
    sparsity = 0.0  # the model is pruned to this block sparsity before setup
    block = (1, 4)  # in blocks of this shape (rows x inputs of a Linear weight)
    notes = ""
    shape = (1, 128)  # (batch, seq) of the bench, set by the worker before setup
    batches: tuple[int, ...] = (1,)  # every batch size the bench runs, set by the worker
    variants: tuple[str, ...] = ()
    """Set by an engine that is several configurations of one peer (ORT int8's four graphs): the
    worker times each in every turn and each row reports the one with the best median there."""
    variant_notes: dict[str, str] = {}  # how each variant was made, for its rows' notes

    def setup(self, model: torch.nn.Module, threads: int, cache_dir: Path, model_name: str) -> None:
        raise NotImplementedError

    def feed(self, inputs: dict[str, torch.Tensor]) -> Any:
        return inputs

    def run(self, feed: Any) -> np.ndarray:
        raise NotImplementedError

    def use(self, variant: str) -> None:
        """Make `run` call this one of `variants` (engines with variants only)."""
        raise NotImplementedError

    def worker_share(self) -> float | None:
        """For engines on workbench's kernel pool: the share of the last `run`'s parallel chunks
        that the pool's worker threads ran (about 1 - 1/threads when they all kept up, near 0
        when the caller did the work alone); None for the others. The bench reports it per
        timed run (`worker_share_runs`), to tell a slow run with absent workers from one where
        every thread was slow."""
        return None
