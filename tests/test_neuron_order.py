"""`sort_ffn_neurons`: the same function, neurons by importance, and more weight kept by tile pruning."""
from __future__ import annotations

import pytest
import torch

from workbench.config import ConfigError
from workbench.models.arch import architecture
from workbench.recipes.base import RecipeContext, StageCheck
from workbench.recipes.prune.magnitude import block_scores, keep_top
from workbench.recipes.prune.neuron_order import SortFfnNeurons, SortFfnNeuronsConfig, neuron_importance

CTX = RecipeContext(task=None, tokenizer=None, run_dir=None, stage="sorted")


def tiny_bert_wide_ffn(seed: int = 0):
    """A random BERT whose FFN neurons differ in scale, as trained ones do (FFN 256, hidden 128)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=120, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=256, max_position_embeddings=64, num_labels=2)
    model = BertForSequenceClassification(cfg).eval()
    arch = architecture(model)
    with torch.no_grad():
        for i in range(arch.num_layers):
            scale = torch.rand(cfg.intermediate_size) * 2 + 0.1
            arch.module(i, "ffn_in").weight.mul_(scale[:, None])
            arch.module(i, "ffn_out").weight.mul_(scale[None, :])
    return model


def kept_fraction(weight: torch.Tensor, sparsity: float, block: tuple[int, int]) -> float:
    scores = block_scores(weight, block)
    return float((scores * keep_top(scores, sparsity)).sum() / scores.sum())


def test_same_function_neurons_sorted():
    model = tiny_bert_wide_ffn()
    ids = torch.randint(5, 120, (3, 20))
    before = model(input_ids=ids).logits
    arch = architecture(model)
    params = [arch.module(i, "ffn_in").weight for i in range(arch.num_layers)]
    SortFfnNeurons(SortFfnNeuronsConfig(), CTX).apply(model)
    torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=1e-5, atol=1e-5)
    for i in range(arch.num_layers):
        imp = neuron_importance(arch.module(i, "ffn_in"), arch.module(i, "ffn_out"))
        assert bool((imp[:-1] >= imp[1:]).all()), f"layer {i} not in descending importance"
        assert arch.module(i, "ffn_in").weight is params[i]  # in place: an optimizer's references stay valid
    assert model.config.workbench_neuron_order == {"stage": "sorted", "criterion": "magnitude"}


def test_tile_pruning_keeps_more_weight_after_sorting():
    model = tiny_bert_wide_ffn()
    arch = architecture(model)
    w_in, w_out = arch.module(0, "ffn_in").weight.clone(), arch.module(0, "ffn_out").weight.clone()
    SortFfnNeurons(SortFfnNeuronsConfig(), CTX).apply(model)
    for before, after in ((w_in, arch.module(0, "ffn_in").weight), (w_out, arch.module(0, "ffn_out").weight)):
        block = (16, 64)
        gain = kept_fraction(after, 0.9, block) / kept_fraction(before, 0.9, block)
        assert gain > 1.15, gain
        # weight by weight the order does not matter: the same weights are there
        assert kept_fraction(after, 0.9, (1, 1)) == pytest.approx(kept_fraction(before, 0.9, (1, 1)))


@pytest.mark.parametrize("recipes, ok", [(["sort_ffn_neurons", "magnitude_prune", "distill_logits"], True),
                                         (["distill_logits", "sort_ffn_neurons", "magnitude_prune"], True),
                                         (["magnitude_prune", "sort_ffn_neurons"], False),
                                         (["dynamic_int8", "sort_ffn_neurons"], False)])
def test_listed_before_the_pruning_it_serves(recipes, ok):
    where = "stage 'p' recipe 'sort_ffn_neurons'"
    check = StageCheck(stage="p", earlier=[], recipes=recipes, trains=True, where=where)
    if ok:
        SortFfnNeurons.check_stage(SortFfnNeuronsConfig(), check)
    else:
        with pytest.raises(ConfigError, match=rf"comes after '{recipes[0]}' in the stage.*list it before them"):
            SortFfnNeurons.check_stage(SortFfnNeuronsConfig(), check)


def test_in_a_pipeline_spec_the_wrong_order_fails_before_work(tmp_path):
    from tests.conftest import tiny_spec, write_tiny_task
    from workbench.pipeline.spec import PipelineSpec

    csv_path, folder = write_tiny_task(tmp_path, repeats=2)
    stage = {"name": "p", "recipes": [{"magnitude_prune": {"sparsity": 0.5}}, "sort_ffn_neurons"]}
    with pytest.raises(ConfigError, match="sort_ffn_neurons.*comes after 'magnitude_prune'"):
        PipelineSpec.from_dict(tiny_spec(csv_path, folder, [stage]))
