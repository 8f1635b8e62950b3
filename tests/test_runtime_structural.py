"""workbench.runtime on structurally pruned models (`workbench.prune.structure.shrink`): uneven
head counts, a layer with no attention (HeadlessAttention), a layer with no FFN, uneven (ragged)
FFN widths, dropped layers -- in fp32, int8 and sparse modes, against torch.

Tolerances as in tests/test_runtime.py: fp32 within FP32_ATOL of torch; int8 within a small
fraction of the largest logit, with the same argmax wherever torch's margin is clear of the error.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from workbench.models.arch import architecture
from workbench.prune.structure import shrink, structure
from workbench.runtime import FP32_ATOL, Engine, EngineModule, compile_model

# (mode name, quantize, sparse_threshold): > 1 never sparse, 0 every Linear on the sparse kernels
MODES = [("fp32", False, 2.0), ("fp32-sparse", False, 0.0), ("int8", True, 2.0), ("int8-sparse", True, 0.0)]

# per layer: heads kept (of 4), FFN neurons kept (of 64)
LAYOUTS = {
    # uneven heads, no attention in layer 1, no FFN in layer 2, uneven and ragged FFN widths
    "mixed": ([3, 0, 1, 2], [40, 50, 0, 10]),
    # the last layer (evaluated for the [CLS] row only) with neither attention nor FFN
    "last-removed": ([4, 2, 3, 0], [64, 7, 33, 0]),
}


pytestmark = pytest.mark.usefixtures("single_threaded_torch_and_blas")


def _spread(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Redraw every Linear with std 0.2 (seeded): HF's std-0.02 init gives near-uniform attention
    and logits ~0.01, where a wrong block would hardly show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.Linear):
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * 0.2)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.2)
    return model


def _masks(model: torch.nn.Module, heads: list[int], neurons: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    st = structure(model)
    hm, nm = torch.zeros(st.num_layers, st.max_heads), torch.zeros(st.num_layers, st.max_neurons)
    g = torch.Generator().manual_seed(1)
    for i, (h, f) in enumerate(zip(heads, neurons)):  # which units survive: seeded, not the first ones
        hm[i, torch.randperm(st.heads[i], generator=g)[:h]] = 1.0
        nm[i, torch.randperm(st.neurons[i], generator=g)[:f]] = 1.0
    return hm, nm


def _inputs(seed: int = 1, vocab: int = 120) -> tuple[np.ndarray, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # a padded row: exercises the attention mask
    ids[1, 8:] = 0
    return ids.numpy(), mask.numpy()


def _torch(model: torch.nn.Module, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()


def _check(engine: Engine, model: torch.nn.Module, quantize: bool) -> float:
    ids, mask = _inputs()
    out, ref = engine(ids, mask), _torch(model, ids, mask)
    err = float(np.abs(out - ref).max())
    if not quantize:
        np.testing.assert_allclose(out, ref, atol=FP32_ATOL, rtol=0)
        return err
    assert err <= 0.05 * np.abs(ref).max(), (err, np.abs(ref).max())
    clear = np.abs(ref[:, 0] - ref[:, 1]) > 2 * err
    assert clear.sum() >= len(ref) // 2
    assert np.array_equal(out[clear].argmax(1), ref[clear].argmax(1))
    return err


@pytest.fixture
def shrunk(tiny_bert, request):
    heads, neurons = LAYOUTS[request.param]
    model = _spread(tiny_bert)
    info = shrink(model, *_masks(model, heads, neurons))
    assert info["heads"] == heads and info["neurons"] == neurons
    return model, heads, neurons


@pytest.mark.parametrize("shrunk", list(LAYOUTS), indirect=True)
@pytest.mark.parametrize("mode,quantize,threshold", MODES, ids=[m[0] for m in MODES])
def test_shrunk_model_matches_torch(shrunk, mode, quantize, threshold):
    model, heads, neurons = shrunk
    engine = compile_model(model, quantize=quantize, sparse_threshold=threshold)
    assert engine.layer_heads == heads and engine.layer_ffn == neurons
    kinds = {n: lm["kind"] for n, lm in engine.meta["linears"].items()}
    for i, (h, f) in enumerate(zip(heads, neurons)):
        assert (kinds[f"layers.{i}.qkv"] == "empty") == (h == 0)
        assert (kinds[f"layers.{i}.out"] == "empty") == (h == 0)
        assert (kinds[f"layers.{i}.ffn1"] == "empty") == (f == 0)
        assert (kinds[f"layers.{i}.ffn2"] == "empty") == (f == 0)
    want = ("int8_" if quantize else "fp32_") + ("sparse" if threshold == 0 else "dense")
    assert {k for k in kinds.values() if k != "empty"} == {want}  # ragged K runs sparse too
    _check(engine, model, quantize)


@pytest.mark.parametrize("shrunk", ["mixed"], indirect=True)
def test_shrunk_engine_saves_reloads_and_reports(shrunk, tmp_path):
    model, heads, neurons = shrunk
    engine = compile_model(model, quantize=True, sparse_threshold=0.0)
    ids, mask = _inputs()
    engine.save(tmp_path / "e")
    again = Engine.load(tmp_path / "e")
    assert again.layer_heads == heads and again.layer_ffn == neurons
    np.testing.assert_array_equal(again(ids, mask), engine(ids, mask))
    assert engine.impls["layers.1.qkv"].startswith("none") and "layers.1.qkv" not in engine._linears
    sp = EngineModule(engine).workbench_layer_sparsity()
    arch = architecture(model)
    assert sp[arch.module_name(1, "query")] == 0.0 and sp[arch.module_name(2, "ffn_in")] == 0.0
    assert EngineModule(engine).workbench_stats()["params"] == engine.num_parameters() > 0


@pytest.mark.parametrize("shrunk", ["mixed"], indirect=True)
def test_saved_shrunk_stage_reloads_and_compiles(shrunk, tmp_path):
    """The bench's path: save_pretrained -> load_edited_model (edits replayed) -> compile."""
    from workbench.models.edits import load_edited_model

    model, heads, neurons = shrunk
    model.save_pretrained(tmp_path / "model")
    loaded = load_edited_model(tmp_path / "model")
    engine = compile_model(loaded, quantize=False)
    assert engine.layer_heads == heads and engine.layer_ffn == neurons
    _check(engine, model, quantize=False)


def test_shrunk_and_block_pruned_ragged_layers_run_sparse(tiny_bert):
    """Structural + 1x4 magnitude pruning: layers of arbitrary width (K not a multiple of 4) use
    the block-sparse kernels (they zero-pad K) and still match."""
    from workbench.recipes.prune.magnitude import magnitude_prune_

    model = _spread(tiny_bert)
    shrink(model, *_masks(model, *LAYOUTS["mixed"]))
    magnitude_prune_(model, 0.75, block=(1, 4))
    for quantize in (False, True):
        engine = compile_model(model, quantize=quantize, sparse_threshold=0.5)
        lm = engine.meta["linears"]
        assert lm["layers.1.ffn2"]["K"] == 50 and lm["layers.1.ffn2"]["kind"].endswith("_sparse")
        assert lm["layers.3.ffn2"]["K"] == 10 and lm["layers.3.ffn2"]["kind"].endswith("_sparse")
        _check(engine, model, quantize)


@pytest.mark.parametrize("mode,quantize,threshold", MODES, ids=[m[0] for m in MODES])
def test_dropped_layers(tiny_bert, mode, quantize, threshold):
    """Fewer layers than the config says (a layer deleted from the module list; no structural
    edit produces this, a student with fewer layers has a matching config): the engine runs the
    layers the model holds."""
    model = _spread(tiny_bert)
    shrink(model, *_masks(model, *LAYOUTS["mixed"]))
    del architecture(model).layers[2]  # the layer without FFN goes
    assert model.config.num_hidden_layers == 4
    engine = compile_model(model, quantize=quantize, sparse_threshold=threshold)
    assert engine.num_layers == 3 and engine.layer_heads == [3, 0, 2] and engine.layer_ffn == [40, 50, 10]
    _check(engine, model, quantize)


@pytest.mark.parametrize("family", ["distilbert", "roberta"])
def test_other_families_with_removed_blocks(family):
    """DistilBERT keeps its attention output projection inside the attention module (applied by
    HeadlessAttention); RoBERTa offsets positions. Both with a removed attention and FFN."""
    from transformers import (DistilBertConfig, DistilBertForSequenceClassification, RobertaConfig,
                              RobertaForSequenceClassification)

    torch.manual_seed(0)
    if family == "distilbert":
        model = DistilBertForSequenceClassification(DistilBertConfig(
            vocab_size=120, dim=32, n_layers=3, n_heads=4, hidden_dim=64, max_position_embeddings=64))
    else:
        model = RobertaForSequenceClassification(RobertaConfig(
            vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=70, pad_token_id=1))
    model = _spread(model.eval())
    shrink(model, *_masks(model, [0, 2, 4], [17, 0, 64]))
    for _, quantize, threshold in MODES:
        engine = compile_model(model, quantize=quantize, sparse_threshold=threshold)
        assert engine.layer_heads == [0, 2, 4] and engine.layer_ffn == [17, 0, 64]
        _check(engine, model, quantize)


@pytest.mark.parametrize("shrunk", list(LAYOUTS), indirect=True)
def test_torch_dynamic_int8_keeps_removed_blocks_exact(shrunk):
    """The `dynamic_int8` recipe's quantizer on a model with removed blocks: torch's quantized
    Linear with 0 inputs drops its bias, so zero-width Linears must stay fp32."""
    from workbench.recipes.quantize.dynamic import quantize_dynamic_int8, zero_width_linears

    model, _, _ = shrunk
    assert zero_width_linears(model)
    q = quantize_dynamic_int8(model)
    ids, mask = _inputs()
    out, ref = _torch(q, ids, mask), _torch(model, ids, mask)
    assert float(np.abs(out - ref).max()) <= 0.05 * np.abs(ref).max()
