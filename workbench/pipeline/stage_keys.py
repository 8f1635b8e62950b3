"""What identifies a stage of a pipeline run: the stage it starts from, its seed, its cache key
(everything its trained model depends on), the key of the settings it is measured under, and its
checkpoint folder, which belongs to one stage key. `PipelineRun` inherits these.

The keys are hashes that name stages already run (`results/<name>/`, `cache_dir()/stages/`):
a change to what goes into one makes every earlier run's stages miss, silently, so bump
`MEASURE_VERSION` (or change a key) only on purpose.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from workbench.config import config_to_dict
from workbench.data import Task
from workbench.pipeline.spec import PipelineSpec
from workbench.pipeline.store import stage_hash

# What a stage's measurement records; bump it when that changes, so cached stages are measured
# again (2: quick runs leave zlib_mb empty).
MEASURE_VERSION = 2


class StageKeys:
    """A mixin of `PipelineRun`, which sets the attributes annotated below. Methods, not
    functions: a run that extends `_stage_key` (degrade's `FractionRun`) then also gets its own
    keys for the source and teacher stages that a key includes."""

    spec: PipelineSpec
    seed: int
    quick: bool
    task: Task
    run_dir: Path

    def _source(self, index: int) -> int | None:
        """Index of the stage this one starts from (`PipelineSpec.source_index`)."""
        return self.spec.source_index(index)

    def _depth(self, index: int) -> int:
        source = self._source(index)
        return 0 if source is None else 1 + self._depth(source)

    def _stage_seed(self, index: int) -> int:
        """The run's seed (or the stage's pinned one) plus the stage's depth in its `from` chain:
        sibling stages that start from the same model (a method comparison) share their data
        order and initialisation, and adding or removing a sibling changes no other stage."""
        stage = self.spec.stages[index]
        return (self.seed if stage.seed is None else stage.seed) + self._depth(index)

    def _stage_key(self, index: int) -> str:
        """Everything the stage's trained model depends on: its definition and seed, the key of
        the stage it starts from, and the keys of the earlier stages its recipes learn from."""
        spec = self.spec
        stage = spec.stages[index]
        names = [s.name for s in spec.stages[:index]]
        from workbench.recipes.base import recipe_class

        teachers = sorted({t for rname, c in stage.recipes for t in recipe_class(rname, stage.name).teacher_names(c)
                           if t in names})
        source = self._source(index)
        return stage_hash({"model": spec.model, "task": config_to_dict(spec.task), "split_seed": spec.seed,
                           "task_fingerprint": self.task.fingerprint,
                           # only what changes the trained model; eval settings go in _measure_key
                           "quick": {"train_examples": spec.quick.train_examples, "epochs": spec.quick.epochs,
                                     "batch_size": spec.quick.batch_size} if self.quick else None,
                           "stage": stage.to_dict(for_key=True), "seed": self._stage_seed(index),
                           "source": self._stage_key(source) if source is not None else None,
                           "teachers": {t: self._stage_key(names.index(t)) for t in teachers}})

    def _measure_key(self) -> str:
        """What a stage's metrics depend on beyond its model: the evaluation settings."""
        spec = self.spec
        return stage_hash({"eval": config_to_dict(spec.eval), "quick": self.quick, "recorded": MEASURE_VERSION,
                           "eval_examples": spec.quick.eval_examples if self.quick else None,
                           "speed_iters": spec.quick.speed_iters if self.quick else spec.eval.speed_iters})

    def _checkpoint_dir(self, stage: str, key: str) -> Path:
        """The stage's checkpoint folder, tied to the stage key: a checkpoint written under another
        definition of the stage (the recipe changed after a kill) is discarded, and the run says so."""
        folder = self.run_dir / "checkpoints" / stage
        owner = folder / "stage_key.txt"
        if folder.exists() and (not owner.exists() or owner.read_text().strip() != key):
            print(f"[workbench]   {stage}: its checkpoint belongs to an earlier definition of the stage; "
                  "starting the stage over", flush=True)
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        owner.write_text(key + "\n")
        return folder
