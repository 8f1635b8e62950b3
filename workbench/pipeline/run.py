"""Running a pipeline: each stage starts from the previous stage's model (or the one named by
`from:`), applies its recipes' one-shot `apply` in order, trains if any recipe contributes a loss
or acts during training, and is measured. Results go to `results/<name>/`; re-running the same
command resumes: finished stages are reused, a killed stage continues from its last checkpoint.

The up-front checks of the recipes live in `checks`, a stage's keys, seed and checkpoint folder
in `stage_keys`, measuring a stage in `measure` and writing the run's records in `records`;
`engine_name`, `MEASURE_VERSION` and `STAGE_COLUMNS` are re-exported from here.
"""
from __future__ import annotations

import copy
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from workbench.config import ConfigError, config_to_dict
from workbench.data import Collator, Task, load_task, tokenize_task
from workbench.data.tasks import missing_class_notes
from workbench.evaluate import accuracy_metrics
from workbench.models import load_model, resolve_model_path
from workbench.models.edits import load_edited_model
from workbench.models.vocab import check_stage_tokens, load_stage_tokenizer
from workbench.paths import cache_dir, results_dir
from workbench.pipeline.checks import (check_architecture, check_model, check_task, check_teachers,
                                       fit_sequence_lengths)
from workbench.pipeline.measure import engine_name, measure_stage  # noqa: F401  (engine_name re-exported)
from workbench.pipeline.records import FIGURE_EVERY_S, print_stage_result, write_run_figures, write_run_records
from workbench.pipeline.records import STAGE_COLUMNS  # noqa: F401  (re-exported)
from workbench.pipeline.spec import PipelineSpec, StageSpec
from workbench.pipeline.stage_keys import MEASURE_VERSION  # noqa: F401  (re-exported)
from workbench.pipeline.stage_keys import StageKeys
from workbench.pipeline.store import StageStore, saveable
from workbench.recipes.base import RecipeContext, build_recipe
from workbench.results import write_yaml
from workbench.teachers import TeacherService
from workbench.train import Trainer, seed_everything


@dataclass
class StageData:
    """The task tokenized with one tokenizer: what a stage trains, validates and is measured on.
    Stages share the pipeline's, unless a recipe replaced the stage's tokenizer (`trim_vocab`):
    that stage, and every stage that starts from it, uses its own."""

    tokenizer: Any
    train: Any
    eval: Any
    val: Any
    collate: Collator


class PipelineRun(StageKeys):
    """Runs a `PipelineSpec` into `results/<name>/`, resuming whatever an earlier run finished.

    `seed` overrides the spec's training seed (the data split stays the spec's `seed`), which is
    how `--seeds` repeats a pipeline; stages with their own `seed:` keep it.
    """

    def __init__(self, spec: PipelineSpec, *, quick: bool = False, results_root: Path | None = None,
                 run_name: str | None = None, fresh: bool = False, remeasure: bool = False,
                 seed: int | None = None, shared_with: "PipelineRun | None" = None,
                 on_eval: Callable[[str, int, dict[str, float]], None] | None = None) -> None:
        self.spec, self.quick, self.on_eval, self.remeasure = spec, quick, on_eval, remeasure
        self.seed = spec.seed if seed is None else seed
        self.run_dir = Path(results_root or results_dir()) / (run_name or spec.name)
        if fresh and self.run_dir.exists():
            shutil.rmtree(self.run_dir)
        self.store = StageStore(self.run_dir)
        self.models: dict[str, nn.Module] = {}
        self.stage_data: dict[str, StageData] = {}
        self.keys: dict[str, str] = {}
        self.metrics: list[dict[str, Any]] = []
        self.shared_with = shared_with

    # -------------------------------------------------------------- setup
    def _prepare(self) -> None:
        spec = self.spec
        other = self.shared_with
        if other is not None:  # another seed's run of the same spec: the data and base model are the same
            for attr in ("task", "base_model", "tokenizer", "train_data", "eval_data", "val_data", "collate",
                         "picks", "data"):
                setattr(self, attr, getattr(other, attr))
            self._make_teachers()
            return
        resolve_model_path(spec.model)  # a wrong model name fails here, before any work
        seed_everything(spec.seed)
        self.task: Task = load_task(spec.task, seed=spec.seed)
        check_task(spec, self.task)
        self.base_model, self.tokenizer = load_model(spec.model, self.task.num_labels, spec.seed)
        check_architecture(spec, self.base_model)
        check_model(spec, self.base_model)
        fit_sequence_lengths(spec, self.base_model)
        self.picks: tuple[list[int], list[int]] | None = None  # the --quick subsets, by index
        if self.quick:
            g = torch.Generator().manual_seed(spec.seed)
            n_train, n_eval = len(self.task.splits["train"]), len(self.task.splits[spec.eval.split])
            self.picks = (sorted(torch.randperm(n_train, generator=g)[: spec.quick.train_examples].tolist()),
                          sorted(torch.randperm(n_eval, generator=g)[: spec.quick.eval_examples].tolist()))
        self.data = self._tokenize(self.tokenizer)
        self.train_data, self.eval_data, self.val_data = self.data.train, self.data.eval, self.data.val
        self.collate = self.data.collate
        self._make_teachers()

    def _tokenize(self, tokenizer: Any) -> StageData:
        """The run's splits (the same --quick subsets) tokenized with `tokenizer`."""
        tokenized = tokenize_task(self.task, tokenizer)
        train, evals = tokenized["train"], tokenized[self.spec.eval.split]
        if self.picks is not None:
            train, evals = train.select(self.picks[0]), evals.select(self.picks[1])
        val = tokenized["validation"]
        val = val.select(range(min(len(val), self.spec.quick.eval_examples if self.quick else 10**9)))
        return StageData(tokenizer, train, evals, val, Collator(tokenizer))

    def _data_for(self, tokenizer: Any, model: nn.Module, stage: str) -> StageData:
        """A stage's data under its own tokenizer (re-tokenized; the cache key follows the
        vocabulary), checked against the model's vocabulary (a strict `trim_vocab` fails here,
        naming the removed tokens a text uses)."""
        if tokenizer is self.tokenizer:
            return self.data
        data = self._tokenize(tokenizer)
        check_stage_tokens(tokenizer, model, {"train": data.train, self.spec.eval.split: data.eval,
                                              "validation": data.val}, f"stage '{stage}'")
        return data

    def _make_teachers(self) -> None:
        self.teachers = TeacherService(self.tokenizer, self.task.num_labels, self.run_dir,
                                       lambda n: (self.models[n], self.keys[n]) if n in self.models else None)


    # -------------------------------------------------------------- one stage
    def _reuse(self, stage: StageSpec, key: str, shared: Path | None) -> dict[str, Any] | None:
        found = self.store.find(stage.name, key, shared)
        if found is None:
            return None
        saved, info = found
        model = self.models[stage.name] = load_edited_model(saved / "model")
        data = self.data
        if getattr(model.config, "workbench_vocab", None):  # a trimmed vocabulary: the tokenizer saved with it
            data = self._data_for(load_stage_tokenizer(saved / "model"), model, stage.name)
        self.stage_data[stage.name] = data
        metrics = {**info["metrics"], "reused_from": str(saved)}
        # the same trained model, measured again when asked (e.g. on a quiet machine) or when it
        # was measured under other evaluation settings
        if self.remeasure or info.get("measure_key") != self._measure_key():
            metrics.update(self._measure(stage.name, self.models[stage.name], data))
        return metrics

    def _run_stage(self, index: int, stage: StageSpec) -> dict[str, Any]:
        key = self.keys[stage.name] = self._stage_key(index)
        shared = cache_dir() / "stages" / key if (stage.cache or stage.seed is not None) else None
        reused = self._reuse(stage, key, shared)
        if reused is not None:
            return reused
        if self.store.holds_other(stage.name, key):
            raise ConfigError(f"stage '{stage.name}': {self.run_dir} holds results of a different recipe; "
                              "re-run with --fresh or choose another --name")
        source_index = self._source(index)
        source = None if source_index is None else self.spec.stages[source_index].name
        model = copy.deepcopy(self.models[source] if source else self.base_model)
        stage_seed = self._stage_seed(index)
        data = self.stage_data[source] if source else self.data
        ctx = RecipeContext(task=self.task, tokenizer=data.tokenizer, run_dir=self.run_dir, stage=stage.name,
                            seed=stage_seed - self._depth(index), quick=self.quick, teachers=self.teachers,
                            previous_stages=[s.name for s in self.spec.stages[:index]], train_data=data.train)
        recipes = [build_recipe(n, config_to_dict(c), ctx, f"stage '{stage.name}'") for n, c in stage.recipes]
        seed_everything(stage_seed)
        for r in recipes:
            model = r.apply(model)
            if ctx.tokenizer is not data.tokenizer:  # the recipe replaced the vocabulary (trim_vocab)
                data = self._data_for(ctx.tokenizer, model, stage.name)
                ctx.train_data = data.train
        check_teachers(stage, recipes, data, self.stage_data, self.tokenizer)
        t0 = time.perf_counter()
        history: list[dict[str, Any]] = []
        resumed: dict[str, int] = {}
        if stage.trains:
            train_data = data.train
            for r in recipes:
                train_data = r.prepare_data(train_data)
            cfg = copy.deepcopy(stage.train)
            if self.quick:
                cfg.epochs = self.spec.quick.epochs
                cfg.batch_size = self.spec.quick.batch_size or cfg.batch_size
            trainer = Trainer(
                model, train_data, data.collate, cfg, recipes, seed=stage_seed,
                checkpoint_dir=self._checkpoint_dir(stage.name, key),
                evaluate=lambda m: accuracy_metrics(m, data.val, data.collate, self.task.num_labels,
                                                    cfg.eval_batch_size),
                on_eval=(lambda epoch, m: self.on_eval(stage.name, epoch, m)) if self.on_eval else None,
                desc=stage.name, history_path=self.run_dir / "history" / f"{stage.name}.csv",
                on_checkpoint=self.teachers.save)
            model = trainer.train()
            self.teachers.save()
            history = trainer.history
            resumed = {"resumed_from_step": trainer.resumed_from_step, "steps_run": trainer.steps_run}
        train_seconds = time.perf_counter() - t0
        metrics = self._measure(stage.name, model, data)
        metrics["train_seconds"] = round(train_seconds, 1)
        # a one-shot structural recipe records what it did (time, FLOPs) in the model's config;
        # later stages inherit the config, so only this stage's own record counts
        pruning = getattr(getattr(model, "config", None), "workbench_pruning", None)
        if isinstance(pruning, dict) and pruning.get("stage") == stage.name:
            metrics.update({k: pruning[k] for k in ("pruning_seconds", "flops_removed", "macs_after",
                                                 "vocab_before", "vocab_after", "embedding_mb_saved") if k in pruning})
        metrics["history"] = history
        metrics.update(resumed)  # a resumed stage ran only its remaining steps
        self.models[stage.name], self.stage_data[stage.name] = model, data
        if saveable(model):
            self.store.save(stage.name, model, data.tokenizer,
                            {"key": key, "measure_key": self._measure_key(), "metrics": metrics}, shared)
            shutil.rmtree(self.run_dir / "checkpoints" / stage.name, ignore_errors=True)
        return metrics


    def _measure(self, stage: str, model: nn.Module, data: StageData | None = None) -> dict[str, Any]:
        """The stage's metrics row under this run's evaluation settings (pipeline/measure.py)."""
        return measure_stage(stage, model, data or self.data, self.spec, self.task, quick=self.quick, seed=self.seed)

    # -------------------------------------------------------------- whole run
    def run(self) -> list[dict[str, Any]]:
        self._prepare()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_yaml(self.run_dir / "recipe.yaml", self.spec.to_dict())
        # the label mapping, in the open: a file's -1/1 or 1..5 become classes 0.. in this order
        print(f"[workbench] task {self.task.name}: {self.task.num_labels} classes "
              f"({', '.join(f'{i} = {n!r}' for i, n in enumerate(self.task.label_names))}), "
              + ", ".join(f"{k} {len(v):,}" for k, v in self.task.splits.items()), flush=True)
        for note in missing_class_notes(self.task):
            print(f"[workbench] note: task {self.task.name}: {note}", flush=True)
        drawn = time.perf_counter()
        try:
            for i, stage in enumerate(self.spec.stages):
                self._run_and_record(i, stage)
                if time.perf_counter() - drawn >= FIGURE_EVERY_S and i + 1 < len(self.spec.stages):
                    self._draw_figures()
                    drawn = time.perf_counter()
        except BaseException:  # a stage failed or the run was interrupted: the figures of what finished
            if self.metrics:
                try:
                    self._draw_figures()
                except Exception as err:  # (the stage's error is the one to see)
                    print(f"[workbench] could not draw the run's figures: {err}", flush=True)
            raise
        self._draw_figures()
        return self.metrics

    def _draw_figures(self) -> None:
        write_run_figures(self.run_dir, self.spec, self.metrics, quick=self.quick)

    def _run_and_record(self, i: int, stage: StageSpec) -> None:
        """Run stage `i`, append its metrics and rewrite the run's tables."""
        print(f"[workbench] stage {i + 1}/{len(self.spec.stages)}: {stage.name} "
              f"({', '.join(n for n, _ in stage.recipes)})", flush=True)
        t0 = time.perf_counter()
        m = self._run_stage(i, stage)
        self.metrics.append(m)
        write_run_records(self.run_dir, self.spec, self.task, self.metrics, quick=self.quick, seed=self.seed,
                          eval_examples=len(self.eval_data))
        print_stage_result(stage, m, self.spec, time.perf_counter() - t0)


def run_pipeline(spec: PipelineSpec | dict | str | Path, **kwargs: Any) -> list[dict[str, Any]]:
    """Run a pipeline from a spec, a dict or a YAML path; returns one metrics dict per stage."""
    if isinstance(spec, (str, Path)):
        spec = PipelineSpec.from_yaml(spec)
    elif isinstance(spec, dict):
        spec = PipelineSpec.from_dict(spec)
    return PipelineRun(spec, **kwargs).run()
