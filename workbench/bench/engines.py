"""The engines `workbench bench` compares. Each runs in its own process (see worker.py).

An engine is set up once on a model, then called on a prepared feed:

    eng = ENGINES[name]()
    eng.setup(model, threads, cache_dir)
    feed = eng.feed(inputs)          # inputs: {"input_ids", "attention_mask"} torch int64
    logits = eng.run(feed)           # np.ndarray [batch, num_labels]; this call is timed

Peers are set up the way their documentation recommends for CPU inference:
  * torch: `torch.inference_mode()`, `torch.set_num_threads`; bf16 casts the model with
    `.to(torch.bfloat16)`; dynamic int8 is `torch.ao.quantization.quantize_dynamic` (the
    project's `quantize_dynamic_int8`) with the `x86` (fbgemm) or `onednn` quantized engine.
  * ONNX Runtime: `torch.onnx.export` (TorchScript exporter, eager attention so the fusions
    apply), `onnxruntime.transformers.optimizer.optimize_model(model_type="bert")` (fused
    Attention / SkipLayerNorm / BiasGelu / EmbedLayerNorm), then for int8
    `onnxruntime.quantization.quantize_dynamic` (QInt8 weights). ORT int8 in its strongest
    configuration: four variants (`ort-int8-<graph>-<weights>`): the plain exported graph or the
    ORT-optimized one (fused Attention -> QAttention), per-tensor (`pt`) or per-channel (`pc`)
    weight scales; `ort-int8` sets up all four, every turn times each of them (a pause,
    untimed calls for `worker.WARM_S`, one timed call; `workbench.bench.worker`), and each
    batch's row is the variant with the best median there (its `variant` column and notes name it; a variant that fails to
    quantize, load or run is left out, and said so).
    `intra_op_num_threads = threads`, one inter-op thread, spinning on (ORT's default: its workers
    spin between ops, as torch's OpenMP threads and workbench's pool threads do for ~0.2 ms:
    `workbench_ext.OPENMP_DEFAULTS`, `WORKBENCH_POOL_SPIN_US`).
  * workbench: `workbench.runtime.compile_model` (int8), on the unpruned model (`wb-int8`) or
    on a copy pruned to 70/80/90% 1x4-block sparsity (`wb-int8-sp70` ...), or in 16x64 blocks,
    one AMX weight tile each (`wb-int8-tile70` ...; on AMX the tile-sparse kernel is then a
    candidate, and `default_engines` adds `wb-int8-tile90`), with
    `kernel_choice="measure"` at each of the bench's batch sizes (each Linear on the fastest of
    the dense, block-sparse and library kernels at every row count; the notes give the kernel of
    every layer and where it switches); `wb-int8-onednn`: every Linear on the library kernel
    (torch's `_int_mm`, oneDNN; same outputs); `wb-bf16`: dense Linears in
    bf16 (AVX512-BF16 `vdpbf16ps`; fp32 BLAS on a CPU without it, the notes say which).

Run-to-run spread: `workbench bench` reports the median and min-max of >= 5 timed runs (default
7 after 2 warm-ups; worker.py, where the measurements behind the thread settings are noted).

The ONNX Runtime engines (with the export and quantization behind them) are in `ort_engines.py`,
the `BenchEngine` interface in `bench_engine.py`; both are re-exported here.
"""
from __future__ import annotations

import json

import torch

from workbench.bench.bench_engine import BenchEngine
from workbench.bench.ort_engines import ORT_INT8_VARIANTS, OrtExported, OrtFp32, OrtInt8, _ort_variant
from workbench.bench.ort_engines import (  # noqa: F401  (re-exported: `bench.engines.onnx_files` ...)
    fix_attention_heads, onnx_files, onnx_graphs, onnx_int8, ort_has_vnni, ort_session, zero_size_nodes)


# ------------------------------------------------------------------------------------ torch
class TorchFp32(BenchEngine):
    name = "torch-fp32"

    def setup(self, model, threads, cache_dir, model_name):
        self.model = model.eval()
        self.notes = f"attn={getattr(model.config, '_attn_implementation', '?')}"

    def run(self, feed):
        with torch.inference_mode():
            return self.model(**feed).logits.float().numpy()


class TorchBf16(TorchFp32):
    name = "torch-bf16"

    def setup(self, model, threads, cache_dir, model_name):
        self.model = model.eval().to(torch.bfloat16)
        self.notes = "model.to(bfloat16)"


class TorchInt8(TorchFp32):
    qengine = "x86"

    def setup(self, model, threads, cache_dir, model_name):
        from workbench.recipes.quantize.dynamic import quantize_dynamic_int8, zero_width_linears

        empty = zero_width_linears(model)  # quantize_dynamic_int8 leaves them fp32
        self.model = quantize_dynamic_int8(model, self.qengine)
        self.notes = f"quantize_dynamic, engine={torch.backends.quantized.engine}" + (
            f"; {len(empty)} zero-width Linears left fp32" if empty else "")


class TorchInt8X86(TorchInt8):
    name = "torch-int8-x86"
    qengine = "x86"


class TorchInt8OneDNN(TorchInt8):
    name = "torch-int8-onednn"
    qengine = "onednn"


# ---------------------------------------------------------------------------------- workbench
class Workbench(BenchEngine):
    name = "wb-int8"
    quantize = True
    dtype: str | None = None
    attention = "fp32"
    act_bits = 8
    int8_weights = "auto"
    kernel_choice = "measure"
    _pool = None                            # workbench_ext.pool, once set up with the kernels built
    _worker_share: float | None = None      # of the last run

    def setup(self, model, threads, cache_dir, model_name):
        from workbench.runtime import compile_model, kernel_report, library_check
        from workbench.runtime.choice import layer_summary

        try:
            from workbench_ext import pool
        except ImportError:     # no compiled kernels: the engine says so; no shares to report
            pool = None
        self._pool = pool

        self.engine = compile_model(model, quantize=self.quantize, sparse_threshold=0.5, dtype=self.dtype,
                                    attention=self.attention, act_bits=self.act_bits,
                                    int8_weights=self.int8_weights, kernel_choice=self.kernel_choice,
                                    choice_shape=tuple(self.shape),
                                    choice_batches=tuple(b for b in self.batches if b > self.shape[0]))
        kinds: dict[str, int] = {}
        for impl in self.engine.impls.values():
            kinds[impl] = kinds.get(impl, 0) + 1
        rep = kernel_report()
        fallbacks = sorted(k for k, v in rep.items() if v == "numpy-fallback")
        self.notes = (f"isa={rep['isa']}; " + "; ".join(f"{v}x {k}" for k, v in kinds.items())
                      + f"; kernels {layer_summary(self.engine.meta)}"
                      + (f"; {library_check.summary(self.engine.meta)}" if self.engine.meta.get("library_check") else "")
                      + f"; layer loop {self.engine.describe()['layer_loop'].split(':')[0]}"
                      + (f"; attention {self.engine.attention_impl()}" if self.attention != "fp32" else "")
                      + ("; 7-bit activations (act_bits=7)" if self.act_bits == 7 else "")
                      + ("; pair-bounded int8 weights" if self.engine.meta.get("int8_weights") == "pair_bounded" else "")
                      + (f"; NumPy fallback for: {', '.join(fallbacks)}" if fallbacks else ""))
        if self.engine.meta.get("dynamic"):  # a stage with model.dynamic runs at its saved spec
            spec = {k: v for k, v in self.engine.meta["dynamic"].items() if v not in (None, [])}
            self.notes += "; dynamic " + json.dumps(spec, separators=(",", ":")).replace(",", " ")

    def feed(self, inputs):
        return (inputs["input_ids"].numpy(), inputs["attention_mask"].numpy())

    def run(self, feed):
        pool = self._pool
        if pool is None:
            return self.engine(*feed)
        before = pool.stats()   # two counter reads (~1 us): inside the timed call, negligible
        out = self.engine(*feed)
        after = pool.stats()
        by_workers = after["chunks_by_workers"] - before["chunks_by_workers"]
        total = by_workers + after["chunks_by_caller"] - before["chunks_by_caller"]
        self._worker_share = by_workers / total if total else None
        return out

    def worker_share(self) -> float | None:
        return self._worker_share


class WorkbenchOneDNN(Workbench):
    """Every Linear on the library kernel (torch's `_int_mm`, oneDNN) between our quantization
    and epilogue: the same outputs as `wb-int8`, so the two compare the GEMM kernels alone."""
    name = "wb-int8-onednn"
    kernel_choice = "library"


class WorkbenchFp32(Workbench):
    name = "wb-fp32"
    quantize = False


class WorkbenchBf16(Workbench):
    name = "wb-bf16"
    quantize = False
    dtype = "bf16"


def _sparse(level: int) -> type[Workbench]:
    return type(f"WorkbenchSp{level}", (Workbench,), {"name": f"wb-int8-sp{level}", "sparsity": level / 100})


def _tile_sparse(level: int) -> type[Workbench]:
    """Pruned in (16, 64) blocks, one AMX weight tile each: on AMX and AVX-512 VNNI the
    tile-sparse kernel skips them (a per-layer candidate); elsewhere they are also 1x4 blocks
    for the block-sparse kernel."""
    return type(f"WorkbenchTile{level}", (Workbench,),
                {"name": f"wb-int8-tile{level}", "sparsity": level / 100, "block": (16, 64)})


_ATTENTION_SUFFIX = {"bf16": "bf16attn", "int8": "i8attn"}


def _attention(base: type[Workbench], precision: str) -> type[Workbench]:
    """`base` with bf16 (AVX512-BF16) or int8 (AVX-512 VNNI) attention operands
    (`compile_model(attention=precision)`), named `<base>-bf16attn` / `<base>-i8attn`."""
    return type(f"{base.__name__}{precision.capitalize()}Attention", (base,),
                {"name": f"{base.name}-{_ATTENTION_SUFFIX[precision]}", "attention": precision})


def _act7(base: type[Workbench]) -> type[Workbench]:
    """`base` with 7-bit per-token activations (`compile_model(act_bits=7)`): on AVX2 the dense
    kernel multiplies them with vpmaddubsw; elsewhere the same kernels run on coarser inputs."""
    return type(f"{base.__name__}Act7", (base,), {"name": f"{base.name}-a7", "act_bits": 7})


def _per_channel(base: type[Workbench]) -> type[Workbench]:
    """`base` with plain per-channel int8 weights (`compile_model(int8_weights="per_channel")`):
    where "auto" bounds the weight pairs (AVX2), this is the full-range 8-bit engine beside it."""
    return type(f"{base.__name__}PerChannel", (base,), {"name": f"{base.name}-pc", "int8_weights": "per_channel"})


ENGINES: dict[str, type[BenchEngine]] = {
    e.name: e for e in (TorchFp32, TorchBf16, TorchInt8X86, TorchInt8OneDNN, OrtFp32, OrtInt8, OrtExported,
                        *(_ort_variant(v) for v in ORT_INT8_VARIANTS),
                        Workbench, _sparse(70), _sparse(80), _sparse(90), _tile_sparse(70), _tile_sparse(80),
                        _tile_sparse(90), WorkbenchOneDNN, WorkbenchFp32, WorkbenchBf16, _attention(Workbench, "bf16"),
                        _attention(_sparse(90), "bf16"), _attention(Workbench, "int8"), _attention(_sparse(90), "int8"),
                        _act7(Workbench), _act7(_sparse(90)),
                        _per_channel(Workbench), _per_channel(_sparse(90)))
}
DEFAULT_ENGINES = ("torch-fp32", "torch-bf16", "torch-int8-x86", "torch-int8-onednn", "ort-fp32",
                   "ort-int8", "wb-int8", "wb-int8-sp70", "wb-int8-sp80", "wb-int8-sp90")
BASELINE = "ort-int8"


def default_engines() -> tuple[str, ...]:
    """`DEFAULT_ENGINES`, and on CPUs with AMX or AVX-512 VNNI also `wb-int8-tile90`: there the
    tile-sparse kernel skips the pruned tiles (elsewhere the engine would only repeat a 1x4-sparse
    one); with AMX also `wb-int8-onednn`: oneDNN's AMX GEMM may beat ours (on AVX-512 VNNI it did
    not); on
    CPUs with AVX512-BF16 also the dense and 90 % engines with bf16 attention (elsewhere they
    would run the fp32 attention again), and likewise with int8 attention on AVX-512 VNNI; where
    the int8 kernels run on AVX2 also the dense and 90 % engines with plain per-channel weights
    (the default bounds weight pairs there)."""
    from workbench.runtime.compiler import resolve_int8_weights
    from workbench.runtime.kernels import active_isa, attention_bf16_path, attention_int8_runs, has_tile_sparse

    return (DEFAULT_ENGINES + (("wb-int8-tile90",) if has_tile_sparse() else ())
            + (("wb-int8-onednn",) if active_isa() == "amx" else ())
            + (("wb-int8-pc", "wb-int8-sp90-pc") if resolve_int8_weights("auto") == "pair_bounded" else ())
            + (("wb-int8-bf16attn", "wb-int8-sp90-bf16attn") if attention_bf16_path() else ())
            + (("wb-int8-i8attn", "wb-int8-sp90-i8attn") if attention_int8_runs() else ()))
