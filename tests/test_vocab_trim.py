"""Vocabulary trimming (`trim_vocab`, "Load What You Need"): the embeddings and the tokenizer shrink
together, kept texts give exactly the same logits, strict mode names removed tokens, a trimmed
stage saves, reloads in a fresh process and feeds later stages."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import tiny_spec, write_tiny_task
from workbench.config import ConfigError, parse_config
from workbench.data.tokenize import tokenizer_key
from workbench.models.vocab import check_token_ids, count_tokens, plan_keep, trim_embeddings, trim_tokenizer
from workbench.recipes.base import RecipeContext
from workbench.recipes.prune.vocab import TrimVocab, TrimVocabConfig

WORDS = ["the", "film", "was", "good", "great", "bad", "awful", "number", "play", "##ing", "game", "##s", "of"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *map(str, range(10)), *(f"filler{i}" for i in range(60))]
KEPT = ["the film was good", "playing games", "the film was bad number 7"]


@pytest.fixture(scope="module")
def word_pieces(tmp_path_factory):
    from transformers import BertTokenizer

    folder = tmp_path_factory.mktemp("wp")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tok = BertTokenizer(str(folder / "vocab.txt"))  # (transformers 5 ignores a `vocab_file=` keyword)
    assert len(tok) == len(VOCAB)
    return tok


def tiny_bert(vocab_size: int):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, num_labels=2, initializer_range=0.2)).eval()


def logits(model, tokenizer, texts):
    with torch.no_grad():
        return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits


def trim(model, tokenizer, texts, **settings):
    """The recipe on `texts` (as the stage's training texts); returns (model, new tokenizer)."""
    import datasets

    ctx = RecipeContext(task=None, tokenizer=tokenizer, run_dir=None, stage="trim",
                        train_data=datasets.Dataset.from_dict({"text": list(texts)}))
    model = TrimVocab(parse_config(TrimVocabConfig, settings, "trim_vocab"), ctx).apply(model)
    return model, ctx.tokenizer


# ------------------------------------------------------------------------------ word pieces
def test_kept_texts_give_exactly_the_same_logits_and_the_model_shrinks(word_pieces):
    model = tiny_bert(len(VOCAB))
    before, params = logits(model, word_pieces, KEPT), sum(p.numel() for p in model.parameters())
    model, tok = trim(model, word_pieces, KEPT)
    kept = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "film", "was", "good", "play", "##ing", "game",
            "##s", "bad", "number", "7"}
    assert set(tok.get_vocab()) == kept and len(tok) == len(kept) == model.config.vocab_size
    assert torch.equal(logits(model, tok, KEPT), before)  # bit-exact: the same rows, the same tokens
    assert model.get_input_embeddings().num_embeddings == len(kept)
    assert params - sum(p.numel() for p in model.parameters()) == (len(VOCAB) - len(kept)) * 32
    info = model.config.workbench_pruning
    assert (info["vocab_before"], info["vocab_after"], info["method"]) == (len(VOCAB), len(kept), "trim_vocab")
    assert info["params_before"] - info["params_after"] == (len(VOCAB) - len(kept)) * 32
    assert info["embedding_mb_saved"] > 0 and info["pruning_seconds"] >= 0
    # a removed word maps to [UNK] (non-strict); the padding id stays 0
    assert tok("great awful")["input_ids"] == [tok.cls_token_id, tok.unk_token_id, tok.unk_token_id, tok.sep_token_id]
    assert tok.pad_token_id == 0
    # the tokenized-data cache key follows the vocabulary
    assert tokenizer_key(tok) != tokenizer_key(word_pieces)


def test_min_count_and_extra_corpus(word_pieces, tmp_path):
    (tmp_path / "extra.txt").write_text("great\n\nawful film\n")
    _, tok = trim(tiny_bert(len(VOCAB)), word_pieces, KEPT, extra_corpus=[str(tmp_path / "extra.txt")])
    assert {"great", "awful"} <= set(tok.get_vocab()) and "of" not in tok.get_vocab()
    _, tok = trim(tiny_bert(len(VOCAB)), word_pieces, ["the the film", "the"], min_count=2)
    assert set(tok.get_vocab()) == {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the"}
    (tmp_path / "corpus.txt").write_text("bad game\n")  # `corpus` replaces the training texts
    _, tok = trim(tiny_bert(len(VOCAB)), word_pieces, KEPT, corpus=str(tmp_path / "corpus.txt"))
    assert "film" not in tok.get_vocab() and {"bad", "game"} <= set(tok.get_vocab())


def test_strict_names_the_removed_tokens_and_keeps_kept_texts_exact(word_pieces):
    model = tiny_bert(len(VOCAB))
    before = logits(model, word_pieces, KEPT)
    model, tok = trim(model, word_pieces, KEPT, strict=True)
    n = model.config.vocab_size
    assert n == 16 and torch.equal(logits(model, tok, KEPT), before)
    check_token_ids(tok, tok(KEPT)["input_ids"], n, "eval")  # kept texts pass
    with pytest.raises(ConfigError, match=r"removed by a strict trim_vocab: 'great', 'awful'.*'corpus'"):
        check_token_ids(tok, tok(["the film was great", "awful"])["input_ids"], n, "eval")
    with pytest.raises(ConfigError, match="already trimmed"):
        trim(model, tok, KEPT)


def test_bad_settings_fail_before_any_work(tmp_path):
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(ConfigError, match=r"'corpus' names '.*empty.txt', which holds no text"):
        parse_config(TrimVocabConfig, {"corpus": str(tmp_path / "empty.txt")}, "stage 't' recipe 'trim_vocab'")
    with pytest.raises(ConfigError, match=r"recipe 'trim_vocab': 'extra_corpus' names 'nope.txt', which is not a file"):
        parse_config(TrimVocabConfig, {"extra_corpus": ["nope.txt"]}, "stage 't' recipe 'trim_vocab'")
    with pytest.raises(ConfigError, match="'min_count' must be >= 1"):
        parse_config(TrimVocabConfig, {"min_count": 0}, "trim_vocab")
    with pytest.raises(ConfigError, match="'corpus' is an empty list"):
        parse_config(TrimVocabConfig, {"corpus": []}, "trim_vocab")


def test_an_unsupported_tokenizer_is_named():
    from tokenizers import Tokenizer
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(Unigram([("<unk>", 0.0), ("a", -1.0)], unk_id=0)),
                                  unk_token="<unk>")
    with pytest.raises(ConfigError, match="cannot trim the vocabulary of TokenizersBackend: its model is Unigram"):
        trim(tiny_bert(8), tok, ["a"])


# ------------------------------------------------------------------------------ byte-level BPE
def test_roberta_bpe_keeps_kept_texts_exact_and_encodes_anything():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaConfig, RobertaForSequenceClassification, RobertaTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    backend.train_from_iterator(["the film was good", "playing games all day", "a bad film, an awful game"] * 5,
                                trainers.BpeTrainer(vocab_size=330, special_tokens=specials,
                                                    initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    backend.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok = RobertaTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                               cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    torch.manual_seed(0)
    model = RobertaForSequenceClassification(RobertaConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=70, num_labels=2, pad_token_id=1)).eval()
    texts = ["the film was good", "an awful game"]
    before = logits(model, tok, texts)
    model, new = trim(model, tok, texts)
    assert 256 < len(new) < len(tok) and model.config.vocab_size == len(new)  # the bytes stay: any text encodes
    assert torch.equal(logits(model, new, texts), before)
    assert new.pad_token_id == 1 and new("zzz")["input_ids"][0] == new.cls_token_id
    assert logits(model, new, ["playing games all day, zzz"]).shape == (1, 2)


# ------------------------------------------------------------------------------ save, reload
def test_a_trimmed_model_and_tokenizer_reload_in_a_fresh_process(word_pieces, tmp_path):
    model, tok = trim(tiny_bert(len(VOCAB)), word_pieces, KEPT)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    code = ("import sys, torch; from workbench.models.edits import load_edited_model; "
            "from workbench.models.vocab import load_stage_tokenizer; "
            "m = load_edited_model(sys.argv[1]); t = load_stage_tokenizer(sys.argv[1]); "
            "print(len(t), m.config.vocab_size, t.tokenize('playing the great film')); "
            "torch.save(m(**t(sys.argv[3:], padding=True, return_tensors='pt')).logits.detach(), sys.argv[2])")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m"), str(tmp_path / "o.pt"), *KEPT],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "16 16 ['play', '##ing', 'the', '[UNK]', 'film']"
    assert torch.equal(torch.load(tmp_path / "o.pt"), logits(model, tok, KEPT))


# ------------------------------------------------------------------------------ in a pipeline
@pytest.fixture
def local_task(tmp_path, monkeypatch):
    """A tiny local BERT folder (a large filler vocabulary) and a CSV sentiment task."""
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    vocab = [*VOCAB, *(f"more{i}" for i in range(400))]
    csv_path, folder = write_tiny_task(tmp_path, repeats=30, vocab=vocab, initializer_range=0.2)  # as tiny_bert()

    def spec(stages):
        from workbench.pipeline import PipelineSpec

        return PipelineSpec.from_dict(tiny_spec(csv_path, folder, stages, name="v"))

    return spec, len(vocab)


def test_pipeline_finetune_trim_then_finetune_saves_and_reloads(local_task, tmp_path):
    from workbench.pipeline import PipelineRun

    spec, vocab_size = local_task
    train = {"epochs": 1, "batch_size": 16, "lr": 1e-3}
    s = spec([{"name": "teacher", "recipes": ["finetune"], "train": train},
              {"name": "trim", "recipes": ["trim_vocab"]},
              {"name": "after", "recipes": ["finetune"], "train": train}])
    run = PipelineRun(s, results_root=tmp_path / "r")
    first = {m["stage"]: m for m in run.run()}
    assert first["trim"]["vocab_before"] == vocab_size and first["trim"]["vocab_after"] < 30
    assert first["trim"]["params"] == first["teacher"]["params"] - (vocab_size - first["trim"]["vocab_after"]) * 32
    assert first["trim"]["accuracy"] == first["teacher"]["accuracy"]  # every eval token was a training token
    assert first["after"]["params"] == first["trim"]["params"]
    trimmed = run.stage_data["trim"].tokenizer
    assert run.stage_data["after"].tokenizer is trimmed and len(trimmed) == first["trim"]["vocab_after"]
    assert int(run.stage_data["after"].train.with_format(None)["input_ids"][0][0]) == trimmed.cls_token_id
    # the saved stage, in a fresh process: the trimmed tokenizer, the same logits
    texts = ["the film was awful number 3", "the film was great number 12"]
    with torch.no_grad():
        expected = run.models["trim"](**trimmed(texts, padding=True, return_tensors="pt")).logits
    code = ("import sys, torch; from workbench.models.edits import load_edited_model; "
            "from workbench.models.vocab import load_stage_tokenizer; "
            "m = load_edited_model(sys.argv[1]); t = load_stage_tokenizer(sys.argv[1]); print(len(t)); "
            "torch.save(m(**t(sys.argv[3:], padding=True, return_tensors='pt')).logits.detach(), sys.argv[2])")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r" / "v" / "artifacts" / "trim" / "model"),
                          str(tmp_path / "o.pt"), *texts], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(len(trimmed)) and torch.equal(torch.load(tmp_path / "o.pt"), expected)
    # a second run reuses both stages from disk, with their tokenizers
    again = PipelineRun(s, results_root=tmp_path / "r", remeasure=True)
    second = {m["stage"]: m for m in again.run()}
    for name in ("trim", "after"):
        assert "reused_from" in second[name] and second[name]["accuracy"] == first[name]["accuracy"]
        assert again.stage_data[name].tokenizer.get_vocab() == trimmed.get_vocab()


def test_pipeline_strict_fails_naming_a_removed_token(local_task, tmp_path):
    from workbench.pipeline import PipelineRun

    spec, _ = local_task
    (tmp_path / "corpus.txt").write_text("the film was good number 1\n")
    s = spec([{"name": "trim", "recipes": [{"trim_vocab": {"corpus": str(tmp_path / "corpus.txt"), "strict": True}}]}])
    with pytest.raises(ConfigError, match=r"stage 'trim': the train split: .*removed by a strict trim_vocab: .*'gre"):
        PipelineRun(s, results_root=tmp_path / "r").run()


def test_distilling_across_vocabularies_is_refused(local_task, tmp_path):
    from workbench.pipeline import PipelineRun

    spec, _ = local_task
    s = spec([{"name": "teacher", "recipes": ["trim_vocab"]},
              {"name": "student", "recipes": [{"distill_logits": {"teacher": "teacher"}}],
               "from": "teacher", "train": {"epochs": 1}},
              ])
    PipelineRun(s, results_root=tmp_path / "ok").run()  # the same trimmed vocabulary: fine
    with pytest.raises(ConfigError, match="teacher 'teacher' and this stage have different vocabularies"):
        # refused from the recipe alone (PipelineSpec), before the teacher trains
        spec([{"name": "teacher", "recipes": ["finetune"], "train": {"epochs": 1, "batch_size": 16}},
              {"name": "student", "recipes": ["trim_vocab", {"distill_logits": {"teacher": "teacher"}}],
               "train": {"epochs": 1, "batch_size": 16}}])
    # a stage that descends from a trimmed one, and a model-name teacher of a trimmed stage
    for stages in ([{"name": "teacher", "recipes": ["finetune"], "train": {"epochs": 1, "batch_size": 16}},
                    {"name": "trimmed", "recipes": ["trim_vocab"]},
                    {"name": "student", "recipes": [{"distill_layers": {"teacher": "teacher"}}], "train": {"epochs": 1}}],
                   [{"name": "trimmed", "recipes": ["trim_vocab"]},
                    {"name": "student", "recipes": [{"distill_logits": {"teacher": "minilm-l6"}}], "train": {"epochs": 1}}]):
        with pytest.raises(ConfigError, match=r"stage 'student' .* different vocabularies \(stage 'trimmed' trims it"):
            spec(stages)
