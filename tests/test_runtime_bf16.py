"""bf16 engine option: the fp32 -> bf16 conversion (round to nearest, ties to even) and the bf16
dot product emulated in scalar Python (checked on any machine), the kernel's conversion and
GEMM against that emulation on every path this CPU has, and a `dtype="bf16"` engine against the
fp32 engine within bf16 tolerance (fp32 BLAS where the CPU has no AVX512-BF16: describe() says)."""
import math
import struct

import numpy as np
import pytest

from workbench.runtime import kernels as K


def _f32(v: float) -> float:
    return struct.unpack("<f", struct.pack("<f", v))[0]


def _bf16_scalar(v: float) -> float:
    """One value to bf16 by hand: the 32-bit pattern rounded to its top 16 bits, ties to even."""
    (u,) = struct.unpack("<I", struct.pack("<f", v))
    if u & 0x7F800000 == 0:
        return -0.0 if u >> 31 else 0.0
    if u & 0x7FFFFFFF > 0x7F800000:
        return float("nan")
    low, top = u & 0xFFFF, u >> 16
    if low > 0x8000 or (low == 0x8000 and top & 1):
        top += 1
    return struct.unpack("<f", struct.pack("<I", (top << 16) & 0xFFFFFFFF))[0]


def _bf16_dot(a: list[float], b: list[float]) -> float:
    """vdpbf16ps on one lane: pairs of bf16 products (exact in fp32) added into an fp32
    accumulator, the odd element of each pair first."""
    acc = 0.0
    for k in range(0, len(a), 2):
        for j in (k + 1, k):
            if j < len(a):
                acc = _f32(acc + _bf16_scalar(a[j]) * _bf16_scalar(b[j]))
    return acc


def test_bf16_rounding_by_hand():
    ulp = 2.0 ** -7  # bf16 keeps 7 mantissa bits
    assert _bf16_scalar(1.0 + ulp / 2) == 1.0                   # tie -> even (1.0)
    assert _bf16_scalar(1.0 + 1.5 * ulp) == 1.0 + 2 * ulp       # tie -> even (up)
    assert _bf16_scalar(1.0 + ulp / 2 + 2.0 ** -20) == 1.0 + ulp  # above the tie -> up
    assert _bf16_scalar(-(1.0 + 1.5 * ulp)) == -(1.0 + 2 * ulp)
    assert _bf16_scalar(3.4e38) == float("inf")                  # past the largest bf16 (3.39e38) + half a step
    assert 3.0e38 < _bf16_scalar(3.0e38) < 3.01e38               # in range: the nearest bf16
    assert math.copysign(1.0, _bf16_scalar(-1e-40)) == -1.0 and _bf16_scalar(-1e-40) == 0.0  # denormal -> -0
    assert math.isnan(_bf16_scalar(float("nan")))
    # the dot product: rounding to nearest, not truncating (1 + 3/256 -> 1 + 4/256, not 1 + 2/256)
    assert _bf16_dot([1.0 + 1.5 * ulp, 2.0, 0.5], [1.0, 1.0 + ulp / 2, 3.0]) == (1.0 + 2 * ulp) + 2.0 + 1.5
    # the NumPy specification agrees with the scalar emulation bit for bit
    rng = np.random.default_rng(0)
    vals = np.concatenate([rng.standard_normal(2000).astype(np.float32) * 10.0 ** rng.integers(-40, 38, 2000),
                           np.float32([1 + ulp / 2, 1 + 1.5 * ulp, -0.0, 1e-40, -1e-41, np.inf, -np.inf, 3e38])])
    vals = vals.astype(np.float32)
    got = K.bf16_round(vals)
    want = np.float32([_bf16_scalar(float(v)) for v in vals])
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    assert np.isnan(K.bf16_round(np.float32([np.nan]))[0])


bf16 = pytest.importorskip("workbench_ext.bf16", reason="workbench_ext.bf16 not built")


@pytest.mark.parametrize("isa", bf16.available_isas())
def test_kernel_conversion_is_the_specification(isa):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(1000) * 10.0 ** rng.integers(-42, 38, 1000)).astype(np.float32)
    x[:6] = np.float32([1 + 2 ** -8, 1 + 3 * 2 ** -8, 1e-40, -1e-40, np.inf, np.nan])
    got = bf16.to_bf16(x, isa=isa).astype(np.uint32) << 16
    want = K.bf16_round(x).view(np.uint32)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("isa", bf16.available_isas())
@pytest.mark.parametrize("M,K_,N", [(1, 7, 5), (9, 64, 33), (37, 130, 70)])
def test_bf16_linear_matches_the_emulation(isa, M, K_, N):
    rng = np.random.default_rng(M + K_ + N)
    x = rng.standard_normal((M, K_)).astype(np.float32)
    w = rng.standard_normal((N, K_)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    y = bf16.Bf16Linear(w, b, isa=isa)(x)
    xb, wb = K.bf16_round(x).astype(np.float64), K.bf16_round(w).astype(np.float64)
    exact = xb @ wb.T + b
    bound = (K_ + 2) * 2.0 ** -23 * (np.abs(xb) @ np.abs(wb).T + np.abs(b))  # fp32 accumulation only
    assert np.all(np.abs(y - exact) <= bound)
    if M == 1:  # the scalar emulation of one output, exactly the pair-wise order of vdpbf16ps
        assert abs(y[0, 0] - b[0] - _bf16_dot(list(x[0]), list(w[0]))) <= 4 * 2.0 ** -23 * np.abs(exact).max()
    assert np.abs(y - (x.astype(np.float64) @ w.T.astype(np.float64) + b)).max() > 0  # really rounded


def test_bf16_engine_matches_fp32_within_bf16_tolerance(tiny_bert, monkeypatch):
    from workbench.runtime import compile_model

    rng = np.random.default_rng(0)
    ids = rng.integers(5, 120, (4, 12))
    mask = np.ones_like(ids)
    mask[2, 8:] = 0
    fp32 = compile_model(tiny_bert, quantize=False)(ids, mask)
    engine = compile_model(tiny_bert, dtype="bf16")
    got = engine(ids, mask)
    d = engine.describe()
    assert d["dtype"] == "bf16" and not d["quantize"]
    impl = engine.impls["layers.0.ffn1"]
    assert impl == ("workbench_ext.bf16.Bf16Linear[avx512_bf16]" if K.has_bf16()
                    else "numpy(BLAS sgemm): fp32, no AVX512-BF16 on this CPU")
    assert np.abs(got - fp32).max() <= 0.02 * np.abs(fp32).max() + 2e-3
    if K.has_bf16():
        assert np.abs(got - fp32).max() > 1e-6  # bf16 really ran
    # without AVX512-BF16 the engine runs fp32 and says so
    monkeypatch.setattr(K, "has_bf16", lambda: False)
    fallback = compile_model(tiny_bert, dtype="bf16", kernel_choice="dense")
    assert "no AVX512-BF16" in fallback.impls["layers.0.qkv"]
    np.testing.assert_allclose(fallback(ids, mask), fp32, atol=1e-6)
