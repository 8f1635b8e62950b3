"""Mask tuning by layer-wise least squares (Kwon et al. 2022, section 4.3), on CPU with LSMR.

Layer by layer from the bottom, the kept heads' and then the kept neurons' mask values become
scales `s` that make the pruned layer's sub-block output, *before* the residual LayerNorm,
match a reference model's:

    attention:  sum_h s_h * (W_o[:, h] ctx_h) + b_o + x      ~   W_o ctx_ref + b_o + x_ref
    FFN:        sum_j s_j * (W_2[:, j] a_j)   + b_2 + r      ~   W_2 a_ref   + b_2 + r_ref

over the real (non-padding) tokens of the sample batches (the last layer: only the [CLS] row,
which is all a sequence classifier reads). The student's inputs `x`, `r` come from the layers
below, already tuned; the reference runs on its own hidden states. The normal equations
`A^T A s = A^T b` are accumulated batch by batch (float64) and solved with SciPy's
`lsmr(A^T A, A^T b - A^T A 1, damp=damp)` for `s - 1` (damping pulls the scales towards 1), as
the authors do. A layer is left untuned (scales 1) when LSMR does not converge, a scale is not
finite or exceeds `max_scale` in absolute value, or the solution does not lower the
reconstruction error. The reference is the unpruned model, or (Kwon's code) the same model
pruned to a milder budget: pass its masks as `ref_head_mask` / `ref_neuron_mask`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from workbench.forward import model_inputs
from workbench.models.arch import architecture
from workbench.prune.structure import MaskHooks, structure

LSMR_OK = {0, 1, 2, 4, 5}
"""`istop` codes of scipy.sparse.linalg.lsmr that mean a solution was found."""


class _Stop(Exception):
    pass


@dataclass
class LayerFit:
    """One sub-block's least-squares fit: the reconstruction error (sum of squares over the
    sample) before and after (the same when the fit was given up), whether the scales were
    kept, and why not."""

    layer: int
    block: str  # "attention" or "ffn"
    units: int
    error_before: float
    error_after: float
    applied: bool
    reason: str = ""


@dataclass
class TuneReport:
    fits: list[LayerFit] = field(default_factory=list)

    def as_dicts(self) -> list[dict[str, Any]]:
        return [vars(f) for f in self.fits]


@torch.no_grad()
def _capture(model: nn.Module, layer: int, batch: dict[str, Any], head_mask: torch.Tensor,
             neuron_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run `model` with masks up to layer `layer`'s FFN output projection; returns that layer's
    input `x`, attention context `ctx` (masked), FFN input `r` and activations `a` (masked)."""
    arch = architecture(model)
    got: dict[str, torch.Tensor] = {}

    def grab(key: str, stop: bool = False) -> Any:
        def hook(_m: nn.Module, args: tuple) -> None:
            got[key] = args[0].detach()
            if stop:
                raise _Stop
        return hook

    handles = [arch.layers[layer].register_forward_pre_hook(grab("x"))]
    with MaskHooks(model, head_mask, neuron_mask):  # registered first: captures see masked inputs
        handles += [arch.module(layer, "attn_out").register_forward_pre_hook(grab("ctx")),
                    arch.module(layer, "ffn_in").register_forward_pre_hook(grab("r")),
                    arch.module(layer, "ffn_out").register_forward_pre_hook(grab("a", stop=True))]
        try:
            model(**model_inputs(batch))
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
    return got


def _rows(t: torch.Tensor, batch: dict[str, Any], cls_only: bool) -> torch.Tensor:
    if cls_only:
        return t[:, 0]
    mask = batch.get("attention_mask")
    return t.reshape(-1, t.shape[-1]) if mask is None else t[mask.bool()]


@torch.no_grad()
def _layer_calls(model: nn.Module, batches: list[dict[str, Any]]) -> list[tuple[torch.Tensor, tuple, dict]]:
    """Per batch: the input of the first encoder layer and the other arguments the encoder passes
    to every layer (the attention mask in whatever form the model builds it), so that layers can
    then be run one at a time on stored hidden states."""
    arch = architecture(model)
    calls = []
    for batch in batches:
        got: list[Any] = []

        def hook(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            got.append((args[0].detach(), tuple(args[1:]), dict(kwargs)))
            raise _Stop

        handle = arch.layers[0].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            model(**model_inputs(batch))
        except _Stop:
            pass
        finally:
            handle.remove()
        calls.append(got[0])
    return calls


@torch.no_grad()
def _run_layer(model: nn.Module, layer: int, x: torch.Tensor, call: tuple[torch.Tensor, tuple, dict],
               head_mask: torch.Tensor, neuron_mask: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Run encoder layer `layer` alone on `x` with masks: its captured attention context `ctx`,
    FFN input `r` and activations `a` (masked), and its output."""
    arch = architecture(model)
    got: dict[str, torch.Tensor] = {}

    def grab(key: str) -> Any:
        def hook(_m: nn.Module, args: tuple) -> None:
            got[key] = args[0].detach()
        return hook

    with MaskHooks(model, head_mask, neuron_mask):  # registered first: captures see masked inputs
        handles = [arch.module(layer, "attn_out").register_forward_pre_hook(grab("ctx")),
                   arch.module(layer, "ffn_in").register_forward_pre_hook(grab("r")),
                   arch.module(layer, "ffn_out").register_forward_pre_hook(grab("a"))]
        try:
            out = arch.layers[layer](x, *call[1], **call[2])
        finally:
            for h in handles:
                h.remove()
    return got, (out[0] if isinstance(out, tuple) else out)


def _solve(ata: np.ndarray, atb: np.ndarray, btb: float, damp: float, max_scale: float
           ) -> tuple[np.ndarray | None, float, float, str]:
    from scipy.sparse.linalg import lsmr

    k = ata.shape[0]
    ones = np.ones(k)
    err_before = float(ones @ ata @ ones - 2 * ones @ atb + btb)
    if k == 0:
        return None, err_before, err_before, "no units"
    sol = lsmr(ata, atb - ata @ ones, damp=damp, maxiter=max(100, 10 * k))
    x, istop = sol[0], int(sol[1])
    s = ones + x
    err_after = float(s @ ata @ s - 2 * s @ atb + btb)
    why = ""
    if istop not in LSMR_OK:
        why = f"lsmr istop={istop}"
    elif not np.all(np.isfinite(s)):
        why = "non-finite scale"
    elif float(np.abs(s).max()) > max_scale:
        why = f"scale {float(np.abs(s).max()):.3g} > {max_scale}"
    elif err_after > err_before:
        why = f"error not lowered ({err_after:.6g})"
    if why:  # given up: the scales stay 1, so does the error
        return None, err_before, err_before, why
    return s, err_before, err_after, ""


@torch.no_grad()
def tune_masks(model: nn.Module, batches: list[dict[str, Any]], head_mask: torch.Tensor,
               neuron_mask: torch.Tensor, ref_head_mask: torch.Tensor | None = None,
               ref_neuron_mask: torch.Tensor | None = None, damp: float = 1.0, max_scale: float = 10.0,
               cls_last: bool = True) -> tuple[torch.Tensor, torch.Tensor, TuneReport]:
    """Tuned copies of `head_mask` / `neuron_mask` (zeros stay zero) and the per-block fits."""
    st = structure(model)
    arch = architecture(model)
    ones_h, ones_f = st.ones()
    ref_h = ones_h if ref_head_mask is None else ref_head_mask.float()
    ref_f = ones_f if ref_neuron_mask is None else ref_neuron_mask.float()
    hm, nm = head_mask.detach().float().clone(), neuron_mask.detach().float().clone()
    report = TuneReport()
    was_training = model.training
    model.eval()
    d = st.head_size
    try:
        calls = _layer_calls(model, batches)
        x_ref = [c[0] for c in calls]  # each model's input to layer i, per batch
        x_stu = [c[0] for c in calls]
        for i in range(st.num_layers):
            cls_only = cls_last and i == st.num_layers - 1
            w_o = arch.module(i, "attn_out").weight.detach().double()  # [H, nh*d]
            w_2 = arch.module(i, "ffn_out").weight.detach().double()  # [H, F]
            heads = hm[i, : st.heads[i]].nonzero().flatten()
            neurons = nm[i, : st.neurons[i]].nonzero().flatten()
            # --- attention: per batch, the reference's targets and the student's per-head outputs
            k = len(heads)
            ata, atb, btb = np.zeros((k, k)), np.zeros(k), 0.0
            ffn_targets = []
            for n, batch in enumerate(batches):
                ref, y_ref = _run_layer(model, i, x_ref[n], calls[n], ref_h, ref_f)
                stu, _ = _run_layer(model, i, x_stu[n], calls[n], hm, nm)
                r_ref, a_ref = _rows(ref["r"], batch, cls_only).double(), _rows(ref["a"], batch, cls_only).double()
                ffn_targets.append((a_ref @ w_2.T + r_ref).float())
                ctx_ref = _rows(ref["ctx"], batch, cls_only).double()
                b = ctx_ref @ w_o.T + _rows(x_ref[n], batch, cls_only).double() \
                    - _rows(x_stu[n], batch, cls_only).double()
                x_ref[n] = y_ref
                if k:
                    ctx = _rows(stu["ctx"], batch, cls_only).double().view(-1, st.heads[i], d)[:, heads]  # [T, k, d]
                    # per-head outputs at scale 1: the current mask value times W_o[:, h] ctx_h
                    cur = hm[i, heads].double()
                    w_h = w_o.view(-1, st.heads[i], d)[:, heads]  # [H, k, d]
                    outs = torch.einsum("tkd,hkd->kth", ctx / cur[None, :, None], w_h) * cur[:, None, None]
                    a = outs.reshape(k, -1)  # [k, T*H]
                    ata += (a @ a.T).numpy()
                    atb += (a @ b.reshape(-1)).numpy()
                btb += float(b.pow(2).sum())
            s, e0, e1, why = _solve(ata, atb, btb, damp, max_scale)
            report.fits.append(LayerFit(i, "attention", k, e0, e1, s is not None, why))
            if s is not None:
                hm[i, heads] *= torch.from_numpy(s).float()
            # --- FFN, with this layer's attention tuned
            k = len(neurons)
            ata, atb, btb = np.zeros((k, k)), np.zeros(k), 0.0
            w_n = w_2[:, neurons]  # [H, k]
            gram_w = w_n.T @ w_n
            for n, (batch, target) in enumerate(zip(batches, ffn_targets)):
                stu, _ = _run_layer(model, i, x_stu[n], calls[n], hm, nm)
                b = target.double() - _rows(stu["r"], batch, cls_only).double()
                if k:  # the big products in float32 (MiniLM: ~1e3 tokens x 1536 neurons a batch), summed in float64
                    a = _rows(stu["a"], batch, cls_only).float()[:, neurons]  # masked activations
                    ata += ((a.T @ a).double() * gram_w).numpy()
                    atb += ((a.T @ b.float()).double() * w_n.T).sum(1).numpy()
                btb += float(b.pow(2).sum())
            s, e0, e1, why = _solve(ata, atb, btb, damp, max_scale)
            report.fits.append(LayerFit(i, "ffn", k, e0, e1, s is not None, why))
            if s is not None:
                nm[i, neurons] *= torch.from_numpy(s).float()
            if i + 1 < st.num_layers:  # the student's input to the next layer, this layer tuned
                x_stu = [_run_layer(model, i, x_stu[n], calls[n], hm, nm)[1] for n in range(len(batches))]
    finally:
        model.train(was_training)
    return hm, nm, report
