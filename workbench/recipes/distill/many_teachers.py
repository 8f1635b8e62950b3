"""What the several-teacher recipes share (`distill_multi_teacher`, `distill_unic`,
`distill_progressive`): the `teachers:` entries and their checks, UNIC's teacher dropping, and
`ManyTeachers`, the base that loads the teachers and gives each one's logits or pooled features."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from workbench.config import ConfigError, fail
from workbench.recipes.base import StageCheck, TrainState
from workbench.recipes.distill.teacher import TeacherRecipe, _hub_available, check_teacher
from workbench.teacher_similarity import pool


@dataclass
class TeacherEntry:
    name: str
    """An earlier stage, or a model name or local path."""
    weight: float = 1.0
    target: Literal["logits", "features"] = "logits"
    label: str | None = None
    """Short name in loss-term names (default: the name, or t<i> for a path)."""


def teacher_entries(raw: list[Any], where: str) -> list[TeacherEntry]:
    """`teachers:` as entries with labels, checked: non-empty, distinct, weights >= 0, not all 0."""
    if not raw:
        fail(where, "teachers", "must list at least one teacher (an earlier stage, model name or path)")
    out = [e if isinstance(e, TeacherEntry) else TeacherEntry(name=e) for e in raw]
    for i, e in enumerate(out):
        if e.label is None:
            e.label = e.name if re.fullmatch(r"[\w.-]+", e.name) else f"t{i}"
        if e.weight < 0:
            fail(where, f"teachers[{i}].weight", f"must be >= 0, got {e.weight}")
    for key in ("name", "label"):
        seen = [getattr(e, key) for e in out]
        if len(set(seen)) != len(seen):
            fail(where, "teachers", f"repeats a {key}: {seen}; list each teacher once (give distinct labels)")
    if not any(e.weight > 0 for e in out):
        fail(where, "teachers", "has every weight 0: give some teacher a weight > 0")
    return out


def validate_many(cfg: Any, where: str) -> None:
    """The settings every multi-teacher config shares: teachers, temperature, alpha, teacher_drop."""
    cfg.teachers = teacher_entries(cfg.teachers, where)
    if cfg.temperature <= 0:
        fail(where, "temperature", f"must be > 0, got {cfg.temperature}")
    if not 0.0 <= cfg.alpha <= 1.0:
        fail(where, "alpha", f"must be in [0, 1], got {cfg.alpha}")
    if not 0.0 <= cfg.teacher_drop < 1.0:
        fail(where, "teacher_drop", f"must be in [0, 1), got {cfg.teacher_drop}")


def keep_mask(losses: list[float], p: float, seed: int, step: int) -> list[bool]:
    """UNIC's teacher dropping: each teacher but the one with the highest loss is dropped with
    probability p; the draw is a function of (seed, step) only."""
    if p <= 0 or len(losses) < 2:
        return [True] * len(losses)
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    draws = torch.rand(len(losses), generator=g).tolist()
    worst = max(range(len(losses)), key=lambda i: losses[i])
    return [i == worst or draws[i] >= p for i in range(len(losses))]


def _is_path(name: str) -> bool:
    return "/" in name or name.startswith((".", "~"))


def check_stage_teachers(named: list[tuple[str, str]], check: StageCheck) -> None:
    """Teachers that are not paths must be earlier stages or known models (while the recipe file is
    validated). A path (e.g. another recipe's result, results/bbc-teacher/...) is checked by
    `check_path_teachers` when the run starts, still before any work: the recipe file then
    validates before the run that produces that teacher has been made."""
    for name, key in named:
        if not _is_path(name):
            check_teacher(name, check, key=key)


def check_path_teachers(named: list[tuple[str, str]], where: str) -> None:
    for name, key in named:
        if not _is_path(name) or (Path(name).expanduser() / "config.json").exists():
            continue
        if not name.startswith((".", "/", "~")) and not Path(name).exists() and _hub_available(name):
            continue  # a hub id in the local cache
        fail(where, key, f"is the path {name!r}, which holds no model (no config.json): produce it first (the BBC "
             "teacher: `workbench run recipes/bbc_teacher.yaml`) or fix the path")


def label_count(name: str) -> int | None:
    """Classes of a local model folder's head (None: not a folder, or no head recorded)."""
    cfg = Path(name).expanduser() / "config.json"
    if not cfg.exists():
        return None
    import json

    data = json.loads(cfg.read_text())
    if "id2label" in data:
        return len(data["id2label"])
    return data.get("num_labels")


FEATURE_READS = frozenset({"hidden_states"})  # what a features teacher gives: pooled last hidden states


class ManyTeachers(TeacherRecipe):
    """What the multi-teacher recipes share: `teachers:` entries, their checks, loading, pooling."""

    @classmethod
    def teacher_names(cls, config: Any) -> list[str]:
        return [e.name for e in config.teachers]

    @classmethod
    def teacher_reads(cls, config: Any) -> dict[str, set[str]]:
        reads: dict[str, set[str]] = {}
        for e in config.teachers:  # (a name may come twice, for its logits and its features)
            reads.setdefault(e.name, set()).update(FEATURE_READS if e.target == "features" else ())
        return reads

    @classmethod
    def check_stage(cls, config: Any, check: StageCheck) -> None:
        check_stage_teachers([(e.name, f"teachers[{i}].name") for i, e in enumerate(config.teachers)], check)

    @classmethod
    def check_task(cls, config: Any, task: Any, where: str) -> None:
        check_path_teachers([(e.name, f"teachers[{i}].name") for i, e in enumerate(config.teachers)], where)
        for i, e in enumerate(config.teachers):
            n = label_count(e.name) if e.target == "logits" else None
            if n is not None and n != task.num_labels:
                fail(where, f"teachers[{i}].target", f"is 'logits', but teacher '{e.name}' predicts {n} classes and "
                     f"the task '{task.name}' has {task.num_labels}; use target: features for a teacher of another task")

    def needs(self) -> set[str]:
        return set(FEATURE_READS) if any(e.target == "features" for e in self.config.teachers) else set()

    def _load(self) -> list[Any]:
        return [self.ctx.teachers.get(e.name, set(FEATURE_READS) if e.target == "features" else set(), self.where)
                for e in self.config.teachers]

    def _teacher_target(self, i: int, state: TrainState) -> torch.Tensor:
        """Teacher i's logits, or its pooled last hidden states, for this batch."""
        out = self.teachers_[i].outputs(state.batch)
        if self.config.teachers[i].target == "logits":
            if out.logits.shape[-1] != state.outputs.logits.shape[-1]:
                raise ConfigError(f"{self.where}: teacher '{self.config.teachers[i].name}' gives "
                                  f"{out.logits.shape[-1]} logits, the student {state.outputs.logits.shape[-1]}; "
                                  "use target: features for it")
            return out.logits.float()
        return pool(out.hidden_states[-1].float(), out.attention_mask, self.config.pooling)

    def on_train_end(self, state: TrainState) -> None:
        self.__dict__.pop("teachers_", None)  # the service keeps them for later stages
