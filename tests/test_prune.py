"""Magnitude pruning: exact sparsity, block patterns, the cubic schedule, masks through training."""
from __future__ import annotations

import pytest
import torch

from workbench.recipes.base import RecipeContext, TrainState
from workbench.recipes.prune.magnitude import (
    MagnitudePrune, MagnitudePruneConfig, block_mask, cubic_sparsity, magnitude_prune_, prunable_linears,
)


def blocks_all_zero_or_dense(w: torch.Tensor, r: int, c: int) -> bool:
    n, k = w.shape
    blocks = w[: n // r * r, : k // c * c].reshape(n // r, r, k // c, c).permute(0, 2, 1, 3).reshape(-1, r * c)
    nz = (blocks != 0).sum(1)
    return bool(((nz == 0) | (nz == r * c)).all())


@pytest.mark.parametrize("block", [(1, 1), (1, 4), (4, 1), (2, 2)])
@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9])
def test_exact_sparsity_and_block_pattern(tiny_bert, block, sparsity):
    masks = magnitude_prune_(tiny_bert, sparsity, block)
    layers = prunable_linears(tiny_bert)
    assert set(masks) == set(layers) and len(layers) == 4 * 6  # q,k,v,o,ffn-in,ffn-out per layer
    assert "classifier" not in " ".join(layers) and "pooler" not in " ".join(layers)
    for name, lin in layers.items():
        w = lin.weight
        n_blocks = (w.shape[0] // block[0]) * (w.shape[1] // block[1])
        zero_blocks = int(round(sparsity * n_blocks))
        assert int((w == 0).sum()) == zero_blocks * block[0] * block[1], name
        assert blocks_all_zero_or_dense(w, *block)


def test_smallest_blocks_are_removed():
    w = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1],
                      [5.0, -5.0, 5.0, 5.0, 2.0, 2.0, -2.0, 2.0]])
    m = block_mask(w, 0.5, (1, 4))  # block L1 norms 4.0, 0.4 / 20.0, 8.0: ranked across the layer
    assert m.tolist() == [[0, 0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]]
    m = block_mask(w, 0.25, (1, 4))
    assert m.tolist() == [[1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]]
    # ragged K (not a multiple of 4) pads with zeros and keeps the shape
    m = block_mask(torch.randn(3, 7), 0.5, (1, 4))
    assert m.shape == (3, 7)


def test_cubic_schedule_matches_zhu_and_gupta():
    s = [cubic_sparsity(t, 100, 0.0, 0.9, 0.1, 0.6) for t in (0, 10, 35, 60, 100)]
    assert s[0] == 0.0 and s[1] == 0.0
    assert s[2] == pytest.approx(0.9 + (0.0 - 0.9) * (1 - 25 / 50) ** 3)
    assert s[3] == pytest.approx(0.9) and s[4] == pytest.approx(0.9)
    values = [cubic_sparsity(t, 100, 0.0, 0.9, 0.0, 1.0) for t in range(101)]
    assert all(a <= b for a, b in zip(values, values[1:]))  # monotone
    assert values[10] - values[0] > values[100] - values[90]  # prunes fast early, slowly late


def test_masks_stay_applied_after_optimizer_steps(tiny_bert):
    ctx = RecipeContext(task=None, tokenizer=None, run_dir=None, stage="p")
    recipe = MagnitudePrune(MagnitudePruneConfig(sparsity=0.9, schedule="cubic", start=0.0, end=0.5,
                                                 frequency=2), ctx)
    model = recipe.apply(tiny_bert)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    state = TrainState(model, opt, 0, 20, 0, 20)
    recipe.on_train_begin(state)
    ids = torch.randint(0, 120, (4, 16))
    seen = []
    for step in range(1, 21):
        model.train()
        loss = torch.nn.functional.cross_entropy(model(input_ids=ids).logits, torch.tensor([0, 1, 0, 1]))
        opt.zero_grad()
        loss.backward()
        opt.step()  # AdamW moves every weight, pruned ones included
        state.step = step
        recipe.on_after_optimizer_step(state)
        for name, mask in recipe.masks.items():
            w = prunable_linears(model)[name].weight
            assert torch.all(w[mask == 0] == 0), f"step {step}: {name} has non-zeros under its mask"
        seen.append(recipe.current_sparsity)
    recipe.on_train_end(state)
    assert seen[0] < seen[5] < seen[9] == pytest.approx(0.9)  # gradual, reaches the target at end=0.5
    w = prunable_linears(model)["bert.encoder.layer.0.attention.self.query"].weight
    assert int((w == 0).sum()) == round(0.9 * 32 * 32 / 4) * 4  # 32x32 weight: 256 blocks of 1x4
    # resume: the masks round-trip through state_dict
    clone = MagnitudePrune(recipe.config, ctx)
    clone.load_state_dict(recipe.state_dict())
    assert clone.current_sparsity == recipe.current_sparsity
    assert all(torch.equal(clone.masks[k], recipe.masks[k]) for k in recipe.masks)


def test_dynamic_int8_targets_only_the_named_layers(tiny_bert):
    from workbench.config import ConfigError
    from workbench.recipes.base import RecipeContext
    from workbench.recipes.quantize.dynamic import DynamicInt8, DynamicInt8Config

    ctx = RecipeContext(task=None, tokenizer=None, run_dir=None, stage="q")
    q = DynamicInt8(DynamicInt8Config(targets=["re:.*attention\\.self\\..*"]), ctx).apply(tiny_bert)
    packed = {n for n, m in q.named_modules() if hasattr(m, "_packed_params") and not n.endswith("_packed_params")}
    assert packed and all(".attention.self." in n for n in packed)
    assert len(packed) == 3 * 4  # query, key, value of 4 layers
    with pytest.raises(ConfigError, match="re:nothing.*matches no"):
        DynamicInt8(DynamicInt8Config(targets=["re:nothing"]), ctx).apply(tiny_bert)


def test_global_scope_ranks_all_layers_together(tiny_bert):
    layers = prunable_linears(tiny_bert)
    names = list(layers)
    with torch.no_grad():
        layers[names[0]].weight.mul_(10.0)   # one layer with much larger weights: it keeps (nearly) all
        layers[names[1]].weight.mul_(0.01)   # one with tiny weights: it loses (nearly) all
    masks = magnitude_prune_(tiny_bert, 0.5, (1, 4), scope="global")
    per_layer = {n: float((m == 0).float().mean()) for n, m in masks.items()}
    total_blocks = sum(m.numel() // 4 for m in masks.values())
    zero_blocks = sum(int((m == 0).sum()) // 4 for m in masks.values())
    assert zero_blocks == round(0.5 * total_blocks)  # exact overall sparsity
    assert per_layer[names[0]] < 0.05 and per_layer[names[1]] > 0.95
    for name, lin in layers.items():
        assert blocks_all_zero_or_dense(lin.weight, 1, 4), name
        assert bool((lin.weight[masks[name] == 0] == 0).all()), name


def test_global_scope_through_the_recipe_and_its_checks(tiny_bert):
    from workbench.config import ConfigError, parse_config

    ctx = RecipeContext(task=None, tokenizer=None, run_dir=None, stage="p")
    recipe = MagnitudePrune(MagnitudePruneConfig(sparsity=0.75, block=(16, 16), scope="global"), ctx)
    recipe.apply(tiny_bert)
    weights = [lin.weight for lin in prunable_linears(tiny_bert).values()]
    assert float(sum(int((w == 0).sum()) for w in weights)) / sum(w.numel() for w in weights) == pytest.approx(0.75)
    assert len({round(float((w == 0).float().mean()), 3) for w in weights}) > 1  # layers differ
    with pytest.raises(ConfigError, match="'scope' is global, but pattern \"2:4\""):
        parse_config(MagnitudePruneConfig, {"sparsity": 0.5, "pattern": "2:4", "scope": "global"}, "stage 'p' recipe 'magnitude_prune'")
