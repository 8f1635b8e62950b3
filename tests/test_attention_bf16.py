"""bf16 attention (workbench_ext.attention precision="bf16", wb_attn_bf16.h): q, k, v and the
probabilities rounded to bf16, products summed in fp32, on CPUs with AVX512-BF16; elsewhere
the fp32 kernels run and the engine says so."""
import copy

import numpy as np
import pytest

cpu = pytest.importorskip("workbench_ext.cpu", reason="workbench_ext not built (python setup.py build_ext --inplace)")
from workbench_ext import attention  # noqa: E402

from test_attention import _attn_case  # noqa: E402
from test_kernels import run_emulation  # noqa: E402
from test_runtime import _check_int8, _engine_logits, _torch_logits  # noqa: E402  (the minilm fixture: conftest.py)

pytestmark = pytest.mark.usefixtures("single_threaded_torch_and_blas")

needs_bf16 = pytest.mark.skipif(not attention.runs_bf16(),
                                reason="CPU lacks AVX512-BF16: bf16 attention runs the fp32 kernels here")


def _bf16(x):
    """Round to bf16 (nearest, ties to even) and back to float64: what VCVTNE2PS2BF16 does for
    the normal numbers these tests use."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16
    return u.astype(np.uint32).view(np.float32).astype(np.float64)


def _emulated(q, k, v, bias):
    """The bf16 kernel's arithmetic in float64: scores from bf16 q and k, weights
    e = bf16(exp(score - max)), ctx = (e . bf16 v) / sum(e); also the probabilities."""
    s = _bf16(q) @ _bf16(k) + bias.astype(np.float64)
    e = _bf16(np.exp(s - s.max(-1, keepdims=True)))
    ctx = (e @ _bf16(v)) / e.sum(-1, keepdims=True)
    return ctx.transpose(0, 2, 1, 3), e / e.sum(-1, keepdims=True)


@needs_bf16
@pytest.mark.parametrize("B,S,nh,d,R", [(1, 1, 1, 1, 1), (2, 37, 3, 5, 37), (2, 128, 12, 64, 128),
                                        (3, 70, 4, 33, 1), (1, 65, 2, 96, 65), (1, 129, 1, 80, 129)])
@pytest.mark.parametrize("threads", [1, 2])
def test_bf16_attention_is_the_bf16_arithmetic(B, S, nh, d, R, threads):
    """Against float64 on bf16-rounded operands: only the fp32 sums and a probability rounded
    the other way at a bf16 tie-break boundary (one key's weight off by 2^-8 of itself) differ;
    a wrong pair layout, padding or head offset is off by the size of the outputs."""
    q, k, v, bias = _attn_case(B, S, nh, d, R, 3 * S + d)
    q = np.ascontiguousarray(q * np.float32(d ** -0.5))
    want, _ = _emulated(q, k, v, bias)
    out = attention.attention(q, k, v, bias, num_threads=threads, precision="bf16")
    assert out.shape == (B, R, nh, d) and out.flags.c_contiguous
    np.testing.assert_allclose(out, want, rtol=0, atol=2e-3)
    fp32 = attention.attention(q, k, v, bias, num_threads=threads)
    if S > 1:  # it did round: not the fp32 kernel's result
        assert np.abs(out - fp32).max() > 1e-5
    assert np.abs(out - fp32).max() < 0.03  # ~2^-9 relative per operand


@needs_bf16
def test_bf16_attention_significance_and_strided_k():
    """significance (token dropping) sums the fp32 probabilities; a k without a contiguous
    head_dim (the scalar packing) gives the same bits as the contiguous one."""
    q, k, v, bias = _attn_case(2, 37, 3, 8, 37, 5)
    ctx, sig = attention.attention(q, k, v, bias, significance=True, precision="bf16")
    np.testing.assert_array_equal(ctx, attention.attention(q, k, v, bias, precision="bf16"))
    _, p = _emulated(q, k, v, bias)
    want = ((bias == 0).astype(np.float64) @ p)[:, :, 0]
    np.testing.assert_allclose(sig, want, rtol=0, atol=1e-3 * 37)
    k_strided = np.ascontiguousarray(k)  # [B, nh, d, S] C-order: head_dim stride S, keys contiguous
    assert k.strides[2] == 4 and k_strided.strides[2] != 4
    np.testing.assert_array_equal(attention.attention(q, k_strided, v, bias, precision="bf16"), ctx)


def test_bf16_attention_falls_back_to_fp32_below_avx512():
    """With the ISA forced to AVX2 (or on a CPU without AVX512-BF16) precision="bf16" runs the
    fp32 kernel: the same bits, and runs_bf16() says so."""
    if "avx2" not in cpu.available_isas():
        pytest.skip("needs the avx2 path")
    q, k, v, bias = _attn_case(2, 20, 2, 16, 20, 9)
    assert attention.bf16_path("avx2") is None and attention.bf16_path("portable") is None
    if "avx512_vnni" in cpu.available_isas() and attention.runs_bf16():  # AMX CPUs: the ISA picks the path
        assert attention.bf16_path("avx512_vnni") == "avx512_bf16"
    cpu.set_isa("avx2")
    try:
        assert not attention.runs_bf16()
        np.testing.assert_array_equal(attention.attention(q, k, v, bias, precision="bf16"),
                                      attention.attention(q, k, v, bias))
    finally:
        cpu.set_isa(None)


def test_amx_path_by_emulation(tmp_path):
    """The AMX path (16-row blocks on TDPBF16PS tiles, operands zero-padded to whole tiles)
    with the tile intrinsics emulated (testing/emulate_attn_amx.c) matches the AVX512-BF16 path
    on odd shapes, padding, [CLS]-only rows and significance; the tile products alone are
    checked on any x86 CPU by emulate_isa.c."""
    out = run_emulation(tmp_path, "emulate_attn_amx.c")
    if out == "SKIP":
        pytest.skip("the AMX path's softmax and conversions need AVX512-BF16 to run here")
    assert out == "OK"


def test_bad_precision_is_a_clear_error():
    q, k, v, bias = _attn_case(1, 4, 1, 4, 4, 1)
    with pytest.raises(ValueError, match=r"attention precision must be one of \('fp32', 'bf16', 'int8'\), got 'fp16'"):
        attention.attention(q, k, v, bias, precision="fp16")


# ------------------------------------------------------------------------------ the engine
def test_engine_with_bf16_attention(minilm, tmp_path):
    """compile_model(attention="bf16"): on fp32 weights the logits move by the bf16 roundings
    alone (measured 0.0028 on these sentences, 0.3 % of the largest logit); on int8 weights they
    pass the int8 engine's own acceptance (a different draw of its rounding noise: the next
    layer's per-token int8 rounding flips where the attention output moved). The compiled
    encoder and the per-op path give the same bits, describe() names what ran, save/load keeps
    the choice."""
    from workbench.runtime import compile_model

    model, enc = minilm
    with pytest.raises(ValueError, match=r"attention must be one of \('fp32', 'bf16', 'int8'\), got 'int4'"):
        compile_model(model, attention="int4")
    ref = _torch_logits(model, enc)
    fp32_weights = _engine_logits(compile_model(model, quantize=False, attention="bf16"), enc)
    err = np.abs(fp32_weights - ref).max()
    if attention.runs_bf16():
        assert 1e-4 < err < 0.01, err
    else:
        assert err < 1e-5, err
    assert compile_model(model).describe()["attention"] == "fp32"
    eng = compile_model(model, attention="bf16")
    compiled = _engine_logits(eng, enc)
    _check_int8(compiled, ref, model, enc)
    if attention.runs_bf16():
        want = {"amx": "bf16 (AMX)", "avx512_bf16": "bf16 (AVX512-BF16)"}[attention.bf16_path()]
        assert eng.describe()["attention"] == want
    else:
        assert eng.describe()["attention"].startswith("fp32 (bf16 asked")
    _check_encoder_and_save(eng, compiled, enc, tmp_path)


def _check_encoder_and_save(eng, compiled, enc, tmp_path):
    """The engine's compiled encoder (`compiled`: its logits) and its per-op path give the same
    bits, and a saved engine loads with the same attention and the same bits."""
    from workbench.runtime import Engine

    encoder, eng._encoder = eng._encoder, None
    assert encoder is not None
    np.testing.assert_array_equal(_engine_logits(eng, enc), compiled)
    eng._encoder = encoder
    eng.save(tmp_path / "e")
    loaded = Engine.load(tmp_path / "e")
    assert loaded.attention == eng.attention
    np.testing.assert_array_equal(_engine_logits(loaded, enc), compiled)


def test_runtime_recipe_takes_the_attention_key(minilm):
    from workbench.config import ConfigError
    from workbench.recipes.base import build_recipe

    model, _ = minilm
    recipe = build_recipe("workbench_runtime", {"attention": "bf16", "kernel_choice": "dense"}, None, "stage 'rt'")
    module = recipe.apply(copy.deepcopy(model))
    assert module.engine.attention == "bf16"
    # the pipeline's `engine` column says when bf16 attention ran
    assert module.workbench_engine == ("workbench-int8-bf16attn" if attention.runs_bf16() else "workbench-int8")
    with pytest.raises(ConfigError, match="attention"):
        build_recipe("workbench_runtime", {"attention": "fp8"}, None, "stage 'rt'")
