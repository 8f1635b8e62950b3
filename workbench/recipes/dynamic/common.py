"""What the dynamic training recipes share."""
from __future__ import annotations

import torch

from workbench.config import fail
from workbench.recipes.base import StageCheck


def require_full_model_loss(check: StageCheck, key: str) -> None:
    """`length_adaptive` and `early_exit` train sub-networks and exits *from* the full model's
    output; the full model itself learns from another recipe of the stage (`finetune` or a
    `distill_*` recipe). Without one its logits would be a fixed random target."""
    if not any(r in ("finetune", "pseudo_label") or r.startswith("distill_") for r in check.recipes):
        fail(check.where, key, f"needs a recipe in the same stage that trains the full model (finetune or "
             f"distill_logits); the stage has {check.recipes}")



def soft_kl(student: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(target / T) || softmax(student / T)) (the registry's `kl`), with the
    target detached: in-place distillation teaches the sub-network, never the full model."""
    from workbench.recipes.distill.losses import get_loss

    return get_loss("kl", "soft_kl")(student, target.detach(), temperature=temperature) * temperature ** 2
