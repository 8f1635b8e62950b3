"""The ONNX Runtime engines of `workbench bench` (`ort-fp32`, `ort-int8` and its four variants,
`ort-exported`) and the graphs they run: `torch.onnx.export`, the ORT transformers optimizer and
`quantize_dynamic`, cached per model across the engine processes (see `engines.py` for how the
peers are set up; `engines.py` registers these engines and re-exports this module's names).
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.bench.bench_engine import BenchEngine


# ------------------------------------------------------------------------------ ONNX Runtime
def _heads_hidden(config: Any) -> tuple[int, int]:
    if config.model_type == "distilbert":
        return int(config.n_heads), int(config.dim)
    return int(config.num_attention_heads), int(config.hidden_size)


def export_inputs(segments: bool = False) -> tuple[tuple[Any, ...], list[str], dict[str, dict[int, str]]]:
    """What every ONNX export of a classifier here traces with: the dummy inputs, the graph's
    input names and its dynamic axes. Input ids and attention mask; with `segments`, also the
    segment ids (token_type_ids) that a BERT-layout model reads to tell a text pair's two texts
    apart (a graph without them runs every text as segment 0)."""
    ids = torch.ones(1, 16, dtype=torch.long)
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if segments else [])
    named = {"attention_mask": torch.ones_like(ids)}
    if segments:  # by name: the forward's third positional argument is not token_type_ids everywhere
        named["token_type_ids"] = torch.zeros_like(ids)
    axes = {**{n: {0: "batch", 1: "seq"} for n in names}, "logits": {0: "batch"}}
    return (ids, named), names, axes


def onnx_files(model: torch.nn.Module, cache_dir: Path, model_name: str,
               segments: bool = False) -> tuple[Path, Path, str]:
    """Export + optimize + quantize once per model (cached across the engine processes): the
    optimized fp32 graph, its dynamic int8 (per-tensor weights) and how they were made.
    `segments`: the graphs take token_type_ids too (`export_inputs`)."""
    opt = onnx_graphs(model, cache_dir, model_name, segments)[1]
    q8, how8 = onnx_int8(model, cache_dir, model_name, "opt", per_channel=False, segments=segments)
    return opt, q8, how8.removesuffix(", quantize_dynamic QInt8 per-tensor")


def onnx_graphs(model: torch.nn.Module, cache_dir: Path, model_name: str,
                segments: bool = False) -> tuple[Path, Path, str]:
    """The plain exported and the ORT-optimized fp32 graphs, and how they were made (cached);
    `segments`: with a token_type_ids input (`export_inputs`)."""
    from workbench.bench.models import safe_name

    d = Path(cache_dir) / "onnx" / (safe_name(model_name) + ("-segments" if segments else ""))
    d.mkdir(parents=True, exist_ok=True)
    raw, opt, note_f = d / "model.onnx", d / "model_opt.onnx", d / "notes.txt"
    if not (raw.exists() and opt.exists() and note_f.exists()):
        m = copy.deepcopy(model).eval()
        try:  # the ORT fusions recognise the eager attention pattern, not SDPA
            m.set_attn_implementation("eager")
        except Exception:  # pragma: no cover
            m.config._attn_implementation = "eager"
        args, names, axes = export_inputs(segments)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(m, args, str(raw), input_names=names, output_names=["logits"],
                                  dynamic_axes=axes, opset_version=17, dynamo=False)
                how = "torchscript export"
            except Exception:
                torch.onnx.export(m, args, str(raw), input_names=names, output_names=["logits"],
                                  dynamic_axes=axes, dynamo=True)
                how = "dynamo export"
            how += " with segment ids" if segments else ""
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
              per_channel: bool = False, segments: bool = False) -> tuple[Path, str]:
    """`quantize_dynamic` (QInt8 weights, per tensor or per channel) of the plain or the
    optimized graph (cached), and how it was made."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    raw, opt, how = onnx_graphs(model, cache_dir, model_name, segments)
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
    """ORT int8 at its best here, per row: all four variants (`ORT_INT8_VARIANTS`) are set up,
    the bench times each of them in every turn (`workbench.bench.worker`: one after another, a
    pause before each, as the engines take turns), and each batch's row is the variant with the
    best median there; its notes name it and give the others' medians. Choosing one variant
    before timing (as this engine did until 2026-12) picked a different one from bench to bench
    on the 2-core Zen 4 machine, where their medians lie within noise of each other, and the
    chosen one ran anywhere from 27 to 44 samples/s: most of the spread of the ratios against
    this peer. A variant ORT cannot quantize, load or run here is left out, and the notes say so."""
    name = "ort-int8"
    int8 = True

    def setup(self, model, threads, cache_dir, model_name):
        from workbench.bench.models import make_inputs

        feed = self.feed(make_inputs(model, *self.shape))
        self.sessions: dict[str, Any] = {}
        self.variant_notes, skipped = {}, []
        for variant, args in ORT_INT8_VARIANTS.items():
            try:
                path, how = onnx_int8(model, cache_dir, model_name, *args)
                sess = ort_session(path, threads)
                sess.run(None, feed)
                self.sessions[variant], self.variant_notes[variant] = sess, how
            except Exception as exc:
                skipped.append(f"{variant} ({type(exc).__name__}: {str(exc)[:80]})")
        if not self.sessions:
            raise RuntimeError(f"no ORT int8 variant could run: {', '.join(skipped)}")
        self.variants = tuple(self.sessions)
        self.use(self.variants[0])
        self.notes = f"failed: {', '.join(skipped)}" if skipped else ""

    def use(self, variant):
        self.variant, self.sess = variant, self.sessions[variant]


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
        self.input_names = [i.name for i in self.sess.get_inputs()]

    def feed(self, inputs):
        """The bench's inputs, and segment 0 for a text-pair graph's token_type_ids (as the torch
        reference, which gets none, reads them)."""
        feed = super().feed(inputs)
        ids = feed["input_ids"]
        return {**feed, **{n: np.zeros_like(ids) for n in self.input_names if n not in feed}}


def ort_session(path: Path, threads: int) -> Any:
    """A CPU session set up like every ORT peer: `threads` intra-op threads, one inter-op thread,
    spinning between ops (ORT's default, and fair: torch's OpenMP threads and our pool's spin briefly too),
    every graph optimization."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
