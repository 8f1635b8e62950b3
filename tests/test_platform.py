"""The recipe platform: named loss terms, declared needs, teachers with other tokenizers,
architecture checks before training, seeds with aggregated tables, replayable structural edits,
and an orchestrator that names no recipe."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from workbench.config import ConfigError
from workbench.pipeline import PipelineRun, PipelineSpec
from workbench.recipes.base import Recipe, register_recipe

WORDS = {"good": "pos", "great": "pos", "bad": "neg", "awful": "neg"}


def _csv_task(tmp_path: Path) -> dict:
    rows = [f"the film was {w} number {i},{y}" for i in range(30) for w, y in WORDS.items()]
    (tmp_path / "reviews.csv").write_text("review,sentiment\n" + "\n".join(rows) + "\n")
    return {"name": str(tmp_path / "reviews.csv"), "text_column": "review", "label_column": "sentiment"}


def _tiny_dir(tmp_path: Path, name: str, vocab: list[str] | None = None, model_cls: str = "bert") -> Path:
    """A tiny random classifier saved like a Hugging Face model folder, with its tokenizer:
    the MiniLM tokenizer, or a WordPiece tokenizer built from `vocab` (another vocabulary)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer, GPT2Config, GPT2ForSequenceClassification

    from workbench.models import load_model

    path = tmp_path / name
    if vocab is None:
        _, tokenizer = load_model("minilm-l6", num_labels=2)
    else:
        path.mkdir(parents=True)
        (path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + vocab) + "\n")
        tokenizer = BertTokenizer(str(path / "vocab.txt"))
    torch.manual_seed(0)
    if model_cls == "gpt2":
        cfg = GPT2Config(vocab_size=tokenizer.vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                         num_labels=2, pad_token_id=0)
        model = GPT2ForSequenceClassification(cfg)
    else:
        cfg = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=64, num_labels=2)
        model = BertForSequenceClassification(cfg)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _spec(tmp_path: Path, stages: list[dict], model: str, **extra) -> PipelineSpec:
    return PipelineSpec.from_dict({
        "name": "p", "model": model, "seed": 0, "task": _csv_task(tmp_path),
        "eval": {"speed_batches": [1], "speed_iters": 1, "seq_len": 16}, "stages": stages, **extra})


@dataclass
class HiddenNormConfig:
    weight: float = 0.5


@register_recipe("test_hidden_norm")
class HiddenNorm(Recipe):
    """A test recipe with an owned parameter and a loss term on the last hidden state."""

    Config = HiddenNormConfig

    @classmethod
    def contributes_loss(cls, config) -> bool:
        return True

    def needs(self) -> set[str]:
        return {"hidden_states"}

    def setup(self, model) -> None:
        self.owned = torch.nn.Linear(32, 1)

    def loss_terms(self, state):
        return {"hidden_norm": (self.config.weight, self.owned(state.outputs.hidden_states[-1]).pow(2).mean())}


def test_two_recipes_terms_both_reach_the_gradients(tiny_bert):
    from workbench.forward import forward_with
    from workbench.recipes.base import RecipeContext, TrainState
    from workbench.recipes.finetune import Finetune, FinetuneConfig
    from workbench.train import Trainer, TrainConfig

    ctx = RecipeContext(task=None, tokenizer=None, run_dir=None, stage="s")
    recipes = [Finetune(FinetuneConfig(), ctx), HiddenNorm(HiddenNormConfig(), ctx)]
    trainer = Trainer(tiny_bert, [], None, TrainConfig(), recipes, seed=0, checkpoint_dir=None)
    assert trainer.needs == {"hidden_states"}  # only what a recipe declared
    for r in recipes:
        r.setup(tiny_bert)
    batch = {"input_ids": torch.randint(1, 120, (4, 8)), "labels": torch.tensor([0, 1, 0, 1])}
    state = TrainState(tiny_bert, None, 0, 1, 0, 1, batch=batch, outputs=forward_with(tiny_bert, batch, trainer.needs))
    loss, values = trainer._loss(state)
    assert set(values) == {"ce", "hidden_norm"}
    assert torch.isclose(loss, torch.tensor(values["ce"] + 0.5 * values["hidden_norm"]))
    loss.backward()
    assert recipes[1].owned.weight.grad is not None and recipes[1].owned.weight.grad.abs().sum() > 0
    assert tiny_bert.classifier.weight.grad.abs().sum() > 0  # only the ce term reaches the classifier
    # the same term name from two recipes is an error naming both
    recipes.append(Finetune(FinetuneConfig(), ctx))
    with pytest.raises(ConfigError, match="'finetune' and 'finetune' both contribute the loss term 'ce'"):
        trainer._loss(state)


def test_history_csv_logs_every_term_and_plots(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    model = _tiny_dir(tmp_path, "tiny")
    spec = _spec(tmp_path, [
        {"name": "teacher", "recipes": ["finetune"], "train": {"epochs": 2, "batch_size": 16, "lr": 2e-3}},
        {"name": "student", "recipes": [{"distill_logits": {"teacher": "teacher", "loss": "skew_kl", "loss_args": {"alpha": 0.1}}},
                                        "test_hidden_norm"], "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3}},
    ], str(model))
    PipelineRun(spec, results_root=tmp_path / "r").run()
    with open(tmp_path / "r" / "p" / "history" / "student.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"step", "epoch", "lr", "loss", "kd_logits", "ce", "hidden_norm", "val_accuracy"} <= set(rows[0])
    assert rows[-1]["val_accuracy"] != "" and rows[0]["val_accuracy"] == "" and rows[-1]["step"] == str(len(rows))
    assert (tmp_path / "r" / "p" / "loss_terms.png").stat().st_size > 0
    # the owned parameter is not part of the saved model
    saved = json.loads((tmp_path / "r" / "p" / "artifacts" / "student" / "model" / "config.json").read_text())
    assert saved["num_hidden_layers"] == 2
    from safetensors.torch import load_file
    keys = load_file(str(tmp_path / "r" / "p" / "artifacts" / "student" / "model" / "model.safetensors"))
    assert not any("owned" in k for k in keys)


def test_a_teacher_with_another_tokenizer_distils(tmp_path, monkeypatch):
    """The teacher tokenizes the raw text itself with its own (different) vocabulary."""
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    student = _tiny_dir(tmp_path, "student")
    teacher = _tiny_dir(tmp_path, "teacher", vocab=["the", "film", "was", "good", "great", "bad", "awful", "number"]
                        + [str(i) for i in range(10)])
    seen = []
    from workbench import teachers

    original = teachers.Teacher._inputs

    def spy(self, batch):
        out = original(self, batch)
        seen.append(int(out["input_ids"].max()))
        return out

    monkeypatch.setattr(teachers.Teacher, "_inputs", spy)
    spec = _spec(tmp_path, [{"name": "student", "recipes": [{"distill_logits": {"teacher": str(teacher), "alpha": 1.0}}],
                             "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3}}], str(student))
    metrics = PipelineRun(spec, results_root=tmp_path / "r").run()
    assert seen and max(seen) < 23  # ids from the teacher's 23-token vocabulary, not the student's 30k
    assert metrics[0]["history"]
    # token-level matching across vocabularies is refused with a message naming the teacher
    svc = teachers.TeacherService(None, 2, tmp_path, lambda n: None)
    from workbench.models import load_model
    svc.student_tokenizer = load_model(str(student), 2)[1]
    with pytest.raises(ConfigError, match="different tokenizer"):
        svc.get(str(teacher), {"hidden_states"}, "stage 's' recipe 'distill_layers'")


def test_figures_are_drawn_when_the_run_ends_or_fails_and_at_most_every_interval(tmp_path, monkeypatch):
    """Tables after every stage; figures (1-2.5 s of matplotlib) when the run ends, when a stage
    fails (for the stages that finished), and in between only when FIGURE_EVERY_S has passed."""
    import workbench.pipeline.run as run_module

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    model = _tiny_dir(tmp_path, "tiny")
    stages = [{"name": n, "recipes": ["finetune"], "train": {"max_steps": 1, "batch_size": 8}} for n in ("a", "b", "c")]
    drawn = []
    real = run_module.write_run_figures
    monkeypatch.setattr(run_module, "write_run_figures",
                        lambda run_dir, spec, metrics, **kw: (drawn.append(len(metrics)), real(run_dir, spec, metrics, **kw)))
    PipelineRun(_spec(tmp_path, stages, str(model)), results_root=tmp_path / "r1").run()
    assert drawn == [3]  # a short run: once, at its end
    monkeypatch.setattr(run_module, "FIGURE_EVERY_S", 0.0)
    drawn.clear()
    PipelineRun(_spec(tmp_path, stages, str(model)), results_root=tmp_path / "r2").run()
    assert drawn == [1, 2, 3]  # the interval passed after each stage
    monkeypatch.setattr(run_module, "FIGURE_EVERY_S", 3600.0)
    drawn.clear()
    real_stage = PipelineRun._run_stage

    def fail_second(self, index, stage):
        if index == 1:
            raise RuntimeError("stage b broke")
        return real_stage(self, index, stage)

    monkeypatch.setattr(PipelineRun, "_run_stage", fail_second)
    with pytest.raises(RuntimeError, match="stage b broke"):
        PipelineRun(_spec(tmp_path, stages, str(model)), results_root=tmp_path / "r3").run()
    assert drawn == [1]  # the finished stage's figures, and its tables
    run_dir = tmp_path / "r3" / "p"
    assert (run_dir / "accuracy_vs_throughput.png").stat().st_size > 0 and (run_dir / "loss_terms.png").exists()
    assert [m["stage"] for m in json.loads((run_dir / "metrics.json").read_text())["stages"]] == ["a"]


def test_unsupported_architecture_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    model = _tiny_dir(tmp_path, "gpt2", model_cls="gpt2")
    spec = _spec(tmp_path, [
        {"name": "teacher", "recipes": ["finetune"], "train": {"epochs": 1, "batch_size": 16}},
        {"name": "student", "recipes": [{"student": {"layers": [0]}}, "finetune"], "train": {"epochs": 1}}], str(model))
    run = PipelineRun(spec, results_root=tmp_path / "r")
    with pytest.raises(ConfigError) as info:
        run.run()
    msg = str(info.value)
    assert "stage 'student' recipe 'student'" in msg and "GPT2ForSequenceClassification" in msg and "bert" in msg
    assert not (tmp_path / "r" / "p" / "artifacts").exists()  # the teacher did not train


def test_seeds_run_per_seed_share_the_pinned_teacher_and_aggregate(tmp_path, monkeypatch):
    from workbench.pipeline.seeds import run_seeds

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    model = _tiny_dir(tmp_path, "tiny")
    spec = _spec(tmp_path, [
        {"name": "teacher", "seed": 0, "recipes": ["finetune"], "train": {"epochs": 2, "batch_size": 16, "lr": 2e-3}},
        {"name": "student", "recipes": [{"distill_logits": {"teacher": "teacher"}}], "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3}},
    ], str(model))
    rows = run_seeds(spec, [0, 1, 2], results_root=tmp_path / "r")
    folder = tmp_path / "r" / "p"
    teachers = [r for r in rows if r["stage"] == "teacher"]
    assert [r["seed"] for r in teachers] == [0, 1, 2]
    assert "reused_from" not in teachers[0] and all("reused_from" in r for r in teachers[1:])  # trained once
    assert len({r["accuracy"] for r in teachers}) == 1
    with open(folder / "seeds_summary.csv") as f:
        summary = {r["stage"]: r for r in csv.DictReader(f)}
    students = [r["accuracy"] for r in rows if r["stage"] == "student"]
    import statistics
    assert int(summary["student"]["n"]) == 3
    assert float(summary["student"]["mean_accuracy"]) == pytest.approx(statistics.fmean(students), abs=1e-5)
    assert float(summary["student"]["std_accuracy"]) == pytest.approx(statistics.stdev(students), abs=1e-5)
    assert float(summary["student"]["ci95_accuracy"]) == pytest.approx(4.302653 * statistics.stdev(students) / 3 ** 0.5, abs=1e-4)
    assert (folder / "seeds.csv").exists() and (folder / "accuracy_vs_throughput.png").exists()
    assert all((folder / f"seed-{s}" / "metrics.json").exists() for s in (0, 1, 2))


def test_a_structural_edit_reloads_in_a_fresh_process(tiny_bert, tmp_path):
    from workbench.models.edits import record_edit

    record_edit(tiny_bert, "ffn_neurons", layer=1, keep=[0, 3, 5, 9, 11])
    assert tiny_bert.bert.encoder.layer[1].intermediate.dense.out_features == 5
    assert tiny_bert.bert.encoder.layer[0].intermediate.dense.out_features == 64
    ids = torch.randint(1, 120, (2, 7))
    with torch.no_grad():
        before = tiny_bert(input_ids=ids).logits
    tiny_bert.save_pretrained(tmp_path / "m")
    torch.save(ids, tmp_path / "ids.pt")
    code = ("import sys, torch; from workbench.models.edits import load_edited_model; "
            "m = load_edited_model(sys.argv[1]); ids = torch.load(sys.argv[2]); "
            "print(m.bert.encoder.layer[1].intermediate.dense.out_features); "
            "torch.save(m(input_ids=ids).logits.detach(), sys.argv[3])")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m"), str(tmp_path / "ids.pt"), str(tmp_path / "o.pt")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "5"
    assert torch.allclose(torch.load(tmp_path / "o.pt"), before, atol=1e-6)


def test_the_orchestrator_names_no_recipe():
    root = Path(__file__).resolve().parents[1] / "workbench" / "pipeline"
    from workbench.recipes.base import RECIPES

    text = "\n".join(f.read_text() for f in sorted(root.glob("*.py")))
    # compare.py's "student" is a results column (the <student>.<method> stage names), not the recipe
    runs = "\n".join(f.read_text() for f in sorted(root.glob("*.py")) if f.name != "compare.py")
    named = [n for n in RECIPES if not n.startswith("test_") and (f'"{n}"' in runs or f"'{n}'" in runs)]
    assert not named, named
    imported = sorted(set(re.findall(r"workbench\.recipes\.(?!base\b)[\w.]+", text)))
    assert not imported, f"the orchestrator imports recipe modules: {imported}"


def test_plugins_key_imports_user_recipes(tmp_path, monkeypatch):
    (tmp_path / "my_recipes_plugin.py").write_text(
        "from dataclasses import dataclass\n"
        "from workbench.recipes import Recipe, register_recipe\n"
        "@dataclass\nclass C:\n    scale: float = 1.0\n"
        "@register_recipe('plugin_noop')\nclass P(Recipe):\n    Config = C\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = PipelineSpec.from_dict({"task": "rt-sentiment", "model": "minilm-l6", "plugins": ["my_recipes_plugin"],
                                   "stages": [{"name": "a", "recipes": [{"plugin_noop": {"scale": 2.0}}]}]})
    assert spec.stages[0].recipes[0][0] == "plugin_noop"
    with pytest.raises(ConfigError, match="no_such_plugin_module"):
        PipelineSpec.from_dict({"task": "rt-sentiment", "model": "minilm-l6", "plugins": ["no_such_plugin_module"],
                                "stages": [{"name": "a", "recipes": ["finetune"]}]})


def test_forward_with_gives_only_what_is_needed_and_attentions_match_eager():
    from transformers import BertConfig, BertForSequenceClassification

    from workbench.forward import forward_with

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=64, num_labels=2, attn_implementation="eager")
    model = BertForSequenceClassification(cfg).eval()
    ids = torch.randint(1, 120, (2, 6))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1]), "text": ["a", "b"]}
    plain = forward_with(model, batch, set())
    assert plain.hidden_states is None and plain.attentions is None and plain.qkv == {}
    out = forward_with(model, batch, {"attentions", "hidden_states", "qkv"})
    ref = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    assert len(out.hidden_states) == 3 and set(out.qkv) == {0, 1} and out.qkv[0][0].shape == (2, 6, 32)
    for a, r in zip(out.attentions, ref.attentions):
        assert torch.allclose(a, r, atol=1e-6)


def test_a_checkpoint_of_another_stage_definition_is_not_resumed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    model = _tiny_dir(tmp_path, "tiny")
    spec = _spec(tmp_path, [{"name": "teacher", "recipes": ["finetune"], "train": {"epochs": 1, "batch_size": 16}}], str(model))
    stale = tmp_path / "r" / "p" / "checkpoints" / "teacher"
    stale.mkdir(parents=True)
    (stale / "stage_key.txt").write_text("an-older-definition\n")
    (stale / "last.pt").write_bytes(b"not a checkpoint of this stage")
    metrics = PipelineRun(spec, results_root=tmp_path / "r").run()
    assert "belongs to an earlier definition of the stage; starting the stage over" in capsys.readouterr().out
    assert metrics[0]["history"]


def test_show_prints_the_spread_of_a_seeds_run(tmp_path, capsys):
    from workbench.cli import main
    from workbench.results import write_csv

    write_csv(tmp_path / "run" / "seeds_summary.csv", [
        {"stage": "student", "n": 3, "mean_accuracy": 0.81, "std_accuracy": 0.012, "ci95_accuracy": 0.03,
         "mean_macro_f1": 0.8, "std_macro_f1": 0.01, "mean_throughput_b1": 50.0, "std_throughput_b1": 2.0}])
    assert main(["show", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "3 seeds" in out and "0.8100 ± 0.0120" in out and "50.0 ± 2.0" in out


def test_sibling_stages_have_independent_keys_and_shared_seeds(tmp_path, monkeypatch):
    """In a method comparison (stages `from: teacher`), a stage's key and seed depend on its own
    chain only: adding a sibling changes nothing else, and siblings share data order and init."""
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    model = _tiny_dir(tmp_path, "tiny")
    a = {"name": "a", "from": "teacher", "recipes": [{"distill_logits": {"teacher": "teacher"}}], "train": {"epochs": 1}}
    b = {"name": "b", "from": "teacher", "recipes": ["finetune"], "train": {"epochs": 1}}
    teacher = {"name": "teacher", "recipes": ["finetune"], "train": {"epochs": 1}}
    one, two = (PipelineRun(_spec(tmp_path, stages, str(model)), results_root=tmp_path / "r")
                for stages in ([teacher, a], [teacher, b, a]))
    for run in (one, two):
        run._prepare()
    assert one._stage_key(1) == two._stage_key(2)  # a's key ignores its sibling b
    assert two._stage_seed(1) == two._stage_seed(2) == 1 and two._stage_seed(0) == 0
    changed = PipelineRun(_spec(tmp_path, [{**teacher, "train": {"epochs": 2}}, a], str(model)), results_root=tmp_path / "r")
    changed._prepare()
    assert changed._stage_key(1) != one._stage_key(1)  # ...but follows its teacher


@pytest.mark.parametrize("recipe", [
    {"magnitude_prune": {"sparsity": 0.5, "targets": ["re:.*no_such_module.*"]}},
    {"structured_prune": {"heads": 0.25, "targets": ["bert.encoder.layer.9.attention"]}},
])
def test_targets_matching_nothing_fail_before_any_stage_runs(tmp_path, recipe, capsys):
    """A typo in a later stage's `targets` fails at the start, not after the teacher trained."""
    spec = _spec(tmp_path, [
        {"name": "teacher", "recipes": ["finetune"], "train": {"epochs": 1, "max_steps": 2, "batch_size": 8}},
        {"name": "pruned", "from": "teacher", "recipes": [recipe]},
    ], model=str(_tiny_dir(tmp_path, "tiny")))
    with pytest.raises(ConfigError, match=r"stage 'pruned' recipe '.*': 'targets' entry .* matches no"):
        PipelineRun(spec, results_root=tmp_path / "res").run()
    assert "stage 1/2" not in capsys.readouterr().out
    assert not (tmp_path / "res" / "p" / "artifacts" / "teacher").exists()
