"""Checks of a pipeline's recipes that fail before any work, with a `ConfigError` naming the
stage and recipe: settings that depend on the task, on the starting model's modules or on its
architecture, and a stage's teachers sharing its vocabulary. `PipelineRun` calls them."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from workbench.config import ConfigError
from workbench.data import Task
from workbench.pipeline.spec import PipelineSpec, StageSpec

if TYPE_CHECKING:
    from workbench.pipeline.run import StageData


def check_teachers(stage: StageSpec, recipes: list[Any], data: StageData, stage_data: dict[str, StageData],
                   pipeline_tokenizer: Any) -> None:
    """A teacher stage reads the student's batches token by token, so a stage and its teacher
    stages must share a tokenizer; a trimmed stage cannot use a model-name teacher either (the
    teacher service compares against the pipeline's tokenizer)."""
    for r in recipes:
        for name in type(r).teacher_names(r.config):
            other = stage_data.get(name)
            if other is None and data.tokenizer is pipeline_tokenizer:
                continue
            if other is not None and (other.tokenizer is data.tokenizer
                                      or other.tokenizer.get_vocab() == data.tokenizer.get_vocab()):
                continue
            raise ConfigError(f"stage '{stage.name}' recipe '{r.name}': teacher '{name}' and this stage have "
                              "different vocabularies (trim_vocab); trim the vocabulary after distilling, "
                              "or distil from a stage with the same trimmed vocabulary")


def lineage_marks(spec: PipelineSpec, flag: str) -> list[tuple[str, str] | None]:
    """Per stage: (stage, recipe) of the nearest recipe whose class sets `flag` (a `Recipe`
    class attribute such as `frozen_result`), in the stage itself or a stage it descends from
    (`PipelineSpec.source_index`); None where no such recipe came before."""
    from workbench.recipes.base import recipe_class

    marks: list[tuple[str, str] | None] = []
    for i, stage in enumerate(spec.stages):
        own = next((n for n, _ in stage.recipes if getattr(recipe_class(n, stage.name), flag)), None)
        source = spec.source_index(i)
        marks.append((stage.name, own) if own else None if source is None else marks[source])
    return marks


def check_frozen_sources(spec: PipelineSpec) -> None:
    """A stage built on a quantized or compiled model (`Recipe.frozen_result`, in that stage or
    one it descends from) can neither train nor run a recipe that edits a float model: it failed
    inside the optimizer ("empty parameter list") or the recipe, after the earlier stages trained."""
    from workbench.recipes.base import recipe_class

    frozen_at = lineage_marks(spec, "frozen_result")
    for i, stage in enumerate(spec.stages):
        source = spec.source_index(i)
        inherited = None if source is None else frozen_at[source]
        if inherited is not None:
            edits = [n for n, _ in stage.recipes if not recipe_class(n, stage.name).inference_only]
            if stage.trains or edits:
                what = "trains" if stage.trains else f"runs '{edits[0]}'"
                raise ConfigError(
                    f"stage '{stage.name}' {what}, but its model comes from stage '{inherited[0]}', whose "
                    f"'{inherited[1]}' made it inference-only (quantized or compiled); build the stage from an "
                    f"earlier stage (from: <name>) and quantize or compile last")


READ_NAMES = {"hidden_states": "hidden states", "attentions": "attention maps", "qkv": "queries and keys",
              "layers": "layer layout", "embeddings": "word embeddings"}


def check_compiled_teachers(spec: PipelineSpec) -> None:
    """A compiled stage (`Recipe.logits_only_result`, in it or a stage it descends from) gives
    logits only: a recipe that reads more from it as a teacher (`Recipe.teacher_reads`: hidden
    states, attentions, its layers) failed when its stage started, after the earlier stages
    trained, with an error about the model family."""
    from workbench.recipes.base import recipe_class

    compiled_at = lineage_marks(spec, "logits_only_result")
    index = {stage.name: i for i, stage in enumerate(spec.stages)}
    for i, stage in enumerate(spec.stages):
        for rname, config in stage.recipes:
            for teacher, reads in recipe_class(rname, stage.name).teacher_reads(config).items():
                compiled = compiled_at[index[teacher]] if teacher in index and index[teacher] < i else None
                if not compiled or not reads:
                    continue
                origin = spec.source_index(index[compiled[0]])
                instead = f"stage '{spec.stages[origin].name}'" if origin is not None else f"model '{spec.model}'"
                names = [READ_NAMES.get(r, r) for r in sorted(reads)]
                what = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
                raise ConfigError(f"stage '{stage.name}' recipe '{rname}': teacher '{teacher}' gives logits only "
                                  f"(stage '{compiled[0]}' compiles it with '{compiled[1]}'), and this recipe reads "
                                  f"its {what}; name {instead} instead, the float model it was compiled from (a "
                                  "compiled teacher serves logit distillation only)")


def check_teacher_vocabularies(spec: PipelineSpec) -> None:
    """`check_teachers`' rule where the recipe alone decides it, before any stage trains: a
    stage whose vocabulary was trimmed (by it or a stage it descends from) cannot distil from a
    model-name teacher or from a stage with the untrimmed vocabulary, nor the other way round.
    (Two different trims may give the same vocabulary: that case is left to `check_teachers`.)"""
    from workbench.recipes.base import recipe_class

    # stage -> the stage whose trim_vocab gave it its vocabulary (None: the pipeline's)
    trimmed_at = {stage.name: mark and mark[0]
                  for stage, mark in zip(spec.stages, lineage_marks(spec, "replaces_vocabulary"))}
    for stage in spec.stages:
        for rname, config in stage.recipes:
            for teacher in recipe_class(rname, stage.name).teacher_names(config):
                mine = trimmed_at[stage.name]
                theirs = trimmed_at.get(teacher)  # None: the untrimmed vocabulary (or a model name)
                if (mine is None) == (theirs is None):
                    continue
                trimmed = mine or theirs
                raise ConfigError(f"stage '{stage.name}' recipe '{rname}': teacher '{teacher}' and this stage have "
                                  f"different vocabularies (stage '{trimmed}' trims it: trim_vocab); trim the "
                                  "vocabulary after distilling, or distil from a stage with the same trimmed vocabulary")


def check_task(spec: PipelineSpec, task: Task) -> None:
    """Settings that depend on the task (e.g. one class weight per class): checked by each
    recipe (`Recipe.check_task`) once the task is loaded, before any work."""
    from workbench.recipes.base import recipe_class

    for stage in spec.stages:
        for rname, config in stage.recipes:
            where = f"stage '{stage.name}' recipe '{rname}'"
            recipe_class(rname, where).check_task(config, task, where)


def check_model(spec: PipelineSpec, model: nn.Module) -> None:
    """Settings that name the model's modules (`targets`): checked by each recipe
    (`Recipe.check_model`) against the starting model, before any work; then, when a recipe
    reads the model's layout, the settings sized by depth or attention width against those each
    stage will have (`Recipe.check_shapes` with `Shapes`)."""
    from workbench.recipes.base import Shapes, recipe_class

    for stage in spec.stages:
        for rname, config in stage.recipes:
            where = f"stage '{stage.name}' recipe '{rname}'"
            recipe_class(rname, where).check_model(config, model, where)
    if not any(recipe_class(n, s.name).uses_architecture for s in spec.stages for n, _ in s.recipes):
        return  # (the model's family may then be one the adapter does not know)
    from workbench.models.arch import architecture

    arch = architecture(model, f"pipeline model '{spec.model}'")
    start = arch.num_layers
    qkv = {int(arch.module(i, "query").out_features) for i in range(start)}
    start_width = qkv.pop() if len(qkv) == 1 else None  # a head-pruned starting model: per layer
    depth_of: dict[str, int] = {}
    width_of: dict[str, int | None] = {}
    for i, stage in enumerate(spec.stages):
        source = spec.source_index(i)
        entering = start if source is None else depth_of[spec.stages[source].name]
        own = entering
        width = start_width if source is None else width_of[spec.stages[source].name]
        for rname, config in stage.recipes:
            own = recipe_class(rname, stage.name).output_depth(config, own)
            width = recipe_class(rname, stage.name).output_width(config, width)
        shapes = Shapes(entering=entering, stage=own, stages=dict(depth_of), width=width, widths=dict(width_of))
        for rname, config in stage.recipes:
            where = f"stage '{stage.name}' recipe '{rname}'"
            recipe_class(rname, where).check_shapes(config, shapes, where)
        depth_of[stage.name], width_of[stage.name] = own, width


def check_architecture(spec: PipelineSpec, model: nn.Module) -> None:
    """A recipe that reads the model's layout needs a supported family: say so before any work."""
    from workbench.models.arch import architecture
    from workbench.recipes.base import recipe_class

    for stage in spec.stages:
        for rname, _ in stage.recipes:
            if recipe_class(rname, f"stage '{stage.name}'").uses_architecture:
                architecture(model, where=f"stage '{stage.name}' recipe '{rname}'")
                return


def fit_sequence_lengths(spec: PipelineSpec, model: nn.Module) -> None:
    """The task's truncation (`task.max_length`) and the length speed is measured at
    (`eval.seq_len`) must fit the model's position table: a longer sequence fails inside the
    model's forward, after stages have trained. A length left at its default (128) is lowered to
    what the model holds, with a notice; one set longer is a ConfigError naming both numbers."""
    from workbench.config import field_default
    from workbench.models.families import max_sequence_length

    limit = max_sequence_length(model)
    if limit is None:
        return
    holds = f"model '{spec.model}' holds {limit} tokens per sequence (its max_position_embeddings)"
    for where, config, key in (("pipeline task", spec.task, "max_length"), ("pipeline eval", spec.eval, "seq_len")):
        value = getattr(config, key)
        if value <= limit:
            continue
        default = field_default(config, key)
        if value != default:
            raise ConfigError(f"{where}: '{key}' {value} is longer than {holds}; set {key}: {limit} or less")
        setattr(config, key, limit)
        print(f"[workbench] {where} {key}: {limit} instead of the default {default}, as {holds}", flush=True)
