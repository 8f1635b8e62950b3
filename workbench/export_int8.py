"""ONNX export of static int8 stages (`static_int8`, with or without `smoothquant`, and converted
`qat` stages) as a QDQ graph: each `Int8Linear` becomes

    x -> [Mul by 1/s: an input smoothing] -> QuantizeLinear(u8, the stage's calibrated scale and
    zero point) -> DequantizeLinear -> MatMul <- DequantizeLinear(axis 0) <- int8 weight initializer

plus its fp32 bias, so the file holds the stage's own grids: the per-tensor input scale / zero
point and the per-output-channel weight scales (weights stored as int8). Everything else (the
embeddings, LayerNorms, attention, Linears the stage left fp32) stays fp32. ONNX Runtime runs the
graph on its standard operators (no contrib ops), fusing QDQ pairs into integer kernels where its
optimizer can.

Check tolerance (`qdq_bound`): ORT quantizes each Linear's input on the same grid as the stage
(both round half to even), so the logits differ only by float summation order, except where a
value sits on a rounding boundary and lands one grid step apart; the bound is QDQ_ATOL +
QDQ_RTOL * max |logit| (0.02 + 2%), tighter than dynamic int8's, where ORT picks its own grids.
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from workbench.bench.ort_engines import export_inputs
from workbench.config import ConfigError

QDQ_ATOL, QDQ_RTOL = 0.02, 0.02
QDQ_RECIPES = ("static_int8", "qat")
"""Recipes whose stage ends as `Int8Linear` layers (qat with `convert: true`)."""


def qdq_bound(ref: np.ndarray) -> float:
    """The largest |Δlogit| a QDQ export may show against the stage's own logits."""
    return QDQ_ATOL + QDQ_RTOL * float(np.abs(ref).max()) if ref.size else QDQ_ATOL


def is_qdq_stage(recipes: list[tuple[str, dict]]) -> bool:
    """True when a stage's recipes leave it with `Int8Linear` layers (exported as QDQ)."""
    names = [n for n, _ in recipes]
    if "static_int8" in names:
        return True
    return "qat" in names and dict(recipes)["qat"].get("convert", True) is not False


class _QDQLinear(nn.Module):
    """An `Int8Linear` written with torch's fake-quantize ops, which the ONNX exporter turns into
    QuantizeLinear / DequantizeLinear pairs with the layer's own scales."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.register_buffer("weight_fp", layer.weight_int8.float() * layer.weight_scale[:, None])
        self.register_buffer("weight_scale", layer.weight_scale.float().clone())
        self.register_buffer("weight_zero", torch.zeros(layer.out_features, dtype=torch.int32))
        self.register_buffer("bias", None if layer.bias is None else layer.bias.float().clone())
        self.register_buffer("smooth", None if layer.smooth is None else layer.smooth.float().clone())
        self.scale, self.zero_point = float(layer.input_scale), int(layer.input_zero_point)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.smooth is not None:
            x = x * self.smooth
        x = torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, 0, 255)
        # the weights lie in [-127, 127]: the exporter's int8 range [-128, 127] changes nothing
        w = torch.fake_quantize_per_channel_affine(self.weight_fp, self.weight_scale, self.weight_zero, 0, -128, 127)
        return nn.functional.linear(x, w, self.bias)


def qdq_model(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of `model` with every `Int8Linear` as a `_QDQLinear`; and how many there were."""
    from workbench.recipes.quantize.static import Int8Linear, _set_module

    model = copy.deepcopy(model).eval()
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, Int8Linear)]
    for name, layer in layers:
        _set_module(model, name, _QDQLinear(layer))
    return model, len(layers)


def fold_weight_quantization(graph_model: "object") -> int:
    """Replace each QuantizeLinear of a constant weight by the int8 initializer it computes (the
    file then stores int8 weights, read by a DequantizeLinear). Returns how many were folded."""
    from onnx import numpy_helper

    graph = graph_model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:  # in topological order: an Identity of a constant is a constant
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in consts:
            consts[node.output[0]] = consts[node.input[0]]
    folded, keep = 0, []
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and all(i in consts for i in node.input[:3]) and len(node.input) == 3:
            w, scale, zero = (consts[i] for i in node.input[:3])
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * w.ndim
            if scale.ndim:
                shape[axis] = -1
            q = np.clip(np.rint(w / scale.reshape(shape)) + zero.reshape(shape).astype(np.int32), -128, 127)
            graph.initializer.append(numpy_helper.from_array(q.astype(zero.dtype), node.output[0]))
            folded += 1
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    used = {i for n in graph.node for i in n.input}
    alive = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(alive)
    return folded


def export_qdq(stage: str, model: nn.Module, probe: dict[str, torch.Tensor], tmp: Path) -> tuple[Path, np.ndarray, str]:
    """The stage as a QDQ ONNX file in `tmp`, and its ONNX Runtime logits on `probe`."""
    import onnx
    import onnxruntime as ort

    qdq, count = qdq_model(model)
    if not count:
        raise ConfigError(f"stage '{stage}' has no static int8 layers to export as QDQ")
    try:
        qdq.set_attn_implementation("eager")
    except Exception:  # pragma: no cover
        qdq.config._attn_implementation = "eager"
    path = tmp / "model.onnx"
    args, names, axes = export_inputs("token_type_ids" in probe)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(qdq, args, str(path), input_names=names, output_names=["logits"],
                              dynamic_axes=axes, opset_version=17, dynamo=False)
        graph = onnx.load(str(path))
        folded = fold_weight_quantization(graph)
        onnx.save(graph, str(path))
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {k: v.numpy().astype(np.int64) for k, v in probe.items()})[0]
    except Exception as exc:
        raise ConfigError(f"stage '{stage}' could not be exported to ONNX (QDQ): {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}; nothing was written") from None
    notes = f"QDQ int8: {count} Linears with the stage's scales ({folded} int8 weight initializers), opset 17"
    return path, np.asarray(got, dtype=np.float32), notes
