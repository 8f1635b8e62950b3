"""A pipeline: ordered stages of recipes, given in YAML or Python, run and measured.

    name: demo
    task: rt-sentiment          # or {name: ..., text_column: ..., label_column: ..., max_length: ...}
    model: minilm-l6            # embedded name, local path or Hugging Face name
    seed: 0
    stages:
      - name: teacher
        cache: true             # reuse the fine-tuned model across runs
        recipes: [finetune]
        train: {epochs: 3, lr: 5.0e-5}
      - name: student
        recipes:
          - student: {layers: [0, 2, 4]}
          - distill_logits: {teacher: teacher, temperature: 2.0, alpha: 0.5}
        train: {epochs: 3, lr: 1.0e-4}

Each stage starts from the previous stage's model (or the one named by `from:`), applies its
recipes' one-shot `apply` in order, trains if any recipe needs training, and is evaluated.
The whole spec is validated before any work starts. Results go to `results/<name>/`;
re-running the same command resumes: finished stages are reused, a killed stage continues
from its last checkpoint.
"""
from __future__ import annotations

import copy
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from torch import nn

from workbench.config import ConfigError, config_to_dict, fail, load_yaml_file, parse_config, reject_unknown_keys
from workbench.data import Task, TaskConfig, load_task, tokenize_task
from workbench.evaluate import accuracy_metrics, measure_speed, per_layer_sparsity, storage_stats
from workbench.models import load_model, resolve_model_path
from workbench.models.registry import load_saved_model
from workbench.paths import cache_dir, results_dir
from workbench.recipes.base import RecipeContext, build_recipe, recipe_class
from workbench.results import write_csv, write_json, write_yaml
from workbench.train import TrainConfig, Trainer, seed_everything

STAGE_COLUMNS = ["stage", "engine", "accuracy", "macro_f1", "params", "nonzero_params", "sparsity",
                 "disk_mb", "zlib_mb", "latency_ms_b1", "throughput_b1", "latency_ms_b8", "throughput_b8",
                 "seq_len", "threads", "train_seconds"]


@dataclass
class EvalConfig:
    split: Literal["test", "validation"] = "test"
    batch_size: int = 64
    seq_len: int = 128
    speed_batches: list[int] = field(default_factory=lambda: [1, 8])
    speed_iters: int = 20

    def validate(self, where: str) -> None:
        if self.seq_len < 8:
            fail(where, "seq_len", f"must be >= 8, got {self.seq_len}")
        if not self.speed_batches or min(self.speed_batches) < 1:
            fail(where, "speed_batches", f"must be a non-empty list of sizes >= 1, got {self.speed_batches}")
        if self.speed_iters < 1:
            fail(where, "speed_iters", f"must be >= 1, got {self.speed_iters}")


@dataclass
class QuickConfig:
    """What `--quick` shrinks: the same stages on a small subset, for tests and smoke runs."""

    train_examples: int = 800
    eval_examples: int = 300
    epochs: int = 2
    """Every training stage runs this many epochs over the `train_examples` subset."""
    batch_size: int | None = None
    """Training batch size of every stage in quick mode (None: each stage's own). Smaller batches
    give a short run more optimizer steps for the same compute."""
    speed_iters: int = 3

    def validate(self, where: str) -> None:
        for key in ("train_examples", "eval_examples", "epochs", "speed_iters"):
            if getattr(self, key) < 1:
                fail(where, key, f"must be >= 1, got {getattr(self, key)}")
        if self.batch_size is not None and self.batch_size < 1:
            fail(where, "batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass
class StageSpec:
    name: str
    recipes: list[tuple[str, Any]]
    train: TrainConfig | None = None
    source: str | None = None
    cache: bool = False

    @property
    def trains(self) -> bool:
        return self.train is not None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.source:
            d["from"] = self.source
        if self.cache:
            d["cache"] = True
        d["recipes"] = [{n: config_to_dict(c)} for n, c in self.recipes]
        if self.train is not None:
            d["train"] = config_to_dict(self.train)
        return d


@dataclass
class PipelineSpec:
    name: str
    task: TaskConfig
    model: str
    stages: list[StageSpec]
    seed: int = 0
    eval: EvalConfig = field(default_factory=EvalConfig)
    quick: QuickConfig = field(default_factory=QuickConfig)

    # ------------------------------------------------------------------ parsing
    @classmethod
    def from_yaml(cls, path: str | Path) -> "PipelineSpec":
        return cls.from_dict(load_yaml_file(path, "recipe file"), default_name=Path(path).stem)

    @classmethod
    def from_dict(cls, data: dict[str, Any], default_name: str = "run") -> "PipelineSpec":
        if not isinstance(data, dict):
            raise ConfigError(f"pipeline: must be a mapping with 'task', 'model' and 'stages', got {data!r}")
        reject_unknown_keys(data, ("name", "task", "model", "seed", "eval", "quick", "stages"), "pipeline")
        for key in ("task", "model", "stages"):
            if key not in data:
                fail("pipeline", key, "is required")
        name = data.get("name", default_name)
        if not isinstance(name, str) or not name or "/" in name:
            fail("pipeline", "name", f"must be a non-empty name without '/', got {name!r}")
        task = data["task"]
        task_cfg = parse_config(TaskConfig, {"name": task} if isinstance(task, str) else task, "pipeline task")
        if not isinstance(data["model"], str):
            fail("pipeline", "model", f"must be a model name or path, got {data['model']!r}")
        seed = data.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            fail("pipeline", "seed", f"must be an integer, got {seed!r}")
        stages_raw = data["stages"]
        if not isinstance(stages_raw, list) or not stages_raw:
            fail("pipeline", "stages", "must be a non-empty list of stages")
        stages: list[StageSpec] = []
        for i, raw in enumerate(stages_raw):
            stages.append(parse_stage(raw, i, [s.name for s in stages]))
        return cls(name=name, task=task_cfg, model=data["model"], stages=stages, seed=seed,
                   eval=parse_config(EvalConfig, data.get("eval"), "pipeline eval"),
                   quick=parse_config(QuickConfig, data.get("quick"), "pipeline quick"))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "task": config_to_dict(self.task), "model": self.model, "seed": self.seed,
                "eval": config_to_dict(self.eval), "quick": config_to_dict(self.quick),
                "stages": [s.to_dict() for s in self.stages]}


def parse_stage(raw: Any, index: int, earlier: list[str]) -> StageSpec:
    where = f"stage {index + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping with 'name' and 'recipes', got {raw!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        fail(where, "name", f"must be a non-empty stage name without '/', got {name!r}")
    where = f"stage '{name}'"
    if name in earlier:
        fail(where, "name", "is used by two stages")
    reject_unknown_keys(raw, ("name", "recipes", "train", "from", "cache"), where)
    source = raw.get("from")
    if source is not None and source not in earlier:
        fail(where, "from", f"must name an earlier stage ({', '.join(earlier) or 'none yet'}), got {source!r}")
    items = raw.get("recipes")
    if not isinstance(items, list) or not items:
        fail(where, "recipes", "must be a non-empty list, e.g. [finetune] or [{magnitude_prune: {sparsity: 0.8}}]")
    recipes = []
    for item in items:
        if isinstance(item, str):
            rname, settings = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            rname, settings = next(iter(item.items()))
            settings = settings or {}
        else:
            raise ConfigError(f"{where}: each recipe must be a name or a one-key mapping "
                              f"{{name: {{settings}}}}, got {item!r}")
        cls = recipe_class(str(rname), where)
        recipes.append((str(rname), parse_config(cls.Config, settings, f"{where} recipe '{rname}'")))
        if rname == "distill_logits" and recipes[-1][1].teacher not in earlier:
            fail(f"{where} recipe 'distill_logits'", "teacher",
                 f"must name an earlier stage ({', '.join(earlier) or 'none yet'}), got {recipes[-1][1].teacher!r}")
    needs_training = any(recipe_class(r, where).needs_training or
                         getattr(c, "schedule", "oneshot") != "oneshot" for r, c in recipes)
    if "train" in raw and not needs_training:
        fail(where, "train", "is set but no recipe trains; add 'finetune' or 'distill_logits' to the stage")
    train = parse_config(TrainConfig, raw.get("train"), f"{where} train") if needs_training else None
    if needs_training and not any(recipe_class(r, where).needs_training for r, _ in recipes):
        fail(where, "recipes", "gradual pruning needs a loss: add 'finetune' or 'distill_logits' to the stage")
    cache = raw.get("cache", False)
    if not isinstance(cache, bool):
        fail(where, "cache", f"must be true or false, got {cache!r}")
    return StageSpec(name=name, recipes=recipes, train=train, source=source, cache=cache)


# ---------------------------------------------------------------------- running
def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _saveable(model: nn.Module) -> bool:
    """Plain Hugging Face models are saved after their stage; quantized/compiled ones are rebuilt."""
    return hasattr(model, "save_pretrained") and not any(
        hasattr(m, "_packed_params") for m in model.modules())


def engine_name(model: nn.Module) -> str:
    if hasattr(model, "workbench_engine"):
        return str(model.workbench_engine)
    return "torch-int8" if any(hasattr(m, "_packed_params") for m in model.modules()) else "torch-fp32"


class PipelineRun:
    """Runs a `PipelineSpec` into `results/<name>/`, resuming whatever an earlier run finished."""

    def __init__(self, spec: PipelineSpec, *, quick: bool = False, results_root: Path | None = None,
                 run_name: str | None = None, fresh: bool = False, remeasure: bool = False,
                 on_eval: Callable[[str, int, dict[str, float]], None] | None = None) -> None:
        self.spec, self.quick, self.on_eval, self.remeasure = spec, quick, on_eval, remeasure
        self.run_dir = Path(results_root or results_dir()) / (run_name or spec.name)
        if fresh and self.run_dir.exists():
            shutil.rmtree(self.run_dir)
        self.models: dict[str, nn.Module] = {}
        self.metrics: list[dict[str, Any]] = []

    # -------------------------------------------------------------- setup
    def _prepare(self) -> None:
        spec = self.spec
        resolve_model_path(spec.model)  # a wrong model name fails here, before any work
        seed_everything(spec.seed)
        self.task: Task = load_task(spec.task, seed=spec.seed)
        self.base_model, self.tokenizer = load_model(spec.model, self.task.num_labels, spec.seed)
        tokenized = tokenize_task(self.task, self.tokenizer)
        train, evals = tokenized["train"], tokenized[spec.eval.split]
        if self.quick:
            g = torch.Generator().manual_seed(spec.seed)
            train = train.select(sorted(torch.randperm(len(train), generator=g)[: spec.quick.train_examples].tolist()))
            evals = evals.select(sorted(torch.randperm(len(evals), generator=g)[: spec.quick.eval_examples].tolist()))
        self.train_data, self.eval_data = train, evals
        self.val_data = tokenized["validation"].select(
            range(min(len(tokenized["validation"]), spec.quick.eval_examples if self.quick else 10**9)))
        from transformers import DataCollatorWithPadding

        self.collate = DataCollatorWithPadding(self.tokenizer, return_tensors="pt")

    def _artifact(self, stage: str) -> Path:
        return self.run_dir / "artifacts" / stage

    def _stage_key(self, index: int) -> str:
        spec = self.spec
        return _hash({"model": spec.model, "task": config_to_dict(spec.task), "seed": spec.seed,
                      "task_fingerprint": self.task.fingerprint,
                      # only what changes the trained model; eval settings go in _measure_key
                      "quick": {"train_examples": spec.quick.train_examples, "epochs": spec.quick.epochs,
                                "batch_size": spec.quick.batch_size} if self.quick else None,
                      "stages": [s.to_dict() for s in spec.stages[: index + 1]]})

    def _measure_key(self) -> str:
        """What a stage's metrics depend on beyond its model: the evaluation settings."""
        spec = self.spec
        return _hash({"eval": config_to_dict(spec.eval), "quick": self.quick,
                      "eval_examples": spec.quick.eval_examples if self.quick else None,
                      "speed_iters": spec.quick.speed_iters if self.quick else spec.eval.speed_iters})

    def load_stage_model(self, name: str) -> nn.Module:
        if name not in self.models:
            raise ConfigError(f"stage '{name}' has not run yet")
        return self.models[name]

    # -------------------------------------------------------------- one stage
    def _run_stage(self, index: int, stage: StageSpec) -> dict[str, Any]:
        key = self._stage_key(index)
        art = self._artifact(stage.name)
        done = art / "done.json"
        shared = cache_dir() / "stages" / key if stage.cache else None
        for saved in (art, shared):
            if saved is not None and (saved / "done.json").exists() and (saved / "model").exists():
                info = json.loads((saved / "done.json").read_text())
                if info.get("key") == key:
                    self.models[stage.name] = load_saved_model(saved / "model")
                    metrics = {**info["metrics"], "reused_from": str(saved)}
                    # the same trained model, measured again when asked (e.g. on a quiet
                    # machine) or when it was measured under other evaluation settings
                    if self.remeasure or info.get("measure_key") != self._measure_key():
                        metrics.update(self._measure(stage.name, self.models[stage.name]))
                    return metrics
        if done.exists() and json.loads(done.read_text()).get("key") != key:
            raise ConfigError(f"stage '{stage.name}': {self.run_dir} holds results of a different recipe; "
                              "re-run with --fresh or choose another --name")
        source = stage.source or (self.spec.stages[index - 1].name if index else None)
        model = copy.deepcopy(self.models[source] if source else self.base_model)
        ctx = RecipeContext(task=self.task, tokenizer=self.tokenizer, run_dir=self.run_dir, stage=stage.name,
                            seed=self.spec.seed, quick=self.quick, load_stage_model=self.load_stage_model,
                            previous_stages=[s.name for s in self.spec.stages[:index]])
        recipes = [build_recipe(n, config_to_dict(c), ctx, f"stage '{stage.name}'") for n, c in stage.recipes]
        seed_everything(self.spec.seed + index)
        for r in recipes:
            model = r.apply(model)
        t0 = time.perf_counter()
        if stage.trains:
            cfg = copy.deepcopy(stage.train)
            if self.quick:
                cfg.epochs = self.spec.quick.epochs
                cfg.batch_size = self.spec.quick.batch_size or cfg.batch_size
            trainer = Trainer(
                model, self.train_data, self.collate, cfg, recipes, seed=self.spec.seed + index,
                checkpoint_dir=self.run_dir / "checkpoints" / stage.name,
                evaluate=lambda m: accuracy_metrics(m, self.val_data, self.collate, self.task.num_labels,
                                                    cfg.eval_batch_size),
                on_eval=(lambda epoch, m: self.on_eval(stage.name, epoch, m)) if self.on_eval else None,
                desc=f"{stage.name}")
            model = trainer.train()
            history = trainer.history
        else:
            history = []
        train_seconds = time.perf_counter() - t0
        metrics = self._measure(stage.name, model)
        metrics["train_seconds"] = round(train_seconds, 1)
        metrics["history"] = history
        self.models[stage.name] = model
        if _saveable(model):
            for target in [art] + ([shared] if shared is not None else []):
                tmp = target.with_name(target.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                model.save_pretrained(tmp / "model")
                self.tokenizer.save_pretrained(tmp / "model")
                write_json(tmp / "done.json", {"key": key, "measure_key": self._measure_key(), "metrics": metrics})
                shutil.rmtree(target, ignore_errors=True)
                tmp.rename(target)
            shutil.rmtree(self.run_dir / "checkpoints" / stage.name, ignore_errors=True)
        return metrics

    def _measure(self, stage: str, model: nn.Module) -> dict[str, Any]:
        ev = self.spec.eval
        m: dict[str, Any] = {"stage": stage, "engine": engine_name(model)}
        m.update(accuracy_metrics(model, self.eval_data, self.collate, self.task.num_labels, ev.batch_size))
        m.update(storage_stats(model))
        m["sparsity"] = 1.0 - m["nonzero_params"] / max(1, m["params"])
        iters = self.spec.quick.speed_iters if self.quick else ev.speed_iters
        for b in ev.speed_batches:
            s = measure_speed(model, self.tokenizer.vocab_size, ev.seq_len, b, iters=iters,
                              warmup=1 if self.quick else 3)
            m[f"latency_ms_b{b}"], m[f"throughput_b{b}"] = s["latency_ms"], s["throughput"]
        m["seq_len"], m["threads"] = ev.seq_len, torch.get_num_threads()
        m["per_layer_sparsity"] = per_layer_sparsity(model)
        return m

    # -------------------------------------------------------------- whole run
    def _write(self) -> None:
        from workbench.plots import accuracy_vs_throughput

        spec = self.spec
        write_json(self.run_dir / "metrics.json", {
            "run": self.run_dir.name, "task": spec.task.name, "model": spec.model, "quick": self.quick,
            "seed": spec.seed, "split": spec.eval.split, "eval_examples": len(self.eval_data),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stages": self.metrics})
        write_csv(self.run_dir / "stages.csv", self.metrics, STAGE_COLUMNS)
        accuracy_vs_throughput(self.metrics, self.run_dir / "accuracy_vs_throughput.png",
                               title=f"{spec.name}: {spec.model} on {spec.task.name}"
                                     + (" (quick)" if self.quick else ""),
                               batch=spec.eval.speed_batches[0])

    def run(self) -> list[dict[str, Any]]:
        self._prepare()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_yaml(self.run_dir / "recipe.yaml", self.spec.to_dict())
        for i, stage in enumerate(self.spec.stages):
            print(f"[workbench] stage {i + 1}/{len(self.spec.stages)}: {stage.name} "
                  f"({', '.join(n for n, _ in stage.recipes)})", flush=True)
            t0 = time.perf_counter()
            m = self._run_stage(i, stage)
            self.metrics.append(m)
            self._write()
            how = ("reused" if m.get("reused_from") else
                   f"trained {m.get('train_seconds', 0):.0f} s" if stage.trains else "one-shot")
            b = self.spec.eval.speed_batches[0]
            print(f"[workbench]   {stage.name}: accuracy {m['accuracy']:.4f}, {m[f'throughput_b{b}']:.1f} "
                  f"samples/s at batch {b} ({how}, {time.perf_counter() - t0:.0f} s in all)", flush=True)
        return self.metrics


def run_pipeline(spec: PipelineSpec | dict | str | Path, **kwargs: Any) -> list[dict[str, Any]]:
    """Run a pipeline from a spec, a dict or a YAML path; returns one metrics dict per stage."""
    if isinstance(spec, (str, Path)):
        spec = PipelineSpec.from_yaml(spec)
    elif isinstance(spec, dict):
        spec = PipelineSpec.from_dict(spec)
    return PipelineRun(spec, **kwargs).run()
