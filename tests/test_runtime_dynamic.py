"""workbench.runtime.dynamic: the engine really drops tokens and exits early, as the torch
reference (`workbench.models.dynamic.dynamic_forward`) says, and the work it skips is not done.

Work is counted two ways: `engine.last_trace` (tokens per layer per example, exit layers, rows)
and, independently, by wrapping every compiled Linear kernel of the engine and recording the
rows it was called with. Selection is compared with torch exactly on the fp32 engine; on int8
(attention probabilities differ slightly from torch fp32) the token counts are checked.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch

from workbench.models import dynamic as mdyn
from workbench.models.dynamic import DynamicSpec, dynamic_forward, kept_counts
from workbench.models.edits import record_edit
from workbench.runtime import FP32_ATOL, Engine, EngineModule, compile_model
from workbench.runtime import dynamic as D
from workbench.runtime import dynamic_forward as DF
from workbench.runtime.latency import LatencyTable

L = 4
RATIOS = [0.8, 0.6, 0.4, 0.4]
EXITS = [0, 1, 2]


pytestmark = pytest.mark.usefixtures("single_threaded_torch_and_blas")


@pytest.fixture
def model(tiny_bert, request):
    """tiny_bert with std-0.2 weights (peaked attention: no near-ties in significance), exit
    heads after layers 0-2 (pooling "cls", or the test's indirect parameter) and a dynamic spec,
    recorded as the training side saves them."""
    g = torch.Generator().manual_seed(0)
    record_edit(tiny_bert, "exit_heads", layers=EXITS, pooling=getattr(request, "param", "cls"))
    tiny_bert.eval()
    with torch.no_grad():
        for mod in tiny_bert.modules():
            if isinstance(mod, torch.nn.Linear):
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * 0.2)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.2)
    record_edit(tiny_bert, "dynamic_spec", spec=DynamicSpec(length_ratios=RATIOS, exit_layers=EXITS).to_dict())
    return tiny_bert


def _inputs(batch: int = 4, seq: int = 13, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 120, (batch, seq), generator=g)
    ids[:, 0] = 2  # [CLS]
    mask = torch.ones_like(ids)
    for b, n in ((1, 8), (2, 11)):  # padded rows of different lengths
        if b < batch:
            mask[b, n:], ids[b, n:] = 0, 0
    return ids.numpy(), mask.numpy()


def _torch(model, ids, mask, spec):
    with torch.no_grad():
        return dynamic_forward(model, torch.from_numpy(ids), torch.from_numpy(mask), spec=spec, return_trace=True)


def _count_linears(engine: Engine) -> dict[str, list[int]]:
    """Wrap every compiled Linear kernel: name -> rows of each call. Layers the compiled encoder
    runs (`Int8Encoder.run_layers`) are counted from its inputs: every Linear of a layer on all
    its rows, the [CLS]-only layer's attention output and FFN on one row per sequence; a head it
    runs (`Int8Encoder.head`) on its rows."""
    calls: dict[str, list[int]] = defaultdict(list)
    for name, fn in list(engine._linears.items()):
        def counted(x, _fn=fn, _name=name, **kw):
            calls[_name].append(int(x.shape[0]))
            return _fn(x, **kw)
        engine._linears[name] = counted
    encoder = engine._encoder
    if encoder is not None:
        class Spy:
            def run_layers(self, h, lengths, first, stop, isa, sig=None, cls_only=False, keep=None, chosen=None):
                cur = np.asarray(lengths)
                for i in range(first, stop):
                    cls_rows = cls_only and i == stop - 1
                    calls[f"layers.{i}.qkv"].append(int(cur.sum()))
                    for role in ("out", "ffn1", "ffn2"):
                        calls[f"layers.{i}.{role}"].append(len(lengths) if cls_rows else int(cur.sum()))
                    if keep is not None and i < stop - 1:  # the tokens kept for the next layer
                        cur = np.minimum(keep[i - first], cur)
                return encoder.run_layers(h, lengths, first, stop, isa, sig=sig, cls_only=cls_only,
                                          keep=keep, chosen=chosen)

            def head(self, name, cls_rows):  # the heads run compiled too
                calls[f"{name}.pre"].append(len(cls_rows))
                calls[f"{name}.cls"].append(len(cls_rows))
                return encoder.head(name, cls_rows)

            def __getattr__(self, name):
                return getattr(encoder, name)
        engine._encoder = Spy()
    return calls


@pytest.mark.parametrize("quantize", [False, True])
def test_full_lengths_and_no_exit_equal_the_static_engine(model, quantize):
    engine = compile_model(model, quantize=quantize)
    ids, mask = _inputs()
    static = engine(ids, mask, spec=None)
    full = DynamicSpec(length_ratios=[1.0] * L, exit_layers=EXITS)
    dyn = DF.forward(engine, ids, mask.astype(np.float32), None, full)  # the dynamic loop, forced
    np.testing.assert_array_equal(dyn, static)
    assert engine.last_trace.tokens.tolist() == [[int(n)] * L for n in mask.sum(1)]
    np.testing.assert_array_equal(engine(ids, mask, length_ratios=[1.0] * L, exit_threshold=None), static)
    if not quantize:  # and the static torch model
        with torch.no_grad():
            ref = type(model).forward(model, input_ids=torch.from_numpy(ids),
                                      attention_mask=torch.from_numpy(mask)).logits.numpy()
        np.testing.assert_allclose(dyn, ref, atol=FP32_ATOL, rtol=0)


def test_select_matches_torch_select_tokens_with_ties():
    g = torch.Generator().manual_seed(3)
    probs = torch.randint(0, 3, (5, 2, 9, 9), generator=g).float() / 4  # many exact ties
    mask = torch.ones(5, 9, dtype=torch.bool)
    mask[1, 6:] = False
    mask[3, 4:] = False
    k = torch.tensor([5, 3, 1, 4, 9])
    idx_t, valid_t = mdyn.select_tokens(probs, mask, k)
    sig = mdyn.token_significance(probs, mask).numpy()
    idx, valid = D.select(sig, mask.numpy(), k.numpy())
    np.testing.assert_array_equal(valid, valid_t.numpy())
    np.testing.assert_array_equal(np.where(valid, idx, -1), np.where(valid_t.numpy(), idx_t.numpy(), -1))


def test_kept_positions_equal_torch_on_fp32(model, monkeypatch):
    """Same tokens kept after every layer as the torch reference, same logits (fp32 engine)."""
    picks = []
    real = mdyn.select_tokens

    def spy(probs, mask, k):
        idx, valid = real(probs, mask, k)
        picks.append((idx.numpy(), valid.numpy()))
        return idx, valid

    monkeypatch.setattr(mdyn, "select_tokens", spy)
    engine = compile_model(model, quantize=False)
    ids, mask = _inputs()
    spec = DynamicSpec(length_ratios=RATIOS, exit_layers=EXITS)
    ref, trace = _torch(model, ids, mask, spec)
    out = engine(ids, mask)  # the compiled spec
    assert len(picks) == L - 1
    pos = np.where(mask.astype(bool), np.arange(ids.shape[1]), -1)
    torch_positions = [pos]
    for idx, valid in picks:
        pos = np.where(valid, np.take_along_axis(np.where(pos < 0, 0, pos), idx, 1), -1)
        torch_positions.append(pos)
    got = engine.last_trace.positions
    assert len(got) == L
    for i in range(L):
        np.testing.assert_array_equal(got[i], torch_positions[i], err_msg=f"layer {i}")
    np.testing.assert_array_equal(engine.last_trace.tokens, trace.tokens.numpy())
    np.testing.assert_allclose(out, ref.numpy(), atol=FP32_ATOL, rtol=0)
    assert np.abs(out - engine(ids, mask, spec=None)).max() > 1e-3  # dropping changed something


def test_length_config_processes_exactly_k_tokens_per_layer(model):
    """int8: each layer's GEMMs run on exactly the configured token count (batch 1), the last
    layer's attention output / FFN on the [CLS] row only; padded batches as documented."""
    engine = compile_model(model, quantize=True)
    ids, mask = _inputs()
    calls = _count_linears(engine)
    for b in range(len(ids)):
        n = int(mask[b].sum())
        calls.clear()
        engine(ids[b:b + 1, :n], mask[b:b + 1, :n])
        k = kept_counts(RATIOS, n)
        assert k[-1] < n  # the config drops tokens
        assert engine.last_trace.tokens.tolist() == [k]
        assert [calls[f"layers.{i}.qkv"] for i in range(L)] == [[t] for t in k]
        assert [calls[f"layers.{i}.ffn1"] for i in range(L)] == [[t] for t in k[:-1]] + [[1]]
        assert calls["head.pre"] == [1] and not any(c.startswith("exit.") for c in calls)
    # batch > 1 with padding: each example keeps its own count, and the GEMMs run on exactly
    # the kept tokens (packed), or on B x (largest count) when the batch runs padded
    want = np.array([kept_counts(RATIOS, int(n)) for n in mask.sum(1)])
    _, trace = _torch(model, ids, mask, DynamicSpec(length_ratios=RATIOS, exit_layers=EXITS))
    np.testing.assert_array_equal(trace.tokens.numpy(), want)
    for packed, rows in ((True, want.sum(0).tolist()), (False, [len(ids) * int(want[:, i].max()) for i in range(L)])):
        engine.pack_sequences = packed
        calls.clear()
        engine(ids, mask)
        np.testing.assert_array_equal(engine.last_trace.tokens, want)
        assert [calls[f"layers.{i}.qkv"] for i in range(L)] == [[r] for r in rows], packed
        assert engine.last_trace.rows == rows


@pytest.mark.parametrize("model", ["cls", "mean"], indirect=True)
def test_exit_at_k_runs_no_layer_above_k(model):
    # plain int8 weights on every machine, so the tolerance below means the same on every CI kind
    # (pair-bounded ones, auto on AVX2: 0.053 of the largest logit here on the mean-pooled
    # random model, against 0.021; tests/test_pair_bounded.py has their own checks)
    engine = compile_model(model, quantize=True, int8_weights="per_channel")
    assert engine.meta["exit_pooling"] == {str(i): model.exit_heads["0"].pooling for i in EXITS}
    ids, mask = _inputs()
    calls = _count_linears(engine)
    out = engine(ids, mask, exit_at=1)
    assert not any(name.startswith(("layers.2.", "layers.3.", "head.", "exit.0", "exit.2")) for name in calls)
    # a [CLS] exit runs its layer's FFN for the [CLS] rows only; a mean-pooled one for every row
    ffn_rows = len(ids) if model.exit_heads["1"].pooling == "cls" else engine.last_trace.rows[1]
    assert calls["layers.1.qkv"] == [engine.last_trace.rows[1]] and calls["layers.1.ffn1"] == [ffn_rows]
    assert calls["exit.1.pre"] == [len(ids)]
    assert engine.last_trace.exit_layer.tolist() == [1] * len(ids)
    assert not engine.last_trace.tokens[:, 2:].any()
    ref, trace = _torch(model, ids, mask, DynamicSpec(length_ratios=RATIOS, exit_layers=EXITS, exit_at=1))
    np.testing.assert_array_equal(engine.last_trace.tokens, trace.tokens.numpy())
    assert np.abs(out - ref.numpy()).max() <= 0.05 * np.abs(ref.numpy()).max()


@pytest.mark.parametrize("model", ["cls", "mean"], indirect=True)
def test_threshold_exits_per_example_and_batch_matches_batch_1(model):
    """Confidence exits on the fp32 engine: the same exit layers as torch, exited examples leave
    the batch (no row of theirs in any later GEMM), and each example's result is the one it gets
    alone (batch 1)."""
    engine = compile_model(model, quantize=False)
    ids, mask = _inputs(batch=6, seed=4)
    conf = np.exp(engine(ids, mask, exit_at=0)).max(1) / np.exp(engine(ids, mask, exit_at=0)).sum(1)
    thr = float(np.median(conf))  # about half the examples leave after layer 0
    spec = DynamicSpec(length_ratios=RATIOS, exit_layers=EXITS, exit_criterion="confidence", exit_threshold=thr)
    ref, trace = _torch(model, ids, mask, spec)
    calls = _count_linears(engine)
    out = engine(ids, mask, exit_criterion="confidence", exit_threshold=thr)
    tr = engine.last_trace
    exit_layer = tr.exit_layer
    assert 0 < (exit_layer == 0).sum() < len(ids)
    np.testing.assert_array_equal(exit_layer, trace.exit_layer.numpy())
    np.testing.assert_array_equal(tr.tokens, trace.tokens.numpy())
    np.testing.assert_allclose(out, ref.numpy(), atol=FP32_ATOL, rtol=0)
    for b, k in enumerate(exit_layer):
        assert tr.tokens[b, :k + 1].all() and not tr.tokens[b, k + 1:].any()
    for i in range(len(tr.rows)):  # only the tokens of the examples still in the batch were computed
        assert calls[f"layers.{i}.qkv"] == [int(tr.tokens[exit_layer >= i, i].sum())] == [tr.rows[i]]
    for b in range(len(ids)):  # batch 1, no padding: the same exit and (float-close) logits
        n = int(mask[b].sum())
        one = engine(ids[b:b + 1, :n], mask[b:b + 1, :n], exit_criterion="confidence", exit_threshold=thr)
        assert engine.last_trace.exit_layer.tolist() == [exit_layer[b]]
        np.testing.assert_allclose(one[0], out[b], atol=1e-5, rtol=0)


@pytest.mark.parametrize("model", ["mean"], indirect=True)
def test_saved_engine_keeps_spec_and_exit_heads(model, tmp_path):
    engine = compile_model(model, quantize=True)
    assert engine.meta["dynamic"]["length_ratios"] == RATIOS
    assert {f"exit.{i}.{p}" for i in EXITS for p in ("pre", "cls")} <= set(engine.meta["linears"])
    ids, mask = _inputs()
    loaded = Engine.load(engine.save(tmp_path / "e"))
    np.testing.assert_array_equal(loaded(ids, mask, exit_at=2), engine(ids, mask, exit_at=2))
    np.testing.assert_array_equal(loaded.last_trace.tokens, engine.last_trace.tokens)
    assert loaded.meta["dynamic"] == engine.meta["dynamic"]
    assert loaded.meta["exit_pooling"] == {str(i): "mean" for i in EXITS}
    np.testing.assert_array_equal(loaded(ids, mask, exit_at=0), engine(ids, mask, exit_at=0))


def test_runtime_recipe_and_module_apply_the_spec(model):
    from workbench.recipes.base import RECIPES

    cls = RECIPES["workbench_runtime"]
    assert cls.Config().dynamic is True
    ids, mask = _inputs()
    t = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
    module = cls(cls.Config(quantize=False), ctx=None).apply(model)
    assert isinstance(module, EngineModule) and module.workbench_engine == "workbench-fp32-dynamic"
    ref, _ = _torch(model, ids, mask, None)  # the model's own spec
    np.testing.assert_allclose(module(**t).logits.numpy(), ref.numpy(), atol=FP32_ATOL, rtol=0)
    assert (module.engine.last_trace.tokens[:, -1] < mask.sum(1)).all()
    module(**t, length_ratios=None)  # overrides pass through
    assert module.engine.last_trace.tokens.tolist() == [[int(n)] * L for n in mask.sum(1)]
    static = cls(cls.Config(quantize=False, dynamic=False), ctx=None).apply(model)
    assert static.workbench_engine == "workbench-fp32"
    with torch.no_grad():
        plain = type(model).forward(model, **t).logits.numpy()
    np.testing.assert_allclose(static(**t).logits.numpy(), plain, atol=FP32_ATOL, rtol=0)


def test_bad_overrides_fail_clearly(model, tiny_bert):
    from workbench.config import ConfigError

    engine = compile_model(model, quantize=True)
    ids, mask = _inputs()
    with pytest.raises(TypeError, match="unknown keyword"):
        engine(ids, mask, ratios=[0.5] * L)
    with pytest.raises(ConfigError, match="exit_at=3|exit_at"):
        engine(ids, mask, exit_at=5)
    with pytest.raises(ConfigError, match="length_ratios"):
        engine(ids, mask, length_ratios=[0.5, 0.9, 0.4, 0.4])
    from transformers import BertConfig, BertForSequenceClassification

    plain = BertForSequenceClassification(BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=4,
                                                     num_attention_heads=4, intermediate_size=64,
                                                     max_position_embeddings=64)).eval()
    static = compile_model(plain, quantize=True)   # no exit heads (`model` added them to tiny_bert)
    with pytest.raises(ValueError, match="exit_threshold=0.1 but the engine has no exit heads"):
        static(ids, mask, exit_threshold=0.1)


def test_latency_table_prices_specs_by_their_work():
    table = LatencyTable(seq_len=10, batch=1, token_counts=[1, 5, 10], layer_ms=[[1, 3, 6]] * L,
                         cls_ms=[[0.5, 1, 2]] * L, embed_ms=[0.1, 0.2, 0.4], head_ms=0.05)
    assert table.layer_cost(0, 7.5) == pytest.approx(4.5)
    assert table.cost(None) == pytest.approx(0.4 + 0.05 + 3 * 6 + 2)
    spec = DynamicSpec(length_ratios=[0.5, 0.5, 0.1, 0.1], exit_layers=[1])
    k = kept_counts(spec.length_ratios, 10)  # [10, 5, 5, 1]
    assert table.cost(spec) == pytest.approx(0.45 + 6 + 3 + 3 + table.layer_cost(3, k[3], cls_only=True))
    assert table.cost(spec.replace(exit_at=1)) == pytest.approx(0.45 + 6 + 1)  # leaving layer: [CLS] only
    thr = spec.replace(exit_threshold=0.3)  # a threshold exit after layer 1: full layer, head passed
    assert table.cost(thr, exit_layer=1) == pytest.approx(0.45 + 6 + 3)
    assert table.cost(thr) == pytest.approx(table.cost(spec) + 0.05)
    assert table.cost(None, n=5) < table.cost(None)


def test_latency_table_measures_the_engine(model, tmp_path):
    engine = compile_model(model, quantize=True)
    table = LatencyTable.measure(engine, seq_len=12, repeats=1)
    assert table.token_counts == [1, 3, 6, 9, 12] and len(table.layer_ms) == L
    for rows in (table.layer_ms, table.cls_ms, [table.embed_ms]):
        for r in rows:
            assert all(v > 0 for v in r) and r == sorted(r)
    assert LatencyTable.load(table.save(tmp_path / "lat.json")) == table
    assert table.cost(DynamicSpec(length_ratios=RATIOS)) <= table.cost(None)


def test_the_default_latency_table_stops_at_the_models_position_table(model):
    # tiny_bert holds 64 tokens: length_search's default counts (to 128) raised "seq_len must be
    # in [1, 64], got 128" after the earlier stages trained
    from workbench.dynamic.latency import DEFAULT_TOKEN_COUNTS, runtime_cost

    assert max(DEFAULT_TOKEN_COUNTS) > 64
    assert runtime_cost(model, repeats=1).table.token_counts == [1, 8, 16, 32, 64]


def test_bench_engine_runs_a_dynamic_stage_at_its_saved_spec(model, tmp_path):
    """`workbench bench --run` compiles each saved stage with `compile_model` (wb-int8): a stage
    with `model.dynamic` is benched dynamically, and its notes say so."""
    from workbench.bench.engines import Workbench

    eng = Workbench()
    eng.setup(model, 1, tmp_path, "dyn")
    assert '"length_ratios":[0.8 0.6 0.4 0.4]' in eng.notes
    ids, mask = _inputs()
    eng.run((ids, mask))
    assert (eng.engine.last_trace.tokens[:, -1] < mask.sum(1)).all()


def test_latency_cost_of_a_threshold_exit_before_exit_at():
    table = LatencyTable(seq_len=10, batch=1, token_counts=[1, 10], layer_ms=[[1, 10]] * L,
                         cls_ms=[[1, 2]] * L, embed_ms=[0.0, 0.0], head_ms=0.0)
    spec = DynamicSpec(exit_layers=[0, 2], exit_at=2, exit_threshold=0.2)
    assert table.cost(spec, exit_layer=0) == pytest.approx(10)  # left at the threshold exit after layer 0
    assert table.cost(spec) == table.cost(spec, exit_layer=2) == pytest.approx(10 + 10 + 2)
