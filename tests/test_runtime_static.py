"""The static-scale int8 entry point: calibrated per-tensor activation grids on our kernels.

Kernel level: `layer.static(x, scale, zp)` equals the exact integer reference on every ISA the
CPU has (bit-identical across ISAs). Layer level: a `static_int8` layer (`Int8Linear`, calibrated
with an observer) moved onto the runtime keeps the calibrated scale / zero point and gives the
torch reference's output up to the codes that round differently at a tie (at most one step)."""
import numpy as np
import pytest
import torch

cpu = pytest.importorskip("workbench_ext.cpu", reason="workbench_ext not built")
from workbench_ext import int8, ops  # noqa: E402

from workbench.quantize.observers import make_observer, quantize_affine  # noqa: E402
from workbench.recipes.quantize.static import Int8Linear  # noqa: E402
from workbench.runtime.static import StaticInt8Linear  # noqa: E402


@pytest.fixture(params=cpu.available_isas())
def isa(request):
    cpu.set_isa(request.param)
    yield request.param
    cpu.set_isa(None)


@pytest.mark.parametrize("M,K,N", [(1, 3, 5), (7, 67, 9), (33, 200, 48)])
def test_static_entry_exact(isa, M, K, N):
    rng = np.random.default_rng(M * 1000 + K)
    w = rng.integers(-127, 128, size=(N, K)).astype(np.int8)
    ws = (rng.random(N).astype(np.float32) + 0.5) * np.float32(0.01)
    b = rng.standard_normal(N).astype(np.float32)
    x = (rng.standard_normal((M, K)) * 3).astype(np.float32)
    scale, zp = np.float32(0.031), 97
    q = ops.quantize_static(x, float(scale), zp)
    acc = (q.astype(np.int64) - zp) @ w.astype(np.int64).T
    ref = acc.astype(np.float32) * (scale * ws)[None, :] + b
    for cls in (int8.DenseInt8Linear, int8.BlockSparseInt8Linear):
        y = cls(w, ws, b).static(x, float(scale), zp)
        np.testing.assert_array_equal(y, ref.astype(np.float32))


def test_static_entry_rejects_bad_grid():
    layer = int8.DenseInt8Linear(np.ones((2, 3), np.int8), np.ones(2, np.float32), None)
    x = np.ones((1, 3), np.float32)
    for s, z in ((0.0, 0), (-1.0, 0), (float("nan"), 0), (0.1, 256), (0.1, -1), (0.1, 1.5)):
        with pytest.raises(ValueError):
            layer.static(x, s, z)


def test_static_int8_layer_on_runtime_matches_torch():
    torch.manual_seed(0)
    lin = torch.nn.Linear(96, 40)
    calib = torch.randn(64, 96) * 2 + 0.5
    obs = make_observer("minmax")
    obs.observe(calib)
    scale, zp = obs.qparams()
    ref_layer = Int8Linear(lin, scale, zp)
    ours = StaticInt8Linear.from_module(ref_layer)
    # the runtime uses the calibrated grid, unchanged
    assert ours.input_scale == ref_layer.input_scale and ours.input_zero_point == ref_layer.input_zero_point
    x = torch.randn(17, 96) * 2.5  # some values outside the calibrated range: clamped alike
    with torch.no_grad():
        want = ref_layer(x).numpy()
    got = ours(x.numpy())
    # codes: ours (x * 1/s) vs torch (x / s) differ by at most one step, at ties
    q_ours = ops.quantize_static(x.numpy(), float(scale), int(zp)).astype(np.int64)
    q_torch = quantize_affine(x, scale, zp).numpy().astype(np.int64)
    dq = q_ours - q_torch
    assert np.abs(dq).max() <= 1
    # the output difference is exactly what the differing codes explain (one step each)
    w = ref_layer.weight_int8.numpy().astype(np.int64)
    explained = (dq @ w.T) * (float(scale) * ref_layer.weight_scale.double().numpy())
    np.testing.assert_allclose(got - want, explained, atol=1e-4)
    assert np.abs(got - want).max() <= float(scale) * np.abs(w).sum(1).max() * ref_layer.weight_scale.max().item() + 1e-4
