"""`EngineModule`: an `Engine` behind the `torch.nn.Module` interface of an HF classifier.

The library's evaluation and pipeline code call `model(input_ids=..., attention_mask=...)` and
read `.logits`; this wrapper lets them do so unchanged on a compiled engine (CPU only, inference
only: it has no trainable parameters).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from workbench.runtime.engine import Engine


class EngineModule(nn.Module):
    """forward(input_ids, attention_mask=None, token_type_ids=None, labels=None) ->
    `SequenceClassifierOutput` with `.logits` (float32 torch tensor) and `.loss` when labels.
    An engine compiled from a model with `model.dynamic` runs it (token dropping, early exits);
    the engine call's overrides (`length_ratios=`, `exit_threshold=`, `exit_at=`, `spec=`...)
    pass through as keyword arguments."""

    def __init__(self, engine: Engine, config: Any = None) -> None:
        super().__init__()
        self.engine = engine
        self.config = config if config is not None else _config_from_meta(engine.meta)
        self.eval()

    @property
    def num_labels(self) -> int:
        return self.engine.num_labels

    def forward(self, input_ids: Any = None, attention_mask: Any = None, token_type_ids: Any = None,
                labels: Any = None, **kwargs: Any) -> Any:
        from transformers.modeling_outputs import SequenceClassifierOutput

        if input_ids is None:
            raise ValueError("EngineModule needs input_ids (inputs_embeds are not supported)")
        from workbench.runtime.dynamic import OVERRIDES

        dynamic = {k: kwargs[k] for k in (*OVERRIDES, "spec") if k in kwargs}
        logits = torch.from_numpy(self.engine(_to_np(input_ids), _to_np(attention_mask),
                                              _to_np(token_type_ids), **dynamic))
        loss = None
        if labels is not None:
            labels = torch.as_tensor(labels)
            if self.engine.num_labels == 1:
                loss = nn.functional.mse_loss(logits.squeeze(-1), labels.float())
            else:
                loss = nn.functional.cross_entropy(logits, labels.long())
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def train(self, mode: bool = True) -> "EngineModule":
        # always inference: the engine has no dropout and no gradients
        return super().train(False)

    # sizes for evaluation code (an EngineModule has no nn.Parameters)
    def num_parameters(self) -> int:
        return self.engine.num_parameters()

    def nbytes(self) -> int:
        return self.engine.nbytes()

    def workbench_stats(self, compress: bool = True) -> dict[str, int]:
        """For workbench.evaluate.storage_stats: sizes of the engine as saved (`zlib_bytes` only
        when `compress`)."""
        import json

        from workbench.evaluate import compressed_size

        raw = self.engine.serialized()
        meta = len(json.dumps(self.engine.meta, indent=1, sort_keys=True).encode())
        stats = {"params": self.engine.num_parameters(), "nonzero_params": self.engine.nonzero_parameters(),
                 "disk_bytes": len(raw) + meta}
        if compress:
            stats["zlib_bytes"] = compressed_size(raw) + meta
        return stats

    def workbench_layer_sparsity(self) -> dict[str, float]:
        """For workbench.evaluate.per_layer_sparsity: zeros per encoder Linear (HF names)."""
        return self.engine.layer_sparsity()

    @property
    def workbench_engine(self) -> str:
        """The `engine` name the pipeline's metrics record (workbench.pipeline.engine_name)."""
        kinds = {lm["kind"] for lm in self.engine.meta["linears"].values()}
        name = "workbench-int8" if self.engine.meta["quantize"] else "workbench-fp32"
        name += "-sparse" if any(k.endswith("sparse") for k in kinds) else ""
        impl = self.engine.attention_impl()
        name += "-bf16attn" if impl.startswith("bf16") else "-int8attn" if impl.startswith("int8") else ""
        from workbench.runtime.dynamic import resolve

        return name + ("" if resolve(self.engine, {}) is None else "-dynamic")

    # Deliberately no `save_pretrained`: the pipeline saves only HF models and rebuilds compiled
    # ones from the previous stage (an engine dir is not loadable by from_pretrained).
    def save(self, directory: str | os.PathLike) -> Path:
        return self.engine.save(directory)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "EngineModule":
        return cls(Engine.load(directory))

    def extra_repr(self) -> str:
        return repr(self.engine)


def _to_np(x: Any) -> Any:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _config_from_meta(meta: dict[str, Any]) -> Any:
    cfg = dict(meta.get("hf_config") or {})
    if not cfg.get("model_type"):
        return None
    try:
        from transformers import AutoConfig

        model_type = cfg.pop("model_type")
        for k in ("transformers_version", "architectures", "torch_dtype", "dtype"):
            cfg.pop(k, None)
        return AutoConfig.for_model(model_type, **cfg)
    except Exception:  # pragma: no cover - a config is a convenience, never required
        return None
