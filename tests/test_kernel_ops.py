"""The fp32 and elementwise kernels (block-sparse fp32 Linear, GELU, LayerNorm, softmax, per-token
quantization) against NumPy/torch references on every ISA path the CPU has, 1 and 2 threads, and
every kernel's input validation (int8 layers included): a bad shape, dtype, alignment or value
is a clear error, not a crash. The int8 GEMM is in test_kernels.py, attention in test_attention.py."""
import numpy as np
import pytest

cpu = pytest.importorskip("workbench_ext.cpu", reason="workbench_ext not built (python setup.py build_ext --inplace)")
from workbench_ext import int8, ops, sparse  # noqa: E402

from test_kernels import AVAILABLE, SHAPES, THREADS, _rng, isa  # noqa: E402,F401


# --------------------------------------------------------------------------- fp32 sparse
@pytest.mark.parametrize("M,K,N", SHAPES)
@pytest.mark.parametrize("threads", THREADS)
def test_block_sparse_fp32(isa, M, K, N, threads):
    rng = _rng("fp32", M, K, N)
    w = rng.standard_normal((N, K)).astype(np.float32)
    Kb = (K + 3) // 4
    mask = np.repeat(rng.random((N, Kb)) >= 0.7, 4, axis=1)[:, :K]
    w = np.where(mask, w, 0).astype(np.float32)
    if N > 1:
        w[1] = 0
    b = rng.standard_normal(N).astype(np.float32)
    x = rng.standard_normal((M, K)).astype(np.float32)
    layer = sparse.BlockSparseFp32Linear(w, b)
    y = layer(x, num_threads=threads)
    np.testing.assert_allclose(y, x.astype(np.float64) @ w.T.astype(np.float64) + b, rtol=1e-4, atol=1e-4)
    y0 = sparse.BlockSparseFp32Linear(w, None)(x, num_threads=threads)
    np.testing.assert_allclose(y0, x.astype(np.float64) @ w.T.astype(np.float64), rtol=1e-4, atol=1e-4)
    zero = sparse.BlockSparseFp32Linear(np.zeros((N, K), np.float32), b)
    assert zero.nnz_blocks == 0
    np.testing.assert_array_equal(zero(x), np.broadcast_to(b, (M, N)))


# ----------------------------------------------------------------------------------- ops
torch = pytest.importorskip("torch")

OPS_SHAPES = [(1, 1), (3, 7), (5, 768), (2, 3, 130)]


@pytest.mark.parametrize("shape", OPS_SHAPES)
@pytest.mark.parametrize("threads", THREADS)
def test_gelu(isa, shape, threads):
    x = (_rng("gelu", shape).standard_normal(shape) * 4).astype(np.float32)
    x.flat[0] = 12.0
    y = ops.gelu(x, num_threads=threads)
    # float64 reference: torch's float32 erf differs by ISA (AVX2 vs AVX-512 builds differ by
    # ~1e-6 near erf = -1), ours is within 5e-7 of the exact value on every path
    ref = torch.nn.functional.gelu(torch.from_numpy(x).double()).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


def _per_isa(fn, x, names):
    """{name: fn(x) with the kernels forced onto ISA `name`} for each of `names`."""
    outs = {}
    for name in names:
        cpu.set_isa(name)
        try:
            outs[name] = fn(x)
        finally:
            cpu.set_isa(None)
    return outs


def _same_bits_on_avx512_and_avx2(fn, x, what=""):
    paths = [i for i in ("avx512_vnni", "avx2") if i in AVAILABLE]
    if len(paths) < 2:
        pytest.skip(f"needs avx512_vnni and avx2 (available: {AVAILABLE})")
    outs = list(_per_isa(fn, x, paths).values())
    np.testing.assert_array_equal(outs[0], outs[1], err_msg=what)


def test_softmax_avx512_and_avx2_identical():
    """The AVX-512 softmax row computes the same exponentials (16 lanes) and sums them in the AVX2
    order: the same bits, for row lengths with and without 16- / 8-element tails."""
    for H in (1, 7, 8, 15, 16, 24, 37, 128, 131):
        x = (np.random.default_rng(H).standard_normal((5, H)) * 6).astype(np.float32)
        x[0, 0] = -1e30  # a masked key
        _same_bits_on_avx512_and_avx2(ops.softmax, x, f"H={H}")


def test_gelu_avx512_and_avx2_identical():
    """The AVX-512 GELU runs the AVX2 one's operations on 16 lanes: the same bits (so the int8
    epilogue's fused GELU does not depend on which of the two a machine has)."""
    x = (np.random.default_rng(3).standard_normal(16 * 40 + 13) * 5).astype(np.float32)
    x[:6] = [0.0, -0.0, 3.9, -3.9, 40.0, -40.0]
    _same_bits_on_avx512_and_avx2(ops.gelu, x)


@pytest.mark.parametrize("rows", [1, 2, 3, 8])
@pytest.mark.parametrize("fused", [False, True])
def test_layernorm_avx512_and_avx2_identical(rows, fused):
    """The AVX-512 LayerNorm (two rows at a time, a 16-lane sum whose halves are the AVX2 row's two
    8-lane sums) gives the AVX2 row function's bits: row lengths with and without a lone block of
    8 and a scalar tail, an odd last row, with and without bias and residual."""
    for H in (1, 7, 8, 15, 16, 24, 37, 768, 771, 776):
        rng = np.random.default_rng(H * 10 + rows)
        x = (rng.standard_normal((rows, H)) * 3 + 1).astype(np.float32)
        x[-1] *= 50   # rows of different scales: a row's sums mixed with its neighbour's show
        r = rng.standard_normal((rows, H)).astype(np.float32)
        bias, g, be = (rng.standard_normal(H).astype(np.float32) for _ in range(3))
        if fused:
            fn = lambda v: ops.add_bias_residual_layernorm(v, bias, r, g, be, 1e-5, num_threads=1)  # noqa: E731
        else:
            fn = lambda v: ops.layernorm(v, g, be, 1e-12, num_threads=1)  # noqa: E731
        _same_bits_on_avx512_and_avx2(fn, x, f"H={H}")


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("H", [1, 7, 8, 37, 768])
@pytest.mark.parametrize("threads", THREADS)
def test_embed_rows_is_the_numpy_lookup_bit_for_bit(isa, dtype, H, threads):
    """ops.embed_rows = table[ids] (fp16 widened) + add[add_ids], the same bits as NumPy on every
    ISA path (F16C on AVX2 and up, the bit-level widening on portable), fp16's subnormals,
    infinities, NaNs and -0 included."""
    rng = _rng("embed", H)
    table = (rng.standard_normal((50, H)) * 3).astype(dtype)
    if dtype == np.float16:
        special = np.array([0.0, -0.0, 6e-8, -3e-6, 6.1e-5, 65504, np.inf, -np.inf, np.nan], np.float16)
        table.flat[:special.size] = special[:min(special.size, table.size)]
    ids = rng.integers(0, 50, size=(3, 45)).astype(np.int64)
    ids[0, :4] = 0                                    # the row with the special values
    add = rng.standard_normal((45, H)).astype(np.float32)
    add_ids = np.broadcast_to(np.arange(45), (3, 45)).ravel().copy()
    want = table[ids.ravel()].astype(np.float32)
    got = ops.embed_rows(table, ids, num_threads=threads)
    np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))
    want += add[add_ids]
    got = ops.embed_rows(table, ids, add, add_ids, num_threads=threads)
    np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))


def test_embed_rows_rejects_bad_input_by_name():
    table = np.zeros((10, 4), np.float16)
    ids = np.array([1, 2], np.int64)
    with pytest.raises(IndexError, match=r"ids must lie in \[0, 10\)"):
        ops.embed_rows(table, np.array([3, 10], np.int64))
    with pytest.raises(IndexError, match="ids must lie"):
        ops.embed_rows(table, np.array([-1], np.int64))
    with pytest.raises(TypeError, match="ids must have dtype int64"):
        ops.embed_rows(table, ids.astype(np.int32))
    with pytest.raises(TypeError, match="table must be a float32 or float16"):
        ops.embed_rows(table.astype(np.float64), ids)
    with pytest.raises(ValueError, match="add and add_ids go together"):
        ops.embed_rows(table, ids, np.zeros((5, 4), np.float32))
    with pytest.raises(ValueError, match="add must have 4 columns"):
        ops.embed_rows(table, ids, np.zeros((5, 3), np.float32), ids)
    with pytest.raises(IndexError, match=r"add_ids must lie in \[0, 5\)"):
        ops.embed_rows(table, ids, np.zeros((5, 4), np.float32), np.array([0, 5], np.int64))
    with pytest.raises(ValueError, match="add_ids must have as many values as ids"):
        ops.embed_rows(table, ids, np.zeros((5, 4), np.float32), np.array([0], np.int64))


@pytest.mark.parametrize("shape", OPS_SHAPES)
@pytest.mark.parametrize("threads", THREADS)
def test_layernorm_and_fused(isa, shape, threads):
    rng = _rng("ln", shape)
    H = shape[-1]
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    r = rng.standard_normal(shape).astype(np.float32)
    bias, g, be = (rng.standard_normal(H).astype(np.float32) for _ in range(3))
    t = torch.from_numpy
    ref = torch.nn.functional.layer_norm(t(x), (H,), t(g), t(be), 1e-12).numpy()
    np.testing.assert_allclose(ops.layernorm(x, g, be, 1e-12, num_threads=threads), ref, rtol=1e-4, atol=1e-4)
    ref2 = torch.nn.functional.layer_norm(t(x) + t(bias) + t(r), (H,), t(g), t(be), 1e-5).numpy()
    y2 = ops.add_bias_residual_layernorm(x, bias, r, g, be, 1e-5, num_threads=threads)
    np.testing.assert_allclose(y2, ref2, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", OPS_SHAPES)
@pytest.mark.parametrize("threads", THREADS)
def test_softmax(isa, shape, threads):
    x = (_rng("sm", shape).standard_normal(shape) * 30).astype(np.float32)
    x.flat[0] = 1e30                     # stability: no overflow
    y = ops.softmax(x, num_threads=threads)
    np.testing.assert_allclose(y, torch.softmax(torch.from_numpy(x), -1).numpy(), rtol=1e-5, atol=1e-7)
    m = np.full((2, 5), -np.inf, np.float32)
    m[0, 2] = 0.0
    np.testing.assert_allclose(ops.softmax(m)[0], [0, 0, 1, 0, 0])
    assert np.all(np.isfinite(ops.softmax(m)[0]))


def _quant_reference(x):
    lo = np.minimum(x.min(axis=1), 0).astype(np.float32)
    hi = np.maximum(x.max(axis=1), 0).astype(np.float32)
    s = ((hi - lo) / np.float32(255)).astype(np.float32)
    ok = s > 0
    s = np.where(ok, s, np.float32(1)).astype(np.float32)
    z = np.where(ok, np.clip(np.rint(-lo / s), 0, 255), 0).astype(np.int32)
    inv = (np.float32(1) / s).astype(np.float32)
    q = np.clip(np.rint(x * inv[:, None]) + z[:, None].astype(np.float32), 0, 255).astype(np.uint8)
    return q, s, z


@pytest.mark.parametrize("M,K", [(1, 1), (3, 5), (4, 67), (9, 768), (2, 0)])
@pytest.mark.parametrize("threads", THREADS)
def test_quantize_per_token(isa, M, K, threads):
    x = (_rng("q", M, K).standard_normal((M, K)) * 2).astype(np.float32)
    if M > 2:
        x[1] = 0.0
        x[2] = np.abs(x[2])
    q, s, z = ops.quantize_per_token(x, num_threads=threads)
    if K == 0:
        assert q.shape == (M, 0)
        return
    rq, rs, rz = _quant_reference(x)
    np.testing.assert_array_equal(s, rs)
    np.testing.assert_array_equal(z, rz)
    np.testing.assert_array_equal(q, rq)
    recon = (q.astype(np.float32) - z[:, None]) * s[:, None]
    assert np.all(np.abs(recon - x) <= 0.5 * s[:, None] + 1e-6)


@pytest.mark.parametrize("bits", [8, 7])
def test_quantize_per_token_same_bits_on_every_isa(bits):
    """The AVX-512, AVX2 and portable quantizers give the same bytes, scales and zero points,
    NaN, infinities, -0, huge values and every tail length (K mod 16) included."""
    rng = _rng("qisa", bits)
    rows = []
    for K in (1, 7, 8, 15, 16, 17, 24, 31, 67, 768):
        r = (rng.standard_normal((3, K)) * 3).astype(np.float32)
        r[1, ::3] = -0.0
        r[2, -1] = [np.nan, np.inf, -np.inf, 3e38, -0.0][K % 5]
        rows.append(r)
    for x in rows + [np.zeros((2, 20), np.float32), np.full((2, 33), -0.0, np.float32)]:
        outs = _per_isa(lambda v: ops.quantize_per_token(v, bits=bits), x, AVAILABLE)
        for name, got in outs.items():
            for part, a, b in zip(("q", "scale", "zero point"), got, outs["portable"]):
                np.testing.assert_array_equal(a, b, err_msg=f"{name} {part}, K={x.shape[1]}")
        outs = _per_isa(lambda v: ops.quantize_static(v, 0.03, 100), x, AVAILABLE)
        for name, got in outs.items():
            np.testing.assert_array_equal(got, outs["portable"], err_msg=f"{name} static, K={x.shape[1]}")


@pytest.mark.parametrize("threads", THREADS)
def test_quantize_static(isa, threads):
    x = (_rng("qs").standard_normal((3, 4, 50)) * 3).astype(np.float32)
    q = ops.quantize_static(x, 0.05, 128, num_threads=threads)
    inv = np.float32(1) / np.float32(0.05)
    ref = np.clip(np.rint(x * inv) + np.float32(128), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(q, ref)
    assert q.shape == x.shape and q.dtype == np.uint8


# ---------------------------------------------------------------------------- bad inputs
def _bad_cases():
    w = np.ones((4, 6), np.int8)
    ws = np.ones(4, np.float32)
    x = np.ones((2, 6), np.float32)
    d = int8.DenseInt8Linear(w, ws, None)
    sp = int8.BlockSparseInt8Linear(w, ws, None)
    f = sparse.BlockSparseFp32Linear(np.ones((4, 6), np.float32), None)
    v = np.ones(6, np.float32)
    return [
        ("w_s8", TypeError, lambda: int8.DenseInt8Linear(w.astype(np.int16), ws, None)),
        ("w_s8", TypeError, lambda: int8.DenseInt8Linear(w.tolist(), ws, None)),
        ("w_s8", ValueError, lambda: int8.DenseInt8Linear(w[None], ws, None)),
        ("w_s8", ValueError, lambda: int8.BlockSparseInt8Linear(np.ones((6, 4), np.int8).T, ws, None)),
        ("w_s8", ValueError, lambda: int8.DenseInt8Linear(np.ones((0, 6), np.int8), ws[:0], None)),
        ("w_scale", ValueError, lambda: int8.DenseInt8Linear(w, np.ones(3, np.float32), None)),
        ("w_scale", TypeError, lambda: int8.BlockSparseInt8Linear(w, ws.astype(np.float64), None)),
        ("bias", ValueError, lambda: int8.DenseInt8Linear(w, ws, np.ones(5, np.float32))),
        ("bias", TypeError, lambda: int8.BlockSparseInt8Linear(w, ws, np.ones(4, np.float64))),
        ("x", TypeError, lambda: d(x.astype(np.float64))),
        ("x", ValueError, lambda: d(np.ones((2, 7), np.float32))),
        ("x", ValueError, lambda: d(np.ones((2, 12), np.float32)[:, ::2])),
        ("x", ValueError, lambda: sp(np.ones(6, np.float32))),
        ("x", TypeError, lambda: sp(torch.ones(2, 6))),
        ("q", TypeError, lambda: d.qmatmul(x, np.zeros(2, np.int32))),
        ("zero_point", ValueError, lambda: d.qmatmul(np.ones((2, 6), np.uint8), np.zeros(3, np.int32))),
        ("num_threads", ValueError, lambda: d(x, num_threads=0)),
        ("w", TypeError, lambda: sparse.BlockSparseFp32Linear(w, None)),
        ("bias", ValueError, lambda: sparse.BlockSparseFp32Linear(np.ones((4, 6), np.float32), v)),
        ("x", ValueError, lambda: f(np.ones((3, 5), np.float32))),
        ("x", TypeError, lambda: f(np.ones((3, 6), np.float16))),
        ("x", TypeError, lambda: ops.gelu(np.ones(3, np.float64))),
        ("x", ValueError, lambda: ops.gelu(np.ones((4, 4), np.float32).T)),
        ("x", ValueError, lambda: ops.gelu(np.ones((), np.float32))),
        ("gamma", ValueError, lambda: ops.layernorm(np.ones((2, 6), np.float32), np.ones(5, np.float32), v)),
        ("beta", TypeError, lambda: ops.layernorm(np.ones((2, 6), np.float32), v, v.astype(np.float64))),
        ("residual", ValueError, lambda: ops.add_bias_residual_layernorm(np.ones((2, 6), np.float32), v, np.ones((3, 6), np.float32), v, v)),
        ("bias", ValueError, lambda: ops.add_bias_residual_layernorm(np.ones((2, 6), np.float32), np.ones(2, np.float32), np.ones((2, 6), np.float32), v, v)),
        ("x", TypeError, lambda: ops.softmax([1.0, 2.0])),
        ("x", ValueError, lambda: ops.quantize_per_token(np.ones(5, np.float32))),
        ("scale", ValueError, lambda: ops.quantize_static(x, 0.0, 3)),
        ("zero_point", ValueError, lambda: ops.quantize_static(x, 0.1, 300)),
        ("isa", ValueError, lambda: int8.DenseInt8Linear(w, ws, None, isa="bogus")),
    ]


def test_non_finite_inputs_do_not_crash(isa):
    w = np.ones((5, 9), np.int8)
    x = np.ones((4, 9), np.float32)
    x[0, 3] = np.nan
    x[1, 2] = np.inf
    x[2, :] = -np.inf
    x[3, 1] = 3e38
    for layer in (int8.DenseInt8Linear(w, np.ones(5, np.float32), None),
                  int8.BlockSparseInt8Linear(w, np.ones(5, np.float32), None),
                  sparse.BlockSparseFp32Linear(w.astype(np.float32), None)):
        assert layer(x).shape == (4, 5)
    q, s, z = ops.quantize_per_token(x)
    assert q.shape == x.shape and np.all((z >= 0) & (z <= 255))
    for fn in (ops.gelu, ops.softmax):
        assert fn(x).shape == x.shape
    ops.layernorm(x, np.ones(9, np.float32), np.zeros(9, np.float32))
    ops.quantize_static(x, 0.1, 0)


def test_unaligned_input_rejected():
    buf = np.zeros(4 * 6 + 1, np.uint8)
    x = np.frombuffer(buf.data, dtype=np.float32, count=6, offset=1).reshape(1, 6)
    assert not x.flags.aligned
    with pytest.raises(ValueError, match="x is not aligned"):
        ops.gelu(x)


@pytest.mark.parametrize("idx", range(len(_bad_cases())))
def test_bad_inputs_raise(idx):
    name, exc, fn = _bad_cases()[idx]
    with pytest.raises(exc, match=name):
        fn()
