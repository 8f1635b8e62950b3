"""Bad recipes fail before any work starts, with a message naming the stage and the key."""
from __future__ import annotations

from pathlib import Path

import pytest

from workbench.config import ConfigError
from workbench.pipeline import PipelineSpec


def spec(**stage_overrides):
    stages = stage_overrides.pop("stages", None) or [
        {"name": "teacher", "recipes": ["finetune"], "train": {"epochs": 1}},
        {"name": "pruned", "recipes": [{"magnitude_prune": {"sparsity": 0.8}}]},
    ]
    return {"name": "t", "task": "rt-sentiment", "model": "minilm-l6", "stages": stages, **stage_overrides}


def test_valid_spec_round_trips():
    s = PipelineSpec.from_dict(spec())
    again = PipelineSpec.from_dict(s.to_dict())
    assert again.to_dict() == s.to_dict()
    assert s.stages[1].recipes[0][1].block == (1, 4)  # defaults filled in


@pytest.mark.parametrize("stages, message", [
    ([{"name": "a", "recipes": [{"magnitude_prune": {"sparsity": 0.8, "blok": [1, 4]}}]}],
     "stage 'a' recipe 'magnitude_prune': 'blok' is not a known setting; did you mean 'block'?"),
    ([{"name": "a", "recipes": [{"magnitude_prune": {"sparsity": "high"}}]}],
     "stage 'a' recipe 'magnitude_prune': 'sparsity' must be a number, got 'high'"),
    ([{"name": "a", "recipes": [{"magnitude_prune": {"sparsity": 1.5}}]}],
     "'sparsity' must be in [0, 1), got 1.5"),
    ([{"name": "a", "recipes": [{"magnitude_prune": {"sparsity": 0.5, "block": [1, 4, 2]}}]}],
     "'block' must have 2 items"),
    ([{"name": "a", "recipes": [{"magnitude_prune": {"sparsity": 0.5, "schedule": "linear"}}]}],
     "'schedule' must be one of ['oneshot', 'cubic']"),
    ([{"name": "a", "recipes": ["finetun"]}], "stage 'a': unknown recipe 'finetun'; did you mean 'finetune'?"),
    ([{"name": "a", "recipes": ["finetune"], "train": {"lr": -1}}], "stage 'a' train: 'lr' must be in (0, 1)"),
    ([{"name": "a", "recipes": ["finetune"], "train": {"epochs": 1.5}}], "'epochs' must be an integer"),
    ([{"name": "a", "recipes": [{"distill_logits": {"teacher": "nobody"}}]}],
     "'teacher' must name an earlier stage"),
    ([{"name": "a", "recipes": ["dynamic_int8"], "train": {"epochs": 1}}],
     "stage 'a': 'train' is set but no recipe trains"),
    ([{"name": "a", "recipes": [{"magnitude_prune": {"sparsity": 0.5, "schedule": "cubic"}}]}],
     "acts during training, which needs a loss"),
    ([{"name": "a", "recipes": ["finetune"]}, {"name": "a", "recipes": ["finetune"]}],
     "stage 'a': 'name' is used by two stages"),
    ([{"name": "a", "from": "later", "recipes": ["finetune"]}], "stage 'a': 'from' must name an earlier stage"),
    ([{"name": "a", "recipes": [{"student": {"layers": [0, 0]}}]}], "'layers' has repeated indices"),
    ([{"name": "a", "recipes": ["finetune"], "trian": {}}], "stage 'a': 'trian' is not a known setting; did you mean 'train'?"),
    # two recipes naming one loss term: the trainer found it at the stage's first step, after the
    # earlier stages trained
    ([{"name": "a", "recipes": ["finetune"], "train": {}},
      {"name": "b", "recipes": ["finetune", {"distill_logits": {"teacher": "a", "alpha": 0.5}}], "train": {}}],
     "stage 'b': 'recipes' 'finetune' and 'distill_logits' both contribute the loss term 'ce'; keep one of them "
     "(a distillation recipe's alpha below 1 adds a label cross-entropy 'ce' of its own"),
    ([{"name": "a", "recipes": ["finetune", "finetune"], "train": {}}], "both contribute the loss term 'ce'"),
    ([{"name": "a", "recipes": ["finetune"], "train": {}},  # (the weights were ignored)
      {"name": "b", "recipes": [{"distill_logits": {"teacher": "a", "alpha": 1.0, "class_weights": "balanced"}}],
       "train": {}}], "'class_weights' is set ('balanced') but they weigh the label term 'ce', which alpha: 1 leaves out"),
    # settings the rest of the config makes unused (they did nothing, silently)
    ([{"name": "a", "recipes": [{"magnitude_prune": {"sparsity": 0.5, "frequency": 5}}]}],
     "'frequency' is set (5) but schedule: oneshot prunes once, before training"),
    ([{"name": "a", "recipes": [{"structured_prune": {"heads": 0.5, "end": 0.5}}]}],
     "'end' is set (0.5) but schedule: oneshot removes once, before training"),
    ([{"name": "a", "recipes": [{"static_int8": {"percentile": 99.9}}]}],
     "'percentile' is set (99.9) but observer 'minmax' does not read it"),
])
def test_bad_stage_settings_are_named(stages, message):
    with pytest.raises(ConfigError) as info:
        PipelineSpec.from_dict(spec(stages=stages))
    assert message in str(info.value)


def test_bad_pipeline_keys_are_named(tmp_path):
    with pytest.raises(ConfigError, match="'modle' is not a known setting; did you mean 'model'"):
        PipelineSpec.from_dict({**spec(), "modle": "x"})
    with pytest.raises(ConfigError, match="pipeline eval: 'speed_batches' must be a list"):
        PipelineSpec.from_dict({**spec(), "eval": {"speed_batches": 8}})
    # each of these failed with a traceback: NumPy's seeding, range() in the evaluation after
    # training; a negative weight decay trained (it pushes weights up)
    with pytest.raises(ConfigError, match="pipeline: 'seed' must be an integer >= 0"):
        PipelineSpec.from_dict({**spec(), "seed": -5})
    with pytest.raises(ConfigError, match="'plugins' must be a list of module names, got 0"):  # (read as none)
        PipelineSpec.from_dict({**spec(), "plugins": 0})
    with pytest.raises(ConfigError, match="pipeline eval: 'batch_size' must be >= 1, got 0"):
        PipelineSpec.from_dict({**spec(), "eval": {"batch_size": 0}})
    with pytest.raises(ConfigError, match="train: 'weight_decay' must be >= 0"):
        PipelineSpec.from_dict(spec(stages=[{"name": "a", "recipes": ["finetune"], "train": {"weight_decay": -1}}]))
    with pytest.raises(ConfigError, match="does not exist"):
        PipelineSpec.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        PipelineSpec.from_yaml(bad)


def test_cli_reports_errors_before_work(tmp_path, capsys):
    from workbench.cli import main

    bad = tmp_path / "r.yaml"
    bad.write_text("task: rt-sentiment\nmodel: minilm-l6\nstages:\n  - name: p\n    recipes:\n"
                   "      - magnitude_prune: {sparsity: 0.9, block: [1, 0]}\n")
    assert main(["run", str(bad), "--results", str(tmp_path)]) == 2
    assert "stage 'p' recipe 'magnitude_prune': 'block' must be two positive sizes" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing started


def test_a_command_whose_module_does_not_import_says_why_instead_of_vanishing(monkeypatch, capsys):
    # it was left out of the parser, so `workbench sweep` answered "invalid choice: 'sweep'"
    import sys

    from workbench.cli import main

    monkeypatch.setitem(sys.modules, "workbench.sweep.cli", None)  # its import now fails
    assert main(["sweep", "s.yaml", "--trials", "3"]) == 2
    err = capsys.readouterr().err
    assert "workbench sweep: error: it cannot run here, as a module it needs does not import" in err
    assert "workbench.sweep.cli" in err and "make setup" in err


@pytest.mark.parametrize("command", ["run", "degrade"])
@pytest.mark.parametrize("seeds, expected", [("", "at least one seed"), (" , ", "at least one seed"),
                                             ("0,x", "comma-separated list of integers"), ("1,1", "distinct"),
                                             ("-1,0", "distinct integers >= 0")])
def test_cli_bad_seeds_fail_before_work(tmp_path, capsys, command, seeds, expected):
    from workbench.cli import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: rt-sentiment\nmodel: minilm-l6\nstages:\n  - name: p\n    recipes: [finetune]\n")
    assert main([command, str(recipe), f"--seeds={seeds}", "--quick", "--results", str(tmp_path / "out")]) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing started


@pytest.mark.parametrize("flags", [[], ["--structural"], ["--quantization"], ["--dynamic"], ["--teachers"]])
def test_cli_compare_of_a_missing_run_says_so(tmp_path, capsys, flags):
    from workbench.cli import main

    assert main(["compare", str(tmp_path / "nope"), *flags]) == 2
    assert f"no run at '{tmp_path / 'nope'}'" in capsys.readouterr().err


def test_unknown_model_fails_clearly(tmp_path):
    from workbench.models import ModelNotFound, load_model

    with pytest.raises(ModelNotFound, match="offline by default"):
        load_model("no-such-org/no-such-model", num_labels=2)
    with pytest.raises(ModelNotFound, match="does not exist"):
        load_model("./no/such/dir", num_labels=2)
    (tmp_path / "m").mkdir()
    with pytest.raises(ModelNotFound, match="has no config.json"):
        load_model(str(tmp_path / "m"), num_labels=2)


def test_inference_only_recipe_in_a_training_stage_is_refused():
    from workbench.pipeline import PipelineSpec

    with pytest.raises(ConfigError, match="'dynamic_int8' gives an inference-only model"):
        PipelineSpec.from_dict({"task": "rt-sentiment", "model": "minilm-l6",
                                "stages": [{"name": "a", "recipes": ["finetune", "dynamic_int8"]}]})


def test_a_stage_built_on_a_quantized_or_compiled_model_cannot_train_or_edit_it():
    # it failed inside the optimizer ("empty parameter list") or the recipe, after the earlier
    # stages trained; now when the recipe is read
    from workbench.pipeline import PipelineSpec

    def spec(*stages):
        return PipelineSpec.from_dict({"task": "rt-sentiment", "model": "minilm-l6", "stages": [
            {"name": "ft", "recipes": ["finetune"], "train": {"epochs": 1}},
            {"name": "q", "recipes": ["dynamic_int8"]}, {"name": "rt", "from": "ft", "recipes": ["workbench_runtime"]},
            *stages]})

    with pytest.raises(ConfigError, match="stage 'x' trains, but its model comes from stage 'rt', whose "
                                          "'workbench_runtime' made it inference-only"):
        spec({"name": "x", "recipes": ["finetune"], "train": {"epochs": 1}})
    with pytest.raises(ConfigError, match="stage 'y' runs 'magnitude_prune', but its model comes from stage 'x'"):
        spec({"name": "x", "from": "q", "recipes": ["workbench_runtime"]},
             {"name": "y", "recipes": [{"magnitude_prune": {"sparsity": 0.5}}]})
    # inference-only recipes on it, and training from the float stage, are fine
    spec({"name": "x", "from": "q", "recipes": ["workbench_runtime"]},
         {"name": "y", "from": "ft", "recipes": ["finetune"], "train": {"epochs": 1}})


@pytest.mark.parametrize("recipe, teacher, reads", [
    ({"distill_layers": {"teacher": "rt"}}, "rt", "attention maps, hidden states and layer layout"),
    ({"distill_layers": {"teacher": "rt2", "hidden": False, "attention": False, "embeddings": False,
                        "prediction": True}}, "rt2",
     "layer layout"),
    ({"distill_relations": {"teacher": "rt"}}, "rt", "layer layout and queries and keys"),
    ({"distill_multihead": {"teacher": "rt"}}, "rt", "hidden states and layer layout"),
    ({"distill_multi_teacher": {"teachers": ["ft", {"name": "rt", "target": "features"}]}}, "rt", "hidden states"),
    ({"distill_unic": {"teachers": ["ft", {"name": "rt2", "target": "features"}]}}, "rt2", "hidden states"),
    ({"augment": {"teacher": "rt"}}, "rt", "word embeddings"),
    ({"distill_multi_teacher": {"teachers": ["ft", "rt"], "weighting": "similarity"}}, "rt", "hidden states"),
])
def test_a_compiled_teacher_gives_logits_only_and_a_recipe_reading_more_is_refused_first(recipe, teacher, reads):
    # it failed when the student's stage started, after the earlier stages trained, saying the
    # compiled model was not a supported encoder family
    from workbench.pipeline import PipelineSpec

    def spec(student):
        extra = [{"distill_logits": {"teacher": "ft"}}] if "augment" in student else []  # (augment adds no loss)
        return PipelineSpec.from_dict({"task": "rt-sentiment", "model": "minilm-l6", "stages": [
            {"name": "ft", "recipes": ["finetune"], "train": {"epochs": 1}},
            {"name": "rt", "recipes": ["workbench_runtime"]}, {"name": "rt2", "from": "rt", "recipes": ["dynamic_int8"]},
            {"name": "st", "from": "ft", "recipes": [student] + extra, "train": {"epochs": 1}}]})

    with pytest.raises(ConfigError, match=f"stage 'st' recipe '{next(iter(recipe))}': teacher '{teacher}' gives "
                                          f"logits only \\(stage 'rt' compiles it with 'workbench_runtime'\\), and "
                                          f"this recipe reads its {reads}; name stage 'ft' instead"):
        spec(recipe)
    # logits alone from it are fine, as is reading everything from the float stage
    spec({"distill_logits": {"teacher": "rt"}})
    spec({"distill_multi_teacher": {"teachers": ["rt", {"name": "ft", "target": "features"}]}})
    spec({"distill_layers": {"teacher": "ft"}})


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_recipe_file_validates(path):
    from workbench.pipeline import PipelineSpec

    spec = PipelineSpec.from_yaml(path)
    assert spec.stages


def test_run_folder_is_a_folder_or_a_name_under_results(tmp_path, monkeypatch):
    from workbench.paths import run_folder

    monkeypatch.setenv("WORKBENCH_RESULTS", str(tmp_path / "results"))
    (tmp_path / "results" / "demo").mkdir(parents=True)
    assert run_folder(tmp_path / "results" / "demo") == tmp_path / "results" / "demo"
    assert run_folder("demo") == tmp_path / "results" / "demo"
    for missing in ("nope", str(tmp_path / "nope"), "/demo"):   # an absolute path is not a name
        with pytest.raises(ConfigError, match=f"no run at '{missing}' \\(neither a folder nor a run name under"):
            run_folder(missing)


@pytest.mark.parametrize("where, block", [
    ("recipe 'magnitude_prune'", "stages:\n  - name: s\n    recipes:\n      - magnitude_prune: 0.5\n"),
    ("train", "stages:\n  - name: s\n    recipes: [finetune]\n    train: [1]\n"),
    ("pipeline eval", "eval: 3\nstages:\n  - name: s\n    recipes: [finetune]\n"),
    ("pipeline task", "stages:\n  - name: s\n    recipes: [finetune]\n"),
])
def test_settings_that_are_not_a_mapping_are_named(tmp_path, where, block):
    from workbench.pipeline import PipelineSpec

    task = "task: [rt-sentiment]\n" if where == "pipeline task" else "task: rt-sentiment\n"
    path = tmp_path / "r.yaml"
    path.write_text(task + "model: minilm-l6\n" + block)
    with pytest.raises(ConfigError, match=f"{where}: settings must be a mapping of setting: value, got"):
        PipelineSpec.from_yaml(path)


@pytest.mark.parametrize("args, message", [
    (["run", "recipes/demo.yaml", "--results", "{f}"], "--results '{f}' is a file; give a folder"),
    (["sweep", "sweeps/demo_sweep.yaml", "--results", "{f}/sub"], "--results '{f}/sub' lies under the file '{f}'"),
    (["bench", "--out", "{f}"], "--out '{f}' is a file; give a folder"),
    (["run", "recipes/demo.yaml", "--name", "a/b"], "--name must be a non-empty name without '/'"),
    (["sweep", "sweeps/demo_sweep.yaml", "--name", ".."], "--name must be a non-empty name without '/'"),
    (["export", "nowhere", "--format", "onnx", "--out", "{f}/x.onnx"], "lies under the file '{f}'; give a path in a folder"),
])
def test_an_output_path_on_a_file_or_a_name_with_a_slash_fails_first_naming_the_flag(tmp_path, capsys, args, message):
    # `run --results <file>` loaded and tokenized the task, then raised NotADirectoryError
    from workbench.cli import main

    f = tmp_path / "notes.txt"
    f.write_text("x")
    assert main([a.replace("{f}", str(f)) for a in args]) == 2
    assert message.replace("{f}", str(f)) in capsys.readouterr().err


def test_every_loss_weight_refuses_a_negative_value():
    """A negative loss weight trains against its term (early_exit's and length_adaptive's took
    one silently): every recipe's `weight` / `*_weight` setting is checked."""
    import dataclasses

    import workbench.runtime  # noqa: F401  (registers workbench_runtime)
    from workbench.pipeline import PipelineSpec
    from workbench.recipes.base import RECIPES

    needs = {"gradient_free_prune": {"flops": 0.5}, "movement_prune": {"method": "soft", "l1_weight": 1.0}}

    def pipeline(name: str, settings: dict) -> PipelineSpec:
        cls = RECIPES[name]
        settings = {**needs.get(name, {}), **({"teacher": "t"} if "teacher" in {
            f.name for f in dataclasses.fields(cls.Config)} else {}), **settings}
        stage = {"name": "s", "recipes": [{name: settings}]}
        if not cls.inference_only:  # with finetune's loss, unless the recipe has a cross-entropy of its own
            alone = name == "finetune" or "ce" in cls.loss_term_names(cls.Config(**settings))
            stage.update(recipes=[{name: settings}] if alone else ["finetune", {name: settings}], train={"epochs": 1})
        return PipelineSpec.from_dict({"task": "rt-sentiment", "model": "minilm-l6", "stages": [
            {"name": "t", "recipes": ["finetune"], "train": {"epochs": 1}}, stage]})

    checked = []
    for name, cls in sorted(RECIPES.items()):
        if not dataclasses.is_dataclass(cls.Config) or not cls.__module__.startswith("workbench."):
            continue  # (other tests register recipes of their own)
        for f in dataclasses.fields(cls.Config):
            if f.name in ("weight", "self_distill") or f.name.endswith("_weight"):
                pipeline(name, {})  # valid without the negative weight
                with pytest.raises(ConfigError, match=f"'{f.name}' must be"):
                    pipeline(name, {f.name: -1.0})
                checked.append(f"{name}.{f.name}")
    assert {"early_exit.ce_weight", "early_exit.teacher_weight", "length_adaptive.weight"} <= set(checked)


@pytest.mark.parametrize("name, bad, fine, message", [
    ("distill_layers", {"layer_map": {1: 5}}, {"layer_map": {1: 4}},
     "'layer_map\\[1\\]' names layer 5, but teacher 'ft' \\(a stage\\) has 4 layers"),
    ("distill_layers", {"layer_map": {3: 1}}, {"layer_map": {0: 0, 2: 4}},
     "'layer_map\\[3\\]' names layer 3, but this stage's model has 2 layers"),
    ("distill_relations", {"student_layer": -3, "relation_heads": 4}, {"student_layer": -2, "relation_heads": 4},
     "'student_layer' names layer -3, but this stage's model has 2 layers"),
    ("distill_relations", {"teacher_layer": 6, "relation_heads": 4}, {"teacher_layer": 4, "relation_heads": 4},
     "'teacher_layer' names layer 6, but teacher 'ft' \\(a stage\\) has 4 layers"),
    ("distill_multihead", {"teacher_layers": [2, 9]}, {"teacher_layers": [2, -4]},
     "'teacher_layers' names layer 9, but teacher 'ft'"),
])
def test_layer_numbers_past_the_depth_a_stage_will_have_fail_before_any_stage(tiny_bert, tmp_path, name, bad, fine,
                                                                             message):
    # they failed when the distilling stage started, after the stages before it trained: the
    # depths are known from the starting model (4 layers here) and the students (2 layers)
    from workbench.pipeline.checks import check_model

    def spec(settings, teacher="ft"):
        return PipelineSpec.from_dict({"task": "rt-sentiment", "model": "minilm-l6", "stages": [
            {"name": "ft", "recipes": ["finetune"], "train": {"epochs": 1}},
            {"name": "st", "recipes": [{"student": {"layers": [0, 1]}}, {name: {"teacher": teacher, **settings}}],
             "train": {"epochs": 1}}]})

    with pytest.raises(ConfigError, match=f"stage 'st' recipe '{name}': {message}"):
        check_model(spec(bad), tiny_bert)
    check_model(spec(fine), tiny_bert)  # within the depths: fine
    if "teacher 'ft'" in message:  # a teacher given by path has a depth of its own: left to the recipe
        (tmp_path / "config.json").write_text("{}")
        check_model(spec(bad, teacher=str(tmp_path)), tiny_bert)


def test_relation_heads_that_do_not_divide_a_width_known_in_advance_fail_before_any_stage(tiny_bert):
    """MiniLMv2's relation heads split both sides' query/key/value widths: the starting model's
    (32 here), a random student's `hidden_size` (24), followed through the stages. Pruning that
    removes heads leaves the width to the recipe's own check when its stage starts."""
    from workbench.pipeline.checks import check_model

    def spec(relation_heads, prune=None):
        student = {"student": {"init": "random", "num_layers": 2, "hidden_size": 24, "num_attention_heads": 4}}
        return PipelineSpec.from_dict({"task": "rt-sentiment", "model": "minilm-l6", "stages": [
            {"name": "ft", "recipes": ["finetune", *([prune] if prune else [])], "train": {"epochs": 1}},
            {"name": "st", "recipes": [student, {"distill_relations": {"teacher": "ft", "relation_heads": relation_heads}}],
             "train": {"epochs": 1}}]})

    where = "stage 'st' recipe 'distill_relations': 'relation_heads'"
    with pytest.raises(ConfigError, match=f"{where} 5 must divide the student's query/key/value width 24"):
        check_model(spec(5), tiny_bert)
    with pytest.raises(ConfigError, match=f"{where} 3 must divide teacher 'ft''s query/key/value width 32"):
        check_model(spec(3), tiny_bert)
    check_model(spec(4), tiny_bert)  # divides 24 and 32
    with pytest.raises(ConfigError, match=f"{where} 3 must divide teacher"):  # FFN neurons only: widths kept
        check_model(spec(3, {"structured_prune": {"neurons": 0.5}}), tiny_bert)
    check_model(spec(3, {"structured_prune": {"heads": 0.25}}), tiny_bert)  # heads per layer: unknown here


@pytest.mark.parametrize("bad, fine, message", [
    ({"recipes": [{"student": {"layers": [0, 3]}}, {"distill_logits": {"teacher": "st"}}]},
     {"from": "ft", "recipes": [{"student": {"layers": [0, 3]}}, {"distill_logits": {"teacher": "st"}}]},
     "recipe 'student': 'layers' \\[3\\] out of range: the teacher has 2 layers"),
    ({"recipes": ["finetune", {"early_exit": {"exit_layers": [1]}}]},
     {"from": "ft", "recipes": ["finetune", {"early_exit": {"exit_layers": [1]}}]},
     "recipe 'early_exit': 'exit_layers' \\[1\\] out of range: the model has 2 layers"),
    ({"from": "ft", "recipes": [{"student": {"num_layers": 3, "init": "random"}},
                                {"distill_layers": {"teacher": "st", "layer_map": {3: 3}}}]},
     {"from": "ft", "recipes": [{"student": {"num_layers": 3, "init": "random"}},
                                {"distill_layers": {"teacher": "ft", "layer_map": {3: 3}}}]},
     "recipe 'distill_layers': 'layer_map\\[3\\]' names layer 3, but teacher 'st' \\(a stage\\) has 2 layers"),
])
def test_a_students_depth_carries_to_the_stages_built_on_it(tiny_bert, bad, fine, message):
    # the 4-layer model's stages: ft 4 layers, st 2 (a student), the last stage as built
    from workbench.pipeline.checks import check_model

    def spec(last):
        return PipelineSpec.from_dict({"task": "rt-sentiment", "model": "minilm-l6", "stages": [
            {"name": "ft", "recipes": ["finetune"], "train": {"epochs": 1}},
            {"name": "st", "recipes": [{"student": {"layers": [0, 2]}}, {"distill_logits": {"teacher": "ft"}}],
             "train": {"epochs": 1}},
            {"name": "last", "train": {"epochs": 1}, **last}]})

    with pytest.raises(ConfigError, match=f"stage 'last' {message}"):
        check_model(spec(bad), tiny_bert)
    check_model(spec(fine), tiny_bert)  # built on, or taught by, the 4-layer stage: fine
