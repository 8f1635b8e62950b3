"""What a compiled `Engine` is made of: its kernels, sizes and sparsity (`EngineReport`, a mixin
of `workbench.runtime.engine.Engine`; read-only, nothing here runs the model)."""
from __future__ import annotations

from typing import Any

import numpy as np

from workbench.runtime import kernels as K


class EngineReport:
    """`Engine`'s introspection: `describe()`, `attention_impl()`, parameter and byte counts and
    per-layer sparsity, all read from the engine's `meta` and `tensors`."""

    # set by Engine.__init__
    meta: dict[str, Any]
    tensors: dict[str, np.ndarray]
    architecture: str
    attention: str
    impls: dict[str, str]
    _encoder: Any
    pack_sequences: bool   # an Engine class attribute

    def describe(self) -> dict[str, Any]:
        from workbench.runtime import choice

        return {
            "architecture": self.architecture,
            "quantize": self.meta["quantize"],
            "sparse_threshold": self.meta["sparse_threshold"],
            "kernel_choice": self.meta.get("kernel_choice", "threshold"), "dtype": self.meta.get("dtype"),
            "act_bits": self.meta.get("act_bits", 8),
            "int8_weights": self.meta.get("int8_weights"),
            "kernels_per_layer": choice.layer_summary(self.meta),
            # measure: the library kernel's per-layer picks checked on whole forwards (library_check)
            "library_check": self.meta.get("library_check"),
            "attention": self.attention_impl(),
            "layer_loop": ("compiled: workbench_ext.encoder.Int8Encoder, one call per forward"
                           + (" (token ids to logits)" if self._encoder.classifies else " (the layers)")
                           + ("; token dropping and exits: one call up to each exit check" if self.meta.get("dynamic") else "")
                           if self._encoder is not None else "per op: one Python call per kernel")
                          + ("; padded batches run without their padding" if self.pack_sequences else ""),
            "linears": {n: {**lm, "impl": self.impls[n]} for n, lm in self.meta["linears"].items()},
            "kernels": K.kernel_report(),
        }

    def attention_impl(self) -> str:
        """What the attention runs on here: "fp32", "bf16 (AMX)", "bf16 (AVX512-BF16)", "int8
        (AVX-512 VNNI)", or the fp32 fallback of a bf16 / int8 engine on a CPU (or forced ISA)
        without those instructions, said so."""
        if self.attention == "int8":
            if K.has_fused_attention() and K.attention_int8_runs():
                return "int8 (AVX-512 VNNI)"
            return "fp32 (int8 asked; no AVX-512 VNNI on this CPU or ISA)"
        if self.attention != "bf16":
            return "fp32"
        path = K.attention_bf16_path() if K.has_fused_attention() else None
        if path is not None:
            return {"amx": "bf16 (AMX)", "avx512_bf16": "bf16 (AVX512-BF16)"}[path]
        return "fp32 (bf16 asked; no AVX512-BF16 on this CPU or ISA)"

    def sparse_layers(self) -> list[str]:
        return [n for n, lm in self.meta["linears"].items() if lm["kind"].endswith("sparse")]

    def num_parameters(self) -> int:
        """Weights and biases as in the source model (quantization scales not counted)."""
        return int(sum(a.size for n, a in self.tensors.items() if not n.endswith(".scale")))

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.tensors.values()))

    def nonzero_parameters(self) -> int:
        return int(sum(np.count_nonzero(a) for n, a in self.tensors.items() if not n.endswith(".scale")))

    def layer_sparsity(self) -> dict[str, float]:
        """Fraction of zero weights per source encoder Linear (HF module names), as stored (int8
        weights count the values that quantized to 0)."""
        out: dict[str, float] = {}
        for name, lm in self.meta["linears"].items():
            if not name.startswith("layers."):
                continue
            w, row = self.tensors.get(f"{name}.weight"), 0
            for src, rows in lm.get("sources", [[name, lm["N"]]]):
                part = None if w is None else w[row:row + rows]
                out[src] = float(np.mean(part == 0)) if part is not None and part.size else 0.0
                row += rows
        return out
