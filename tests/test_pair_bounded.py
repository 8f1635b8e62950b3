"""Pair-bounded int8 weights: every k-pair has |w[2j]| + |w[2j+1]| <= 128, so on AVX2 the u8 x s8
vpmaddubsw kernels multiply 8-bit activations exactly (README "Pair-bounded weights").

The quantizer keeps the bound and plain rounding's error; the layers detect the bound themselves
and give the exact integer result on every ISA with it and without it; `compile_model`'s
`int8_weights` picks the weights (auto: bounded where the int8 kernels run on AVX2)."""
from __future__ import annotations

import numpy as np
import pytest

from test_runtime import _engine_logits, _torch_logits  # noqa: F401  (the minilm fixture: conftest.py)
from workbench.runtime import Engine, compile_model
from workbench.runtime.kernels import PAIR_BOUND, quantize_weight_per_channel

cpu = pytest.importorskip("workbench_ext.cpu", reason="workbench_ext not built")
from workbench_ext import int8  # noqa: E402


def _pair_sums(q: np.ndarray) -> np.ndarray:
    a = np.abs(q.astype(np.int32))
    a = np.concatenate([a, np.zeros((a.shape[0], a.shape[1] % 2), np.int32)], axis=1)
    return a[:, 0::2] + a[:, 1::2]


def _bounded_weights(rng, N: int, K: int) -> np.ndarray:
    """Random int8 weights on the bound's edge: most pairs sum to exactly 128 in magnitude, some
    rows hold -128 beside a zero."""
    a = rng.integers(1, 128, (N, (K + 1) // 2))
    w = np.stack([a, 128 - a], -1).reshape(N, -1)[:, :K] * rng.choice([-1, 1], (N, (K + 1) // 2 * 2))[:, :K]
    w[rng.random(w.shape) < 0.2] = 0
    w = w.astype(np.int8)
    w[0, :2] = (-128, 0)
    return w


@pytest.mark.parametrize("K", [64, 67, 768])
def test_quantizer_keeps_the_bound_and_rounding_error(K):
    rng = np.random.default_rng(K)
    w = rng.standard_normal((40, K)).astype(np.float32)
    w[1] = 0.0                                     # an all-zero row keeps scale 1
    w[2, :2] = (3.0, -3.0)                         # the row's largest pair is its two largest
    q, s = quantize_weight_per_channel(w, pair_bounded=True)
    q0, s0 = quantize_weight_per_channel(w)
    assert PAIR_BOUND == int8.PAIR_BOUND            # the quantizer's bound is the layers' check
    assert q.dtype == np.int8 and s.dtype == np.float32 and q.shape == w.shape
    assert _pair_sums(q).max() <= PAIR_BOUND
    assert (s >= s0).all() and s[1] == 1.0 and not q[1].any()
    # every weight within half a step of its row's grid, as plain rounding
    assert (np.abs(q * s[:, None] - w) <= 0.5 * s[:, None] * (1 + 1e-5)).all()
    assert _pair_sums(q0).max() > PAIR_BOUND       # random weights need the bound
    np.testing.assert_allclose(s[2], 6.0 / 128, rtol=1e-6)
    assert tuple(q[2, :2]) == (64, -64)


def test_quantizer_fixes_pairs_that_round_past_the_bound():
    # exact ties never reach 129 (n + 0.5 and m + 0.5 with n + m = 127: one rounds down to even);
    # fp32 rounding of w / scale can put a pair a hair past 128 with both halves just past a tie
    from workbench.runtime.linear import _fix_pairs

    x = np.array([[63.500008, 64.50001, 1.2], [-64.50001, -63.500008, 0.0]], np.float32)
    q = np.rint(x)
    assert _pair_sums(q).max() == PAIR_BOUND + 1
    _fix_pairs(x, q)
    np.testing.assert_array_equal(q, [[63, 65, 1], [-64, -64, 0]])
    assert np.abs(q - x).max() <= 0.5 + 1e-5
    q0, s0 = quantize_weight_per_channel(np.zeros((2, 0), np.float32), pair_bounded=True)
    assert q0.shape == (2, 0) and s0.shape == (2,)


@pytest.mark.parametrize("M,K,N", [(5, 768, 64), (40, 1030, 48), (33, 67, 9), (128, 3072, 32)])
def test_layers_exact_on_every_isa_for_bounded_weights_and_full_8bit_inputs(M, K, N):
    rng = np.random.default_rng(M + K)
    w = _bounded_weights(rng, N, K)
    q = rng.integers(0, 256, (M, K)).astype(np.uint8)
    q[::3] = 255                                   # the largest pair sums: 255 * 128
    zp = rng.integers(0, 256, M).astype(np.int32)
    ref = (q.astype(np.int64) - zp[:, None]) @ w.astype(np.int64).T
    for cls in (int8.DenseInt8Linear, int8.BlockSparseInt8Linear):
        for isa in cpu.available_isas():
            layer = cls(w, np.ones(N, np.float32), isa=isa)
            assert layer.pair_bounded and "pair_bounded" in repr(layer)
            np.testing.assert_array_equal(layer.qmatmul(q, zp), ref, err_msg=f"{cls.__name__} {isa}")
            if isa == "avx2" and cls is int8.DenseInt8Linear:  # the u8 kernel's s8 pack, not int16 pairs
                assert [a.dtype for a in layer._packed_arrays()] == [np.int8]


def test_one_pair_past_the_bound_keeps_the_exact_kernel():
    # a (127, 127) pair against 255s would saturate vpmaddubsw (64770 > 32767): the layer must
    # see it is not bounded and keep the int16 kernels
    rng = np.random.default_rng(7)
    w = _bounded_weights(rng, 24, 256)
    w[5, 10:12] = (127, 127)
    w[9, 100:102] = (-65, 64)
    q = np.full((48, 256), 255, np.uint8)
    zp = np.zeros(48, np.int32)
    ref = q.astype(np.int64) @ w.astype(np.int64).T
    for cls in (int8.DenseInt8Linear, int8.BlockSparseInt8Linear):
        for isa in cpu.available_isas():
            layer = cls(w, np.ones(24, np.float32), isa=isa)
            assert not layer.pair_bounded
            np.testing.assert_array_equal(layer.qmatmul(q, zp), ref, err_msg=f"{cls.__name__} {isa}")
            if isa == "avx2" and cls is int8.DenseInt8Linear:
                assert np.int16 in [a.dtype for a in layer._packed_arrays()]


def test_compile_pair_bounded_engine(minilm, tmp_path):
    model, enc = minilm
    engine = compile_model(model, int8_weights="pair_bounded")
    assert engine.describe()["int8_weights"] == "pair_bounded"
    for name, lm in engine.meta["linears"].items():
        assert _pair_sums(engine.tensors[f"{name}.weight"]).max() <= PAIR_BOUND, name
    if cpu.active_isa() == "avx2":
        assert all("pair-bounded" in impl for impl in engine.impls.values()), engine.impls
    plain = compile_model(model, int8_weights="per_channel")
    assert plain.describe()["int8_weights"] == "per_channel"
    assert not any("pair-bounded" in impl for impl in plain.impls.values()), plain.impls
    ref = _torch_logits(model, enc)
    out, out8 = _engine_logits(engine, enc), _engine_logits(plain, enc)
    err, err8 = np.abs(out - ref).max(), np.abs(out8 - ref).max()
    # ~1.25x coarser weight steps; the error stays the int8 engine's order (measured: 0.070 vs 0.068)
    assert 0 < err <= 2 * err8, (err, err8)
    assert np.mean(out.argmax(1) == ref.argmax(1)) >= 0.9
    engine.save(tmp_path / "eng")
    loaded = Engine.load(tmp_path / "eng")
    assert loaded.describe()["int8_weights"] == "pair_bounded"
    np.testing.assert_array_equal(_engine_logits(loaded, enc), out)


def test_auto_bounds_pairs_only_where_avx2_runs_the_int8_kernels(minilm):
    model, _ = minilm
    try:
        for isa in cpu.available_isas():
            cpu.set_isa(isa)
            engine = compile_model(model, kernel_choice="dense")
            want = "pair_bounded" if isa == "avx2" else "per_channel"
            assert engine.describe()["int8_weights"] == want, isa
            assert compile_model(model, kernel_choice="dense", act_bits=7).describe()["int8_weights"] == "per_channel"
    finally:
        cpu.set_isa(None)
    assert compile_model(model, quantize=False).describe()["int8_weights"] is None


def test_bad_int8_weights_named_before_work():
    from workbench.runtime.recipe import WorkbenchRuntimeConfig

    with pytest.raises(ValueError, match="int8_weights"):
        compile_model(object(), int8_weights="pairs")
    from workbench.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="int8_weights"):
        parse_config(WorkbenchRuntimeConfig, {"int8_weights": "bounded"}, "stage[0].workbench_runtime")


def test_gemm_bench_times_the_pair_bounded_layer_beside_the_others():
    if "avx2" not in cpu.available_isas():
        pytest.skip("no AVX2 on this CPU")
    from workbench.bench.gemm import run_gemm_bench

    rows = run_gemm_bench(m=8, k=64, n=32, repeats=1, warmup=0, sparsities=(), isa="avx2", out_dir=None,
                          torch_baselines=False, verbose=False)
    kernels = [r["kernel"] for r in rows]
    assert kernels == ["wb-int8-dense", "wb-int8-dense-a7", "wb-int8-dense-pb"], kernels
    assert "pair-bounded" in rows[-1]["peak_note"]
