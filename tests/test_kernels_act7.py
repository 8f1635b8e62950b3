"""The int8 layers' opt-in 7-bit activations (``act_bits=7``): per-token quantization onto
[0, 127], exact integer results on every ISA (on AVX2 through the vpmaddubsw kernel of
wb_int8_dense_avx2_u7.h and the 1x4 block-sparse wb_avx2_sparse_col32_u7, whose s16 pair sums
must not saturate), and clear refusals."""
import numpy as np
import pytest

from workbench_ext import int8, ops
from test_kernels import SHAPES, THREADS, _rng, _weights, isa  # noqa: F401 (isa: the per-ISA fixture)

LAYERS = [int8.DenseInt8Linear, int8.BlockSparseInt8Linear, int8.TileSparseInt8Linear]


def _reference7(x, w):
    q, s, z = ops.quantize_per_token(x, bits=7)
    acc = (q.astype(np.int64) - z[:, None].astype(np.int64)) @ w.astype(np.int64).T
    return q, s, z, acc


def test_quantize_per_token_7_bits_uses_the_whole_7_bit_range():
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((9, 300)) * 4 + 1).astype(np.float32)
    q, s, z = ops.quantize_per_token(x, bits=7)
    assert q.max() <= 127 and q.max() >= 126 and q.min() == 0
    lo, hi = np.minimum(x.min(axis=1), 0), np.maximum(x.max(axis=1), 0)
    np.testing.assert_allclose(s, (hi - lo) / 127, rtol=1e-6)
    assert np.all(np.abs((q.astype(np.float32) - z[:, None]) * s[:, None] - x) <= 0.5001 * s[:, None])
    with pytest.raises(ValueError, match="bits must be 7 or 8"):
        ops.quantize_per_token(x, bits=6)


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("M,K,N", SHAPES)
@pytest.mark.parametrize("threads", THREADS)
def test_act7_exact_vs_int_reference(isa, cls, M, K, N, threads):
    rng = _rng("act7", cls.__name__, M, K, N)
    sp = 0.0 if cls is int8.DenseInt8Linear else 0.7
    w, ws, b = _weights(rng, N, K, block_sparsity=sp)
    x = (rng.standard_normal((M, K)) * 3 + rng.standard_normal((M, 1))).astype(np.float32)
    layer = cls(w, ws, b, act_bits=7)
    assert layer.isa == isa and layer.act_bits == 7 and "act_bits=7" in repr(layer)
    q, s, z, acc = _reference7(x, w)
    np.testing.assert_array_equal(layer.qmatmul(q, z, num_threads=threads), acc)
    expect = acc.astype(np.float32) * (s[:, None] * ws[None, :]) + b
    np.testing.assert_allclose(layer(x, num_threads=threads), expect, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("cls", LAYERS[:2])
@pytest.mark.parametrize("M", [5, 40])   # sparse AVX2: the int16 kernel up to 16 rows, vpmaddubsw past
def test_act7_largest_pair_sums_do_not_saturate(isa, cls, M):
    """q = 127 against w = 127 or -128 everywhere: every vpmaddubsw pair sum is 32258 or -32512,
    the extremes 7-bit x 8-bit products can make (u8 activations would saturate s16)."""
    K, N = 1024, 32
    col = np.where(np.arange(N) % 2 == 0, 127, -128)
    w = np.repeat(col[:, None], K, axis=1).astype(np.int8)
    layer = cls(w, np.ones(N, np.float32), act_bits=7)
    q = np.full((M, K), 127, np.uint8)
    got = layer.qmatmul(q, np.zeros(M, np.int32))
    np.testing.assert_array_equal(got, np.broadcast_to(col * 127 * K, (M, N)))


def test_act7_same_bits_on_every_isa():
    from workbench_ext import cpu
    rng = _rng("act7-isas")
    w, ws, b = _weights(rng, 90, 200)
    x = (rng.standard_normal((70, 200)) * 2).astype(np.float32)
    w[:, 40:120] = 0   # some all-zero 1x4 blocks for the sparse layer
    for cls in LAYERS[:2]:
        outs = {i: cls(w, ws, b, isa=i, act_bits=7)(x) for i in cpu.available_isas()}
        ref = outs.pop("portable")
        for name, y in outs.items():   # one shared epilogue: the same floats, not just close ones
            np.testing.assert_array_equal(y, ref, err_msg=f"{cls.__name__} {name}")


def test_act7_refusals():
    w, ws = np.ones((4, 8), np.int8), np.ones(4, np.float32)
    with pytest.raises(ValueError, match="act_bits must be 7 or 8"):
        int8.DenseInt8Linear(w, ws, act_bits=6)
    layer = int8.BlockSparseInt8Linear(w, ws, act_bits=7)
    with pytest.raises(ValueError, match="act_bits=7"):
        layer.static(np.ones((2, 8), np.float32), 0.1, 0)
    with pytest.raises(ValueError, match=r"values up to 200.*act_bits=7"):
        layer.qmatmul(np.full((2, 8), 200, np.uint8), np.zeros(2, np.int32))
