"""`workbench eval RUN --task TASK`: a finished run's stages measured on another task with the
same label set — a domain-shift check (a sentiment model from movie snippets on product reviews).

Each finished stage is loaded from the run's folder (`artifacts/<stage>/model`, with the stage's
own tokenizer, or the shared copy a cached stage was reused from). A stage that is not saved
because its result is inference-only (a quantized or compiled model) is rebuilt from its source
stage by its one-shot recipes, as `workbench run` rebuilds it. Size and speed do not depend on
the task: they are taken from the run's metrics.json, so the table is the one `workbench show`
prints, with accuracy and macro-F1 on the other task (and the run's own accuracy beside them).
The rows go to `<run>/eval-<task>.csv` (written atomically; rows of stages evaluated earlier
and not now are kept).
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from torch import nn

from workbench.config import ConfigError, config_to_dict
from workbench.data import Collator, TaskConfig, load_task, tokenize_task
from workbench.data.metrics import degenerate_reason
from workbench.data.tasks import SPLITS
from workbench.evaluate import accuracy_metrics
from workbench.models.registry import no_hf_progress_bar
from workbench.pipeline.run import PipelineRun, engine_name
from workbench.pipeline.spec import PipelineSpec
from workbench.results import STAGE_COLUMNS, read_csv, read_json, write_csv

EVAL_COLUMNS = ["stage", "engine", "task", "split", "examples", "accuracy", "macro_f1", "degenerate",
                "run_task", "run_split", "run_accuracy", "run_macro_f1", "params", "nonzero_params", "disk_mb",
                "throughput_b1", "throughput_b8"]
"""The columns of eval-<task>.csv: the other task's metrics, then the run's own for comparison."""


def run_folder(run: str | Path) -> Path:
    """A run's folder: a path, or a run name under the results root; it must hold metrics.json."""
    from workbench.paths import run_folder as folder_of

    path = folder_of(run)
    if not (path / "metrics.json").exists():
        if (path / "seeds_summary.csv").exists():
            raise ConfigError(f"'{run}' is a --seeds run: evaluate one seed's run, e.g. {path / 'seed-0'}")
        raise ConfigError(f"no finished run at '{run}' (looked for {path / 'metrics.json'}); give a run folder "
                          "written by `workbench run`, or a run name under results/")
    if not (path / "recipe.yaml").exists():
        raise ConfigError(f"run '{path}' has no recipe.yaml (the recipe as run); re-run it with `workbench run`")
    return path


def task_slug(task: TaskConfig) -> str:
    """A file-name-safe name of a task: an embedded name, a local file's stem, hf:<name>[-subset]."""
    name = task.name
    if not name.startswith("hf:") and Path(name).expanduser().exists():
        name = Path(name).expanduser().stem
    if task.subset:
        name += f"-{task.subset}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "task"


def load_stage_model(run: PipelineRun, index: int, info: dict[str, Any], cache: dict[int, Any]) -> Any:
    """(model, tokenizer) of a finished stage, or None when the run holds no finished model for it
    (`info`: the run's measured stages by name; shared by `workbench eval` and `workbench export`)."""
    if index in cache:
        return cache[index]
    from workbench.models.edits import load_edited_model
    from workbench.models.vocab import load_stage_tokenizer
    from workbench.recipes.base import RecipeContext, build_recipe, recipe_class

    stage = run.spec.stages[index]
    found = None
    for saved in (run.store.artifact(stage.name), Path(info.get(stage.name, {}).get("reused_from") or "")):
        if str(saved) and (saved / "done.json").exists() and (saved / "model").exists():
            with no_hf_progress_bar():  # no "Loading weights" bar per stage
                found = (load_edited_model(saved / "model"), load_stage_tokenizer(saved / "model"))
            break
    where = f"stage '{stage.name}'"
    if found is None and stage.name in info and not stage.trains and \
            all(recipe_class(n, where).inference_only for n, _ in stage.recipes):
        source = run._source(index)
        base = load_stage_model(run, source, info, cache) if source is not None else None
        if base is not None:  # not saved: rebuilt by its one-shot recipes, as `workbench run` does
            model, tokenizer = copy.deepcopy(base[0]), base[1]
            # a prepared run (`run._prepare()`) lends its training split: calibrating recipes
            # (static_int8, smoothquant) then see the batches they saw in the run
            ctx = RecipeContext(task=getattr(run, "task", None), tokenizer=tokenizer, run_dir=run.run_dir,
                                stage=stage.name, seed=run._stage_seed(index) - run._depth(index),
                                previous_stages=[s.name for s in run.spec.stages[:index]],
                                train_data=getattr(run, "train_data", None))
            for name, config in stage.recipes:
                model = build_recipe(name, config_to_dict(config), ctx, where).apply(model)
            found = (model, tokenizer)
    cache[index] = found
    return found


def evaluate_run(run: str | Path, task: str | dict[str, Any] | TaskConfig, stage: str | None = None,
                 split: str = "test") -> tuple[Path, list[dict[str, Any]]]:
    """Measure the finished stages of `run` (or only `stage`) on `split` of another `task` with
    the same labels; returns the CSV written and one row per stage measured."""
    folder = run_folder(run)
    info = read_json(folder / "metrics.json")
    spec = PipelineSpec.from_yaml(folder / "recipe.yaml")
    names = [s.name for s in spec.stages]
    if stage is not None and stage not in names:
        raise ConfigError(f"run '{folder.name}' has no stage '{stage}' (stages: {', '.join(names)})")
    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if isinstance(task, TaskConfig):
        cfg = task
    else:
        from workbench.config import parse_config

        raw = {"name": task} if isinstance(task, str) else dict(task)
        raw.setdefault("max_length", spec.task.max_length)  # the run's truncation, unless told
        cfg = parse_config(TaskConfig, raw, "eval task")
    other = load_task(cfg, seed=spec.seed)  # bad data fails here, before any model loads
    run_labels = info.get("labels") or load_task(spec.task, seed=spec.seed).label_names
    if list(other.label_names) != list(run_labels):
        raise ConfigError(
            f"task '{cfg.name}' has the labels [{', '.join(other.label_names)}] but run '{folder.name}' was trained "
            f"on '{spec.task.name}' with the labels [{', '.join(run_labels)}]; a domain-shift check needs the "
            "same label set (the same label names)")
    measured = {m["stage"]: m for m in info["stages"]}
    runner = PipelineRun(spec, results_root=folder.parent, run_name=folder.name)
    models: dict[int, Any] = {}
    wanted = [stage] if stage is not None else [n for n in names if n in measured]
    rows = []
    for name in wanted:
        found = load_stage_model(runner, names.index(name), measured, models)
        if found is None:
            if stage is not None:
                raise ConfigError(f"stage '{name}' of run '{folder.name}' is not finished (no saved model); "
                                  "finish it with `workbench run` first")
            print(f"[workbench] eval: stage '{name}' has no saved model; skipped", flush=True)
            continue
        rows.append(_measure(name, found, other, split, spec, measured.get(name, {}), info))
    if not rows:
        raise ConfigError(f"run '{folder.name}' has no finished stage to evaluate")
    out = folder / f"eval-{task_slug(cfg)}.csv"
    now = {(r["stage"], r["split"]) for r in rows}
    kept = [r for r in read_csv(out) if (r.get("stage"), r.get("split")) not in now] if out.exists() else []
    order = {n: i for i, n in enumerate(names)}
    write_csv(out, sorted(kept + rows, key=lambda r: (order.get(str(r["stage"]), len(order)), str(r["split"]))),
              EVAL_COLUMNS)
    return out, rows


def _measure(name: str, found: tuple[nn.Module, Any], task: Any, split: str, spec: PipelineSpec,
             run_metrics: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    model, tokenizer = found
    data = tokenize_task(task, tokenizer)[split]
    m = accuracy_metrics(model, data, Collator(tokenizer), task.num_labels, spec.eval.batch_size, counts=True)
    row: dict[str, Any] = {k: run_metrics.get(k) for k in STAGE_COLUMNS if k in run_metrics}
    row.update({"stage": name, "engine": engine_name(model), "task": task.name, "split": split, "examples": len(data),
                "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                "degenerate": degenerate_reason(m["pred_counts"], m["label_counts"], m["macro_f1"], task.label_names),
                "run_task": info.get("task"), "run_split": info.get("split"),
                "run_accuracy": run_metrics.get("accuracy"), "run_macro_f1": run_metrics.get("macro_f1")})
    return row
