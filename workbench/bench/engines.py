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
    weight scales; `ort-int8` times the four at the bench shape in its setup (fastest of 5 calls
    each) and runs the fastest; its notes name it and list the times (a variant that fails to
    quantize or load is skipped, and said so).
    `intra_op_num_threads = threads`, one inter-op thread, spinning on (ORT's default: its workers
    spin between ops, as the OpenMP engines do for ~0.2 ms, `workbench_ext.OPENMP_DEFAULTS`).
  * workbench: `workbench.runtime.compile_model` (int8), on the unpruned model (`wb-int8`) or
    on a copy pruned to 70/80/90% 1x4-block sparsity (`wb-int8-sp70` ...), or in 16x64 blocks,
    one AMX weight tile each (`wb-int8-tile70` ...; on AMX the tile-sparse kernel is then a
    candidate, and `default_engines` adds `wb-int8-tile90`), with
    `kernel_choice="measure"` at each of the bench's batch sizes (each Linear on the faster of
    the dense and block-sparse kernels at every row count; the notes give the kernel of every
    layer and where it switches); `wb-bf16`: dense Linears in
    bf16 (AVX512-BF16 `vdpbf16ps`; fp32 BLAS on a CPU without it, the notes say which).

Run-to-run spread: `workbench bench` reports the median and min-max of >= 5 timed runs (default
7 after 2 warm-ups; worker.py, where the measurements behind the thread settings are noted).
"""
from __future__ import annotations

import copy
import json
import warnings
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

    def setup(self, model: torch.nn.Module, threads: int, cache_dir: Path, model_name: str) -> None:
        raise NotImplementedError

    def feed(self, inputs: dict[str, torch.Tensor]) -> Any:
        return inputs

    def run(self, feed: Any) -> np.ndarray:
        raise NotImplementedError


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


# ------------------------------------------------------------------------------ ONNX Runtime
def _heads_hidden(config: Any) -> tuple[int, int]:
    if config.model_type == "distilbert":
        return int(config.n_heads), int(config.dim)
    return int(config.num_attention_heads), int(config.hidden_size)


def onnx_files(model: torch.nn.Module, cache_dir: Path, model_name: str) -> tuple[Path, Path, str]:
    """Export + optimize + quantize once per model (cached across the engine processes): the
    optimized fp32 graph, its dynamic int8 (per-tensor weights) and how they were made."""
    opt = onnx_graphs(model, cache_dir, model_name)[1]
    q8, how8 = onnx_int8(model, cache_dir, model_name, "opt", per_channel=False)
    return opt, q8, how8.removesuffix(", quantize_dynamic QInt8 per-tensor")


def onnx_graphs(model: torch.nn.Module, cache_dir: Path, model_name: str) -> tuple[Path, Path, str]:
    """The plain exported and the ORT-optimized fp32 graphs, and how they were made (cached)."""
    from workbench.bench.models import safe_name

    d = Path(cache_dir) / "onnx" / safe_name(model_name)
    d.mkdir(parents=True, exist_ok=True)
    raw, opt, note_f = d / "model.onnx", d / "model_opt.onnx", d / "notes.txt"
    if not (raw.exists() and opt.exists() and note_f.exists()):
        m = copy.deepcopy(model).eval()
        try:  # the ORT fusions recognise the eager attention pattern, not SDPA
            m.set_attn_implementation("eager")
        except Exception:  # pragma: no cover
            m.config._attn_implementation = "eager"
        ids = torch.ones(1, 16, dtype=torch.long)
        args = (ids, torch.ones_like(ids))
        axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                "logits": {0: "batch"}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(m, args, str(raw), input_names=["input_ids", "attention_mask"],
                                  output_names=["logits"], dynamic_axes=axes, opset_version=17,
                                  dynamo=False)
                how = "torchscript export"
            except Exception:
                torch.onnx.export(m, args, str(raw), input_names=["input_ids", "attention_mask"],
                                  output_names=["logits"], dynamic_axes=axes, dynamo=True)
                how = "dynamo export"
        try:
            from onnxruntime.transformers.optimizer import optimize_model

            heads, hidden = _heads_hidden(model.config)
            om = optimize_model(str(raw), model_type="bert", num_heads=heads, hidden_size=hidden)
            fixed = fix_attention_heads(om.model, hidden // heads)
            om.save_model_to_file(str(opt))
            fused = {k: v for k, v in om.get_fused_operator_statistics().items() if v}
            how += ", ORT transformers optimizer: " + " ".join(f"{k}x{v}" for k, v in fused.items())
            how += f" (num_heads set per layer on {fixed} pruned Attention nodes)" if fixed else ""
        except Exception as exc:  # an unoptimized graph is still a valid (slower) peer
            import shutil

            shutil.copyfile(raw, opt)
            how += f", optimizer failed ({type(exc).__name__}); unoptimized graph"
        note_f.write_text(how)
    return raw, opt, note_f.read_text()


ORT_INT8_VARIANTS = {"plain-pt": ("plain", False), "plain-pc": ("plain", True),
                     "opt-pt": ("opt", False), "opt-pc": ("opt", True)}


def onnx_int8(model: torch.nn.Module, cache_dir: Path, model_name: str, graph: str = "opt",
              per_channel: bool = False) -> tuple[Path, str]:
    """`quantize_dynamic` (QInt8 weights, per tensor or per channel) of the plain or the
    optimized graph (cached), and how it was made."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    raw, opt, how = onnx_graphs(model, cache_dir, model_name)
    src = opt if graph == "opt" else raw
    reduce_range = not ort_has_vnni()
    q8 = src.with_name(("model_int8" if (graph, per_channel) == ("opt", False)
                        else f"model_int8_{graph}_{'pc' if per_channel else 'pt'}")
                       + ("_rr" if reduce_range else "") + ".onnx")
    empty = zero_size_nodes(onnx.load(str(src)))
    if not q8.exists():
        logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing" notice
        tmp = q8.with_name("tmp_" + q8.name)
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, nodes_to_exclude=empty,
                         per_channel=per_channel, reduce_range=reduce_range,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        tmp.replace(q8)
    if graph != "opt":
        how = how.split(",")[0] + ", plain graph (no ORT transformers optimizer)"
    how += ", quantize_dynamic QInt8 " + ("per-channel" if per_channel else "per-tensor")
    if reduce_range:
        how += " with 7-bit weights (reduce_range: ORT's advice for CPUs without VNNI)"
    return q8, how + (f"; {len(empty)} zero-width MatMuls left fp32" if empty else "")


def ort_has_vnni() -> bool:
    """Whether ONNX Runtime's u8 x s8 kernels here use VNNI (exact s32 dot products). Without
    it they use vpmaddubsw, whose s16 pair sums saturate with full-range 8-bit weights (seen
    here on AVX2-only Zen 2: logit errors up to a third of the logits on a small model with
    per-channel weights), so ORT's documentation advises 7-bit weights (reduce_range) there."""
    from workbench_ext import cpu

    f = cpu.features()
    return bool(f.get("avx512_vnni") or f.get("avx_vnni") or f.get("amx_int8"))


def fix_attention_heads(graph_model: Any, head_size: int) -> int:
    """Give each fused `Attention` node the head count of its own layer; returns how many changed.

    HF attention reshapes to (-1, head_size), so ORT's optimizer takes every layer's head count
    from its `num_heads` argument (the config's): in a model whose heads were pruned unevenly, a
    layer with fewer heads would then be split into the config's count of too-small heads (wrong
    logits). The fused node's packed QKV weight [hidden, q + k + v] (or `qkv_hidden_sizes`) says
    how wide this layer's Q is, hence its heads."""
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in graph_model.graph.initializer}
    changed = 0
    for node in graph_model.graph.node:
        if node.op_type != "Attention" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        attrs = {a.name: a for a in node.attribute}
        sizes = list(attrs["qkv_hidden_sizes"].ints) if "qkv_hidden_sizes" in attrs else None
        q_width = sizes[0] if sizes else numpy_helper.to_array(inits[node.input[1]]).shape[1] // 3
        heads = q_width // head_size
        if heads < 1 or q_width % head_size:
            continue
        if "num_heads" in attrs and attrs["num_heads"].i != heads:
            node.attribute.remove(attrs["num_heads"])
            node.attribute.append(helper.make_attribute("num_heads", heads))
            changed += 1
    return changed


def zero_size_nodes(graph_model: Any) -> list[str]:
    """Names of the nodes with a zero-size weight (a block removed by structural pruning):
    quantized, ORT's int8 MatMul with 0 inputs does not give 0 (measured logit errors ~1), so
    they stay fp32 (they cost nothing)."""
    empty = {t.name for t in graph_model.graph.initializer if 0 in t.dims}
    return [n.name for n in graph_model.graph.node if n.name and any(i in empty for i in n.input)]


class OrtFp32(BenchEngine):
    name = "ort-fp32"
    int8 = False
    variant = "opt-pt"  # int8 engines: one of ORT_INT8_VARIANTS

    def setup(self, model, threads, cache_dir, model_name):
        if self.int8:
            path, self.notes = onnx_int8(model, cache_dir, model_name, *ORT_INT8_VARIANTS[self.variant])
        else:
            _, path, self.notes = onnx_graphs(model, cache_dir, model_name)
        self.sess = ort_session(path, threads)

    def feed(self, inputs):
        return {k: v.numpy().astype(np.int64) for k, v in inputs.items()}

    def run(self, feed):
        return self.sess.run(None, feed)[0]


class OrtInt8(OrtFp32):
    """ORT int8 at its best here: the fastest of the four variants at the bench shape."""
    name = "ort-int8"
    int8 = True

    def setup(self, model, threads, cache_dir, model_name):
        import time

        from workbench.bench.models import make_inputs

        feed = self.feed(make_inputs(model, *self.shape))
        times, notes, skipped = {}, {}, []
        for variant, args in ORT_INT8_VARIANTS.items():
            try:
                path, notes[variant] = onnx_int8(model, cache_dir, model_name, *args)
                sess = ort_session(path, threads)
                sess.run(None, feed)
                best = float("inf")
                for _ in range(5):
                    t0 = time.perf_counter()
                    sess.run(None, feed)
                    best = min(best, time.perf_counter() - t0)
                times[variant] = (best, sess)
            except Exception as exc:  # a variant ORT cannot quantize / load here
                skipped.append(f"{variant} ({type(exc).__name__})")
        if not times:
            raise RuntimeError(f"no ORT int8 variant could run: {', '.join(skipped)}")
        self.variant = min(times, key=lambda v: times[v][0])
        self.sess = times[self.variant][1]
        self.notes = (f"best of {len(ORT_INT8_VARIANTS)} variants: {self.variant}; setup ms "
                      + " ".join(f"{v}={t * 1e3:.2f}" for v, (t, _) in times.items())
                      + (f"; failed: {', '.join(skipped)}" if skipped else "") + f"; {notes[self.variant]}")


def _ort_variant(variant: str) -> type[OrtFp32]:
    return type(f"OrtInt8_{variant.replace('-', '_')}", (OrtFp32,),
                {"name": f"ort-int8-{variant}", "int8": True, "variant": variant})


class OrtExported(OrtFp32):
    """`workbench bench --run` only: the file `workbench export` wrote for the stage (the fp32
    graph, integer ops or QDQ), named in this engine's cache folder by `workbench.bench.exported`."""
    name = "ort-exported"

    def setup(self, model, threads, cache_dir, model_name):
        from workbench.bench.exported import exported_file

        path, self.notes = exported_file(cache_dir, model_name)
        self.sess = ort_session(path, threads)


def ort_session(path: Path, threads: int) -> Any:
    """A CPU session set up like every ORT peer: `threads` intra-op threads, one inter-op thread,
    spinning between ops (ORT's default, and fair now that the OpenMP engines spin briefly too),
    every graph optimization."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------- workbench
class Workbench(BenchEngine):
    name = "wb-int8"
    quantize = True
    dtype: str | None = None

    def setup(self, model, threads, cache_dir, model_name):
        from workbench.runtime import compile_model, kernel_report
        from workbench.runtime.choice import layer_summary

        self.engine = compile_model(model, quantize=self.quantize, sparse_threshold=0.5, dtype=self.dtype,
                                    kernel_choice="measure", choice_shape=tuple(self.shape),
                                    choice_batches=tuple(b for b in self.batches if b > self.shape[0]))
        kinds: dict[str, int] = {}
        for impl in self.engine.impls.values():
            kinds[impl] = kinds.get(impl, 0) + 1
        rep = kernel_report()
        fallbacks = sorted(k for k, v in rep.items() if v == "numpy-fallback")
        self.notes = (f"isa={rep['isa']}; " + "; ".join(f"{v}x {k}" for k, v in kinds.items())
                      + f"; kernels {layer_summary(self.engine.meta)}"
                      + f"; layer loop {self.engine.describe()['layer_loop'].split(':')[0]}"
                      + (f"; NumPy fallback for: {', '.join(fallbacks)}" if fallbacks else ""))
        if self.engine.meta.get("dynamic"):  # a stage with model.dynamic runs at its saved spec
            spec = {k: v for k, v in self.engine.meta["dynamic"].items() if v not in (None, [])}
            self.notes += "; dynamic " + json.dumps(spec, separators=(",", ":")).replace(",", " ")

    def feed(self, inputs):
        return (inputs["input_ids"].numpy(), inputs["attention_mask"].numpy())

    def run(self, feed):
        return self.engine(*feed)


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
    """Pruned in (16, 64) blocks, one AMX weight tile each: on AMX the tile-sparse kernel skips
    them (a per-layer candidate); elsewhere they are also 1x4 blocks for the block-sparse kernel."""
    return type(f"WorkbenchTile{level}", (Workbench,),
                {"name": f"wb-int8-tile{level}", "sparsity": level / 100, "block": (16, 64)})


ENGINES: dict[str, type[BenchEngine]] = {
    e.name: e for e in (TorchFp32, TorchBf16, TorchInt8X86, TorchInt8OneDNN, OrtFp32, OrtInt8, OrtExported,
                        *(_ort_variant(v) for v in ORT_INT8_VARIANTS),
                        Workbench, _sparse(70), _sparse(80), _sparse(90), _tile_sparse(70), _tile_sparse(80),
                        _tile_sparse(90), WorkbenchFp32, WorkbenchBf16)
}
DEFAULT_ENGINES = ("torch-fp32", "torch-bf16", "torch-int8-x86", "torch-int8-onednn", "ort-fp32",
                   "ort-int8", "wb-int8", "wb-int8-sp70", "wb-int8-sp80", "wb-int8-sp90")
BASELINE = "ort-int8"


def default_engines() -> tuple[str, ...]:
    """`DEFAULT_ENGINES`, and on CPUs with AMX also `wb-int8-tile90`: there the tile-sparse
    kernel skips the pruned tiles (elsewhere the engine would only repeat a 1x4-sparse one)."""
    from workbench.runtime.kernels import has_tile_sparse

    return DEFAULT_ENGINES + (("wb-int8-tile90",) if has_tile_sparse() else ())
