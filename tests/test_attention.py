"""The fused attention kernel (workbench_ext.attention, fp32) against torch on every ISA path the
CPU has, its significance output, and the runtime's attention entry point (`kernels.attention`):
the NumPy reference it falls back to when asked for by name gives what the kernel gives.
bf16 attention is in test_attention_bf16.py."""
import numpy as np
import pytest

cpu = pytest.importorskip("workbench_ext.cpu", reason="workbench_ext not built (python setup.py build_ext --inplace)")

from test_kernels import AVAILABLE, THREADS, isa  # noqa: E402,F401



# ------------------------------------------------------------------------------ attention
def _attn_case(B, S, nh, d, R, seed):
    rng = np.random.default_rng(seed)
    qkv = rng.standard_normal((B, S, 3, nh, d)).astype(np.float32)
    k = qkv[:, :, 1].transpose(0, 2, 3, 1)                       # [B, nh, d, S] strided view
    v = qkv[:, :, 2].transpose(0, 2, 1, 3)                       # [B, nh, S, d]
    q = qkv[:, :R, 0].transpose(0, 2, 1, 3)                      # [B, nh, R, d]
    mask = np.ones((B, S), np.float32)
    mask[-1, S // 2 + 1:] = 0                                    # padding in the last row
    bias = ((1 - mask) * np.finfo(np.float32).min).astype(np.float32)[:, None, None, :]
    return q, k, v, bias


# S: every count of trailing key vectors a score tile can end with on each width (AVX-512 16
# lanes x 4 per tile: 1 vector at 70, 2 at 26 and 90, 3 at 37; AVX2 8 x 2: 1 at 37 and 70)
@pytest.mark.parametrize("B,S,nh,d,R", [(1, 1, 1, 1, 1), (2, 37, 3, 5, 37), (2, 128, 12, 64, 128),
                                        (3, 70, 4, 33, 1), (1, 64, 2, 96, 64), (2, 26, 12, 32, 26),
                                        (1, 90, 2, 16, 90)])
@pytest.mark.parametrize("threads", THREADS)
def test_fused_attention_vs_torch(isa, B, S, nh, d, R, threads):
    import torch
    from workbench_ext import attention
    q, k, v, bias = _attn_case(B, S, nh, d, R, B * S + d)
    ref = torch.softmax(torch.from_numpy(q.copy()) @ torch.from_numpy(k.copy()) + torch.from_numpy(bias), -1)
    ref = (ref @ torch.from_numpy(v.copy())).permute(0, 2, 1, 3).numpy()
    out = attention.attention(q, k, v, bias, num_threads=threads)
    assert out.shape == (B, R, nh, d) and out.flags.c_contiguous
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=3e-5)  # fp32, unscaled scores up to ~30


@pytest.mark.parametrize("B,S,nh,d", [(1, 1, 1, 1), (2, 37, 3, 5), (2, 128, 12, 64)])
@pytest.mark.parametrize("threads", THREADS)
def test_fused_attention_significance(isa, B, S, nh, d, threads):
    """significance=True: the same ctx, plus each key's probabilities summed over the queries
    that are not padding (what token dropping ranks keys by)."""
    import torch
    from workbench_ext import attention
    q, k, v, bias = _attn_case(B, S, nh, d, S, B * S + d + 1)
    probs = torch.softmax(torch.from_numpy(q.copy()) @ torch.from_numpy(k.copy()) + torch.from_numpy(bias), -1)
    qmask = torch.from_numpy((bias == 0).astype(np.float32))          # [B, 1, 1, S]: real queries
    want = (qmask @ probs)[:, :, 0].numpy()                            # [B, nh, S]
    ctx, sig = attention.attention(q, k, v, bias, num_threads=threads, significance=True)
    np.testing.assert_array_equal(ctx, attention.attention(q, k, v, bias, num_threads=threads))
    assert sig.shape == (B, nh, S)
    np.testing.assert_allclose(sig, want, rtol=1e-4, atol=1e-5)
    if B > 1:  # the padded keys of the last row get (almost) nothing from its real queries
        assert sig[-1, :, S // 2 + 1:].max() < 1e-6
    if S > 1:
        with pytest.raises(ValueError, match="R == S"):
            attention.attention(q[:, :, :1], k, v, bias, significance=True)


def test_fused_attention_simd_paths_identical():
    """AVX-512 and AVX2 tile differently (wb_attn_simd.h) but run the same FMA chain per output
    (no reordered sums) and share the softmax row: bit-identical outputs."""
    from workbench_ext import attention
    paths = [i for i in ("avx512_vnni", "avx2") if i in AVAILABLE]
    if len(paths) < 2:
        pytest.skip(f"needs avx512_vnni and avx2 (available: {AVAILABLE})")
    for S in (50, 26, 7):
        q, k, v, bias = _attn_case(2, S, 3, 40, S, 7)
        outs = []
        for name in paths:
            cpu.set_isa(name)
            try:
                outs.append(attention.attention(q, k, v, bias))
            finally:
                cpu.set_isa(None)
        np.testing.assert_array_equal(outs[0], outs[1])


def test_fused_attention_bad_inputs():
    from workbench_ext import attention
    q, k, v, bias = _attn_case(2, 8, 2, 4, 8, 1)
    with pytest.raises(ValueError, match="k must have shape"):
        attention.attention(q, k[:, :1], v, bias)
    with pytest.raises(ValueError, match="mask_bias"):
        attention.attention(q, k, v, bias[:1])
    with pytest.raises(TypeError, match="float32"):
        attention.attention(q.astype(np.float64), k, v, bias)
    with pytest.raises(ValueError, match="contiguous along head_dim"):
        attention.attention(q[..., ::2], k[:, :, ::2], v[..., ::2], bias)


def test_engine_refuses_missing_kernels(monkeypatch):
    """No silent NumPy engine: a missing compiled module fails with the build command, unless
    the NumPy path is asked for by name."""
    from workbench.runtime import kernels as K
    monkeypatch.setattr(K, "_ext_attn", None)
    monkeypatch.delenv("WORKBENCH_KERNELS", raising=False)
    with pytest.raises(K.KernelsMissingError, match="setup.py build_ext --inplace") as exc:
        K.require_compiled()
    assert "workbench_ext.attention" in str(exc.value)
    monkeypatch.setenv("WORKBENCH_KERNELS", "numpy")
    K.require_compiled()  # asked for by name: allowed
    assert K.kernel_report()["attention"].startswith("numpy")


@pytest.mark.parametrize("B,S,nh,d,R,threads", [(2, 37, 3, 5, 37, 1), (3, 128, 12, 64, 128, 2),
                                                (1, 128, 12, 64, 128, 2), (2, 70, 4, 33, 1, 2)])
def test_numpy_reference_attention_matches_the_kernel(monkeypatch, B, S, nh, d, R, threads):
    """`kernels.attention` without the compiled kernel (WORKBENCH_KERNELS=numpy): the NumPy
    reference, its (batch, head) pairs split over Python threads by batch or by head, gives the
    kernel's context and significance."""
    from workbench.runtime import kernels as K
    q, k, v, bias = _attn_case(B, S, nh, d, R, B * S + nh)
    want = K.attention(q, k, v, bias, num_threads=threads)
    want_sig = np.zeros((B, nh, S), np.float32) if R == S else None
    if want_sig is not None:
        K.attention(q, k, v, bias, want_sig, num_threads=threads)
    monkeypatch.setattr(K, "_ext_attn", None)
    assert not K.has_fused_attention()
    got = K.attention(q, k, v, bias, num_threads=threads)
    assert got.shape == (B, R, nh, d) and got.flags.c_contiguous
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if want_sig is not None:
        sig = np.zeros((B, nh, S), np.float32)
        ctx = K.attention(q, k, v, bias, sig, num_threads=threads)
        np.testing.assert_allclose(ctx, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(sig, want_sig, rtol=1e-4, atol=1e-4)
