"""int8 attention (workbench_ext.attention precision="int8", wb_attn_int8.h): q per query row, k
per key after subtracting the keys' mean, v per head_dim column and the softmax weights on int8
grids, int32 sums, on CPUs with AVX-512 VNNI; elsewhere the fp32 kernels run and the engine says
so."""
import copy

import numpy as np
import pytest

cpu = pytest.importorskip("workbench_ext.cpu", reason="workbench_ext not built (python setup.py build_ext --inplace)")
from workbench_ext import attention  # noqa: E402

from test_attention import _attn_case  # noqa: E402
from test_attention_bf16 import _check_encoder_and_save  # noqa: E402
from test_runtime import _engine_logits, _torch_logits  # noqa: E402,F401  (the minilm fixture: conftest.py)

needs_int8 = pytest.mark.skipif(not attention.int8_runs(),
                                reason="CPU lacks AVX-512 VNNI: int8 attention runs the fp32 kernels here")


def _grid(x, axis, scale=None):
    """x on a symmetric int8 grid per slice along `axis` (scale = max |x| / 127, or as given):
    (x8, scale)."""
    if scale is None:
        scale = np.abs(x).max(axis, keepdims=True) / 127
    return np.clip(np.rint(np.divide(x, scale, out=np.zeros_like(x), where=scale > 0)), -128, 127), scale


def _emulated(q, k, v, bias):
    """The int8 kernel's arithmetic in float64: scores from q8 (per query row) and k8 (per key,
    after the mean of the unmasked keys is subtracted), weights e = rint(255 exp(score - max)),
    ctx = (e . v8) sv / sum(e) with v8 per head_dim column on the unmasked keys' range; also the
    probabilities e / sum(e)."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    keys = k.swapaxes(-1, -2)                                    # [B, nh, S, d]
    B, S = keys.shape[0], keys.shape[2]
    counted = (np.asarray(bias).reshape(B, S) == 0)              # the unmasked keys
    counted[~counted.any(1)] = True                              # none: all of them
    w = counted[:, None, :, None].astype(np.float64)             # [B, 1, S, 1]
    mean = (keys * w).sum(-2, keepdims=True) / w.sum(-2, keepdims=True)
    k8, sk = _grid(keys - mean, -1)
    q8, sq = _grid(q, -1)
    s = (q8 @ k8.swapaxes(-1, -2)) * sq * sk.swapaxes(-1, -2) + bias.astype(np.float64)
    e = np.rint(255 * np.exp(s - s.max(-1, keepdims=True)))
    v8, sv = _grid(v, -2, np.abs(v * w).max(-2, keepdims=True) / 127)
    ctx = (e @ v8) * sv / e.sum(-1, keepdims=True)
    return ctx.transpose(0, 2, 1, 3), e / e.sum(-1, keepdims=True)


@needs_int8
@pytest.mark.parametrize("B,S,nh,d,R", [(1, 1, 1, 1, 1), (2, 37, 3, 5, 37), (2, 128, 12, 64, 128),
                                        (3, 70, 4, 33, 1), (1, 65, 2, 96, 65), (1, 129, 1, 80, 129)])
@pytest.mark.parametrize("threads", [1, 2])
def test_int8_attention_is_the_int8_arithmetic(B, S, nh, d, R, threads):
    """Against float64 on the same int8 grids: only float rounding differs, which can move a
    value across a rounding boundary of its grid now and then (one weight off by 1/255 of the
    row's largest); a wrong quad layout, padding, zero point or head offset is off by the size
    of the outputs everywhere."""
    q, k, v, bias = _attn_case(B, S, nh, d, R, 3 * S + d)
    q = np.ascontiguousarray(q * np.float32(d ** -0.5))
    want, _ = _emulated(q, k, v, bias)
    out = attention.attention(q, k, v, bias, num_threads=threads, precision="int8")
    assert out.shape == (B, R, nh, d) and out.flags.c_contiguous
    err = np.abs(out - want)
    assert err.max() < 0.03 and err.mean() < 1e-3, (err.max(), err.mean())
    fp32 = attention.attention(q, k, v, bias, num_threads=threads)
    if S > 1:  # it did round: not the fp32 kernel's result
        assert np.abs(out - fp32).max() > 1e-4
    assert np.abs(out - fp32).max() < 0.1 * np.abs(fp32).max() + 0.02


@needs_int8
@pytest.mark.parametrize("threads", [1, 2])
def test_padding_does_not_move_the_int8_grids(threads):
    """The keys' mean and v's column ranges come from the unmasked keys only, so a padded row's
    context is the bits of the same row alone at its own length. (When padding entered both,
    a padded batch's logits were up to 0.1 off the same sentences' alone, at logits ~0.6.)"""
    B, S, nh, d = 2, 40, 3, 16
    q, k, v, bias = _attn_case(B, S, nh, d, S, 5)   # the last row: padding after S // 2 + 1 keys
    n = S // 2 + 1
    k = k.copy()
    k[1, :, :, n:] += 30.0                           # padding far off the real keys
    out = attention.attention(q, k, v, bias, num_threads=threads, precision="int8")
    alone = attention.attention(np.ascontiguousarray(q[1:, :, :n]), np.ascontiguousarray(k[1:, :, :, :n]),
                                np.ascontiguousarray(v[1:, :, :n]), np.zeros((1, 1, 1, n), np.float32),
                                num_threads=threads, precision="int8")
    np.testing.assert_array_equal(out[1, :n], alone[0])


@needs_int8
def test_subtracting_the_keys_mean_keeps_a_shared_key_offset_off_the_grid():
    """Keys that share a large offset (common in trained models: a few channels carry it in
    every token) would spend their int8 grid on it; the kernel subtracts the keys' mean first,
    which the softmax cancels, so the offset costs nothing: the result is as close to fp32 as
    without the offset."""
    q, k, v, bias = _attn_case(1, 64, 2, 32, 64, 11)
    q = np.ascontiguousarray(q * np.float32(32 ** -0.5))
    offset = np.zeros_like(k)
    offset[:, :, :4, :] = 40.0                                     # 4 channels, every key
    shifted = np.ascontiguousarray(k + offset)
    fp32 = attention.attention(q, k, v, bias)
    np.testing.assert_allclose(attention.attention(q, shifted, v, bias), fp32, atol=2e-4)
    plain_err = np.abs(attention.attention(q, k, v, bias, precision="int8") - fp32).max()
    shifted_err = np.abs(attention.attention(q, shifted, v, bias, precision="int8") - fp32).max()
    assert shifted_err < 2 * plain_err + 1e-3, (shifted_err, plain_err)


@needs_int8
def test_int8_attention_significance_and_strided_k():
    """significance (token dropping) sums the weights as used (e / sum e); a k without a
    contiguous head_dim (gathered first) gives the same bits as the contiguous one."""
    q, k, v, bias = _attn_case(2, 37, 3, 8, 37, 5)
    ctx, sig = attention.attention(q, k, v, bias, significance=True, precision="int8")
    np.testing.assert_array_equal(ctx, attention.attention(q, k, v, bias, precision="int8"))
    _, p = _emulated(q, k, v, bias)
    want = ((bias == 0).astype(np.float64) @ p)[:, :, 0]
    np.testing.assert_allclose(sig, want, rtol=0, atol=0.01 * 37)
    k_strided = np.ascontiguousarray(k)  # [B, nh, d, S] C-order: head_dim stride S, keys contiguous
    assert k.strides[2] == 4 and k_strided.strides[2] != 4
    np.testing.assert_array_equal(attention.attention(q, k_strided, v, bias, precision="int8"), ctx)


def test_the_runtime_and_the_kernel_name_the_same_precisions():
    from workbench.runtime import kernels

    assert kernels.ATTENTION_PRECISIONS == attention.PRECISIONS


def test_int8_attention_falls_back_to_fp32_below_avx512_vnni():
    """With the ISA forced to AVX2 (or on a CPU without AVX-512 VNNI) precision="int8" runs the
    fp32 kernel: the same bits, and int8_runs() says so."""
    if "avx2" not in cpu.available_isas():
        pytest.skip("needs the avx2 path")
    q, k, v, bias = _attn_case(2, 20, 2, 16, 20, 9)
    assert not attention.int8_runs("avx2") and not attention.int8_runs("portable")
    if "avx512_vnni" in cpu.available_isas():
        assert attention.int8_runs("avx512_vnni")
    cpu.set_isa("avx2")
    try:
        assert not attention.int8_runs()
        np.testing.assert_array_equal(attention.attention(q, k, v, bias, precision="int8"),
                                      attention.attention(q, k, v, bias))
    finally:
        cpu.set_isa(None)


# ------------------------------------------------------------------------------ the engine
def test_engine_with_int8_attention(minilm, tmp_path):
    """compile_model(attention="int8"): on fp32 weights the logits move by the int8 roundings of
    attention alone; the compiled encoder and the per-op path give the same bits, describe()
    names what ran, save/load keeps the choice."""
    from workbench.runtime import compile_model

    model, enc = minilm
    ref = _torch_logits(model, enc)
    fp32_weights = _engine_logits(compile_model(model, quantize=False, attention="int8"), enc)
    err = np.abs(fp32_weights - ref).max()
    if attention.int8_runs():
        assert 1e-4 < err < 0.05 * np.abs(ref).max(), err
        assert np.mean(fp32_weights.argmax(1) == ref.argmax(1)) >= 0.9
    else:
        assert err < 1e-5, err
    eng = compile_model(model, attention="int8")
    compiled = _engine_logits(eng, enc)
    assert np.mean(compiled.argmax(1) == ref.argmax(1)) >= 0.9
    if attention.int8_runs():
        assert eng.describe()["attention"] == "int8 (AVX-512 VNNI)"
    else:
        assert eng.describe()["attention"].startswith("fp32 (int8 asked")
    assert eng.attention == "int8"
    _check_encoder_and_save(eng, compiled, enc, tmp_path)


def test_runtime_recipe_takes_int8_attention(minilm):
    from workbench.recipes.base import build_recipe

    model, _ = minilm
    recipe = build_recipe("workbench_runtime", {"attention": "int8", "kernel_choice": "dense"}, None, "stage 'rt'")
    module = recipe.apply(copy.deepcopy(model))
    assert module.engine.attention == "int8"
    # the pipeline's `engine` column says when int8 attention ran
    assert module.workbench_engine == ("workbench-int8-int8attn" if attention.int8_runs() else "workbench-int8")
