"""What every recipe that learns from a teacher shares: the teacher (`config.teacher`) must be
something the run can serve (an earlier stage, an embedded model, a local model folder, or a hub
name in the local cache), checked while the recipe file is validated; and such a recipe
contributes loss terms, so its stage trains."""
from __future__ import annotations

from pathlib import Path

from workbench.config import fail
from typing import Any

from workbench.recipes.base import Recipe, StageCheck


def check_teacher(name: str, check: StageCheck, key: str = "teacher") -> None:
    if name in check.earlier:
        return
    from workbench.models import MODELS

    if name in MODELS or (Path(name).expanduser() / "config.json").exists():
        return
    if not name.startswith((".", "/", "~")) and not Path(name).expanduser().exists() and _hub_available(name):
        return
    if name == check.stage:
        fail(check.where, key, f"'{name}' is this stage itself; name an earlier stage")
    fail(check.where, key, f"must name an earlier stage ({', '.join(check.earlier) or 'none yet'}), an embedded "
         f"model or a local model folder, got {name!r}")


def _hub_available(name: str) -> bool:
    """A hub id counts when it is in the local Hugging Face cache or downloads are allowed."""
    from workbench.models.registry import allow_download

    if allow_download():
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # malformed ids and the like: not available
        return False


class TeacherRecipe(Recipe):
    """Base of the distillation recipes: a `teacher:` setting, loss terms, a validated teacher."""

    @classmethod
    def contributes_loss(cls, config: Any) -> bool:
        return True

    @classmethod
    def teacher_names(cls, config: Any) -> list[str]:
        return [config.teacher]

    @classmethod
    def check_stage(cls, config: Any, check: StageCheck) -> None:
        check_teacher(config.teacher, check)
