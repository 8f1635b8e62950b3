"""The architecture adapter (workbench.models.arch) and `targets:` resolution (workbench.targets)
on tiny random BERT, DistilBERT and RoBERTa classifiers."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from workbench.config import ConfigError, parse_config
from workbench.models.arch import architecture
from workbench.models.families import FAMILIES, NORMS, ROLES, check_supported
from workbench.targets import resolve_targets, validate_target_syntax

H, FFN, HEADS, LAYERS = 32, 64, 4, 4


def tiny(family: str, num_labels: int = 2) -> nn.Module:
    from transformers import (
        BertConfig, BertForSequenceClassification, DistilBertConfig, DistilBertForSequenceClassification,
        RobertaConfig, RobertaForSequenceClassification,
    )

    torch.manual_seed(0)
    if family == "bert":
        cfg = BertConfig(vocab_size=120, hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                         intermediate_size=FFN, max_position_embeddings=64, num_labels=num_labels)
        return BertForSequenceClassification(cfg).eval()
    if family == "distilbert":
        cfg = DistilBertConfig(vocab_size=120, dim=H, n_layers=LAYERS, n_heads=HEADS, hidden_dim=FFN,
                               max_position_embeddings=64, num_labels=num_labels)
        return DistilBertForSequenceClassification(cfg).eval()
    if family in ("electra", "electra-small"):  # -small: narrower embeddings, projected to H
        from transformers import ElectraConfig, ElectraForSequenceClassification

        cfg = ElectraConfig(vocab_size=120, embedding_size=H if family == "electra" else H // 4, hidden_size=H, num_hidden_layers=LAYERS,
                            num_attention_heads=HEADS, intermediate_size=FFN, max_position_embeddings=64,
                            num_labels=num_labels)
        return ElectraForSequenceClassification(cfg).eval()
    cfg = RobertaConfig(vocab_size=120, hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        intermediate_size=FFN, max_position_embeddings=66, num_labels=num_labels)
    return RobertaForSequenceClassification(cfg).eval()


def ids_and_mask(batch: int = 3, seq: int = 16, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 120, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    mask[2, 4:] = 0
    ids[mask == 0] = pad_id
    return ids, mask


EXPECTED = {
    "bert": ("bert.encoder.layer", "bert.encoder.layer.2.attention.self.query",
             {"bert.pooler", "classifier"}),
    "distilbert": ("distilbert.transformer.layer", "distilbert.transformer.layer.2.attention.q_lin",
                   {"pre_classifier", "classifier"}),
    "roberta": ("roberta.encoder.layer", "roberta.encoder.layer.2.attention.self.query", {"classifier"}),
    "electra": ("electra.encoder.layer", "electra.encoder.layer.2.attention.self.query", {"classifier"}),
}


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "electra"])
def test_adapter_finds_layers_roles_and_heads(family):
    model = tiny(family)
    arch = architecture(model)
    layers_path, query_2, heads = EXPECTED[family]
    assert arch.family is FAMILIES[family]
    assert arch.num_layers == LAYERS and len(arch.layers) == LAYERS
    assert arch.layers is model.get_submodule(layers_path)
    assert arch.layer_prefix(3) == f"{layers_path}.3"
    assert arch.hidden_size == H and arch.head_size == H // HEADS
    assert arch.word_embeddings is arch.embeddings.word_embeddings
    assert isinstance(arch.word_embeddings, nn.Embedding) and arch.word_embeddings.num_embeddings == 120
    shapes = {"query": (H, H), "key": (H, H), "value": (H, H), "attn_out": (H, H),
              "ffn_in": (FFN, H), "ffn_out": (H, FFN)}
    named = dict(model.named_modules())
    for i in range(LAYERS):
        assert arch.num_heads(i) == HEADS
        for role in ROLES:
            m = arch.module(i, role)
            assert isinstance(m, nn.Linear) and tuple(m.weight.shape) == shapes[role], (i, role)
            assert named[arch.module_name(i, role)] is m
        for role in NORMS:
            assert isinstance(arch.module(i, role), nn.LayerNorm)
            assert tuple(arch.module(i, role).weight.shape) == (H,)
    assert arch.module_name(2, "query") == query_2
    lins = arch.encoder_linears()
    assert len(lins) == LAYERS * len(ROLES)
    assert list(lins) == [arch.module_name(i, r) for i in range(LAYERS) for r in ROLES]  # layer order
    assert not any(n.startswith(tuple(heads)) for n in lins)
    assert set(arch.head_modules()) == heads
    with pytest.raises(ValueError, match="unknown role 'ffn'.*query, key, value, attn_out, ffn_in, ffn_out"):
        arch.module(0, "ffn")


def _prune_head(model: nn.Module, layer: int, head: int) -> None:
    """Remove one attention head (HF's `prune_heads`, which transformers 5 no longer has)."""
    if hasattr(model, "prune_heads"):
        model.prune_heads({layer: [head]})
        return
    from transformers.pytorch_utils import prune_linear_layer

    arch = architecture(model)
    d = arch.head_size
    n = arch.num_heads(layer)
    keep = torch.tensor([j for j in range(n * d) if j // d != head])
    att = arch.layers[layer].attention.self
    att.query, att.key, att.value = (prune_linear_layer(getattr(att, r), keep) for r in ("query", "key", "value"))
    out = arch.layers[layer].attention.output
    out.dense = prune_linear_layer(out.dense, keep, dim=1)
    att.num_attention_heads = n - 1
    att.all_head_size = (n - 1) * d


def test_num_heads_after_head_pruning_and_runtime_follows(tiny_bert):
    from workbench.runtime import FP32_ATOL, compile_model

    _prune_head(tiny_bert, 0, 1)
    arch = architecture(tiny_bert)
    assert arch.num_heads(0) == HEADS - 1 and arch.num_heads(1) == HEADS
    assert arch.module(0, "query").out_features == (HEADS - 1) * arch.head_size
    ids, mask = ids_and_mask()
    with torch.no_grad():
        ref = tiny_bert(input_ids=ids, attention_mask=mask).logits.numpy()
    engine = compile_model(tiny_bert, quantize=False)
    assert engine.layer_heads == [HEADS - 1, HEADS, HEADS, HEADS]
    np.testing.assert_allclose(engine(ids.numpy(), mask.numpy()), ref, atol=FP32_ATOL, rtol=0)


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "electra"])
def test_set_layers_keeps_the_model_runnable(family):
    model = tiny(family)
    arch = architecture(model)
    keep = [arch.layers[0], arch.layers[3]]
    arch.set_layers(nn.ModuleList(keep))
    assert arch.num_layers == 2 and list(arch.layers) == keep
    assert getattr(model.config, arch.family.num_layers_attr) == 2
    idx = [getattr(m, "layer_idx") for layer in arch.layers for m in layer.modules() if hasattr(m, "layer_idx")]
    assert idx == sorted(idx) and set(idx) <= {0, 1}  # renumbered where the family keeps indices
    ids, mask = ids_and_mask()
    assert model(input_ids=ids, attention_mask=mask).logits.shape == (3, 2)
    assert len(arch.encoder_linears()) == 2 * len(ROLES)


def test_unsupported_models_are_a_clear_config_error():
    from transformers import BertConfig, BertModel, GPT2Config, GPT2ForSequenceClassification

    gpt = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100))
    with pytest.raises(ConfigError) as info:
        architecture(gpt, "stage 'p' recipe 'magnitude_prune'")
    msg = str(info.value)
    assert msg.startswith("stage 'p' recipe 'magnitude_prune': GPT2ForSequenceClassification (model_type 'gpt2') "
                          "is not a supported encoder family")
    assert msg.endswith("supported: bert (BERT, MiniLM), distilbert, roberta (RoBERTa, XLM-R), electra (ELECTRA "
                        "discriminators)")
    with pytest.raises(ConfigError, match="GPT2Config .*model_type 'gpt2'.*supported: bert"):
        check_supported(gpt.config, "teacher")
    assert check_supported(tiny("roberta").config, "x") is FAMILIES["roberta"]
    assert check_supported(tiny("distilbert"), "x") is FAMILIES["distilbert"]
    assert check_supported(tiny("electra"), "x") is FAMILIES["electra"]
    # ELECTRA-small's narrower embeddings are projected to the layers' width: the adapter finds it
    from transformers import ElectraConfig, ElectraForSequenceClassification

    small = ElectraForSequenceClassification(ElectraConfig(embedding_size=16, hidden_size=32, num_hidden_layers=1,
                                                           num_attention_heads=2, intermediate_size=64))
    assert check_supported(small, "teacher") is FAMILIES["electra"]
    arch = architecture(small)
    assert arch.embedding_projection is small.electra.embeddings_project
    assert arch.embedding_projection_name == "electra.embeddings_project"
    assert architecture(tiny("electra")).embedding_projection is None
    bare = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64, vocab_size=100))
    with pytest.raises(ConfigError, match="BertModel .*base model at 'bert'.*supported: bert"):
        architecture(bare)
    with pytest.raises(ConfigError, match="Sequential .*no model_type"):
        architecture(nn.Sequential(nn.Linear(2, 2)))


def test_quantized_copy_keeps_the_paths():
    from workbench.evaluate import per_layer_sparsity

    model = tiny("distilbert")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    lins = architecture(q).encoder_linears()
    assert list(lins) == list(architecture(model).encoder_linears())
    assert all(hasattr(m, "_packed_params") for m in lins.values())
    assert architecture(q).num_heads(0) == HEADS
    assert list(per_layer_sparsity(q)) == list(lins)


def test_resolve_targets_exact_pattern_and_errors(tiny_bert):
    q0 = "bert.encoder.layer.0.attention.self.query"
    assert list(resolve_targets(tiny_bert, [q0], "w")) == [q0]
    got = resolve_targets(tiny_bert, ["re:bert\\.encoder\\.layer\\.[01]\\.output\\.dense", "classifier", q0], "w")
    assert list(got) == [q0, "bert.encoder.layer.0.output.dense", "bert.encoder.layer.1.output.dense",
                         "classifier"]  # the union, in model order
    assert all(isinstance(m, nn.Linear) for m in got.values())
    # full match: "query" alone matches nothing, ".*query" every query
    assert len(resolve_targets(tiny_bert, ["re:.*query"], "w")) == LAYERS
    with pytest.raises(ConfigError) as info:
        resolve_targets(tiny_bert, ["re:.*query", "re:query"], "stage 'p' recipe 'magnitude_prune'")
    assert str(info.value).startswith(
        "stage 'p' recipe 'magnitude_prune': 'targets' entry 're:query' matches no Linear module "
        f"(e.g. {q0}, bert.encoder.layer.0.attention.self.key")
    with pytest.raises(ConfigError, match="'targets' entry 'bert.encoder.layer.0.attention' matches no Linear"):
        resolve_targets(tiny_bert, ["bert.encoder.layer.0.attention"], "w")  # a module, not a Linear
    assert list(resolve_targets(tiny_bert, ["bert.encoder.layer.0.attention"], "w", kind=nn.Module)) == \
        ["bert.encoder.layer.0.attention"]
    # any module (the pipeline's up-front check): no kind named, no root '' among the examples,
    # and a near miss shown its closest spellings
    with pytest.raises(ConfigError) as info:
        resolve_targets(tiny_bert, [q0[:-1]], "w", kind=nn.Module)
    assert str(info.value).startswith(f"w: 'targets' entry '{q0[:-1]}' matches no module (e.g. {q0}, ")
    assert str(info.value).count("attention.self.query") == 3, str(info.value)
    cands = architecture(tiny_bert).encoder_linears()
    with pytest.raises(ConfigError, match="'targets' entry 'classifier' matches no"):
        resolve_targets(tiny_bert, ["classifier"], "w", candidates=cands)
    with pytest.raises(ConfigError, match=r"'targets' entry 're:\(' is not a valid regular expression"):
        validate_target_syntax(["re:("], "w")
    with pytest.raises(ConfigError, match="'targets' must name at least one module"):
        validate_target_syntax([], "w")
    with pytest.raises(ConfigError, match="'targets' must be a list"):
        validate_target_syntax("re:.*", "w")


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_magnitude_prune_targets_only_attention(family):
    from workbench.recipes.base import RecipeContext
    from workbench.recipes.prune.magnitude import MagnitudePrune, MagnitudePruneConfig, prunable_linears

    model = tiny(family)
    where = "stage 'p' recipe 'magnitude_prune'"
    cfg = parse_config(MagnitudePruneConfig, {"sparsity": 0.5, "targets": ["re:.*attention.*"]}, where)
    MagnitudePrune(cfg, RecipeContext(task=None, tokenizer=None, run_dir=None, stage="p")).apply(model)
    arch = architecture(model)
    for i in range(LAYERS):
        for role in ROLES:
            zeros = float((arch.module(i, role).weight == 0).float().mean())
            if role in ("query", "key", "value", "attn_out"):
                assert zeros == pytest.approx(0.5, abs=0.02), (i, role)
            else:
                assert zeros == 0.0, (i, role)
    for head in arch.head_modules().values():
        assert all(int((p == 0).sum()) == 0 for p in head.parameters() if p.ndim == 2)  # weights
    # default: every encoder Linear, never the head
    assert list(prunable_linears(model)) == list(arch.encoder_linears())
    with pytest.raises(ConfigError, match="'targets' entry 're:\\[attention' is not a valid regular expression"):
        parse_config(MagnitudePruneConfig, {"sparsity": 0.5, "targets": ["re:[attention"]}, where)
    nothing = parse_config(MagnitudePruneConfig, {"sparsity": 0.5, "targets": ["re:.*attn.*"]}, where)
    with pytest.raises(ConfigError, match="'targets' entry 're:.\\*attn.\\*' matches no Linear module"):
        MagnitudePrune(nothing, RecipeContext(task=None, tokenizer=None, run_dir=None, stage="p")).apply(model)


def test_per_layer_sparsity_uses_the_adapter(tiny_bert):
    from workbench.evaluate import per_layer_sparsity
    from workbench.recipes.prune.magnitude import magnitude_prune_

    magnitude_prune_(tiny_bert, 0.5, (1, 4))
    sp = per_layer_sparsity(tiny_bert)
    assert list(sp) == list(architecture(tiny_bert).encoder_linears())
    assert all(v == pytest.approx(0.5) for v in sp.values())
    other = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))  # no family: every Linear
    assert list(per_layer_sparsity(other)) == ["0", "2"]


def test_students_of_every_family():
    from workbench.models import build_student

    for family in ("bert", "distilbert", "roberta", "electra", "electra-small"):
        teacher = tiny(family)
        student = build_student(teacher, layers=[1, 3])
        s, t = architecture(student), architecture(teacher)
        assert s.num_layers == 2 and t.num_layers == LAYERS
        assert getattr(student.config, s.family.num_layers_attr) == 2
        assert getattr(teacher.config, t.family.num_layers_attr) == LAYERS
        for mine, theirs in zip(s.layers, [t.layers[1], t.layers[3]]):
            for p1, p2 in zip(mine.parameters(), theirs.parameters()):
                assert torch.equal(p1, p2) and p1.data_ptr() != p2.data_ptr()
        ids, mask = ids_and_mask(pad_id=1 if family == "roberta" else 0)
        assert student(input_ids=ids, attention_mask=mask).logits.shape == (3, 2)
        narrow = build_student(teacher, init="random", num_layers=1, hidden_size=16, intermediate_size=24,
                               num_attention_heads=2)
        n = architecture(narrow)
        assert n.num_layers == 1 and n.module(0, "ffn_in").weight.shape == (24, 16) and n.num_heads(0) == 2
        if family.startswith("electra"):  # the embeddings follow the width unless the teacher projects them
            assert narrow.config.embedding_size == (16 if family == "electra" else H // 4)
            assert (n.embedding_projection is None) == (family == "electra")
            assert narrow(input_ids=ids, attention_mask=mask).logits.shape == (3, 2)
    from transformers import GPT2Config, GPT2ForSequenceClassification

    gpt = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100))
    with pytest.raises(ConfigError, match="stage 's' recipe 'student': GPT2ForSequenceClassification"):
        build_student(gpt, where="stage 's' recipe 'student'")


def test_roberta_runtime_matches_torch():
    from workbench.runtime import FP32_ATOL, compile_model

    model = tiny("roberta", num_labels=3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # logits of order 1 (HF's init gives ~0.01)
        for lin in (model.classifier.dense, model.classifier.out_proj):
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * 0.5)
    pad = model.config.pad_token_id
    ids, mask = ids_and_mask(pad_id=pad)
    ids[:, 0] = 0  # <s>
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits.numpy()
    engine = compile_model(model, quantize=False)
    assert engine.position_ids == "padding_offset" and engine.padding_idx == pad
    np.testing.assert_allclose(engine(ids.numpy(), mask.numpy()), ref, atol=FP32_ATOL, rtol=0)
    out8 = compile_model(model)(ids.numpy(), mask.numpy())
    assert np.abs(out8 - ref).max() <= 0.25 * np.abs(ref).max()
    assert (out8.argmax(1) == ref.argmax(1)).all()
    # the longest input: max_position_embeddings - (padding_idx + 1) tokens
    longest = torch.randint(5, 120, (1, 66 - pad - 1), generator=g)
    with torch.no_grad():
        ref_long = model(input_ids=longest).logits.numpy()
    np.testing.assert_allclose(engine(longest.numpy()), ref_long, atol=FP32_ATOL, rtol=0)
    with pytest.raises(ValueError, match="exceeds the model's maximum 64"):
        engine(torch.randint(5, 120, (1, 65)).numpy())
    pruned = copy.deepcopy(model)
    from workbench.recipes.prune.magnitude import magnitude_prune_

    magnitude_prune_(pruned, 0.8, (1, 4))
    sparse = compile_model(pruned, quantize=False, sparse_threshold=0.5)
    assert len(sparse.sparse_layers()) == 4 * LAYERS
    assert set(sparse.layer_sparsity()) == set(architecture(pruned).encoder_linears())
