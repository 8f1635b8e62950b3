"""Movement pruning (Sanh, Wolf & Rush, NeurIPS 2020): keep the weights that move *away* from zero
while fine-tuning, not the largest ones.

Every pruned Linear gets learned importance scores S (one per weight, or per `block: [r, c]` as in
`magnitude_prune`), owned by the recipe (trained and checkpointed with the stage, never saved with
the model). The forward pass uses W ⊙ M(S) and the mask passes gradients straight through, so
dL/dS = (dL/dW') ⊙ W: a score grows when its weight moves away from zero and shrinks when it moves
toward it. Two variants:

* **hard** (`method: hard`): M keeps the top scores of each layer, `sparsity` reached on the cubic
  schedule of `magnitude_prune` (`cubic_sparsity`, from 0 at `start` to `sparsity` at `end`); with
  `pattern: "N:M"` it keeps the top N of every M consecutive scores along the input dimension
  (M per group at first, stepping down to N on the same schedule);
* **soft** (`method: soft`): M = sigmoid(S) > τ, plus the loss term `movement_l1` =
  λ · mean over layers of mean(sigmoid(S)), which drives scores down; the sparsity follows from λ
  (`l1_weight`) and τ (`threshold`). As in the authors' code (`masked_run_glue.py`), τ rises from 0
  to `threshold` on the cubic schedule and λ with it (λ_t = λ · τ_t / τ).

Choices that follow the authors' code: scores start at 0; they train at their own learning rate
`score_lr` (1e-2) and without weight decay. The trainer gives a recipe's parameters the stage's
learning rate, so the scores are stored as flat tensors (no weight decay in the trainer's grouping)
and scaled by score_lr / lr in the forward pass with the gradient passed unscaled: with Adam this
moves them exactly as a parameter group at `score_lr` would, without inflating the gradient norm
that clipping sees. At the end of training the final mask multiplies the weights and the Linear
layers get their plain forward back: the saved model is dense-shaped and sparse, like
`magnitude_prune`'s, for the runtime's sparse kernels and later stages. It trains under any loss
recipe of the stage, e.g. `distill_logits` (the paper's best results are under distillation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from workbench.config import fail
from workbench.recipes.base import LossTerms, Recipe, TrainState, register_recipe
from workbench.recipes.prune.magnitude import cubic_sparsity, expand_blocks, keep_top, prunable_linears
from workbench.recipes.prune.nm_pattern import check_pattern_fits, nm_keep, nm_mask, parse_pattern, validate_pattern
from workbench.targets import validate_target_syntax


@dataclass
class MovementPruneConfig:
    sparsity: float | None = None
    """Hard movement: the final fraction of pruned weights (blocks) in every layer; required unless
    `pattern` sets it. Soft movement: not used (λ and τ set the sparsity)."""
    method: Literal["hard", "soft"] = "hard"
    block: tuple[int, int] = (1, 1)
    """One score per `[r, c]` block of weights; [1, 1] (per weight) as in the paper."""
    pattern: str | None = None
    """Hard movement only: N:M sparsity, e.g. "2:4" (per weight; `sparsity` is then 1 - N/M)."""
    start: float = 0.0
    """Fraction of the stage's optimizer steps before pruning begins (scores train from step 0)."""
    end: float = 0.7
    """Fraction of the stage's optimizer steps at which `sparsity` (or τ) is reached."""
    threshold: float = 0.1
    """Soft movement: τ, a weight is kept while sigmoid(score) > τ."""
    l1_weight: float | None = None
    """Soft movement (required): λ, the final weight of the `movement_l1` term; larger is sparser.
    The sparsity it gives depends on the budget: a score moves about `score_lr` a step at most, so
    short runs need a large λ. On a 3-layer MiniLM over 504 steps, λ = 400, 1600, 6400 removed 25 %,
    55 %, 83 % of the weights and λ = 12000 about 91 % (results/movement/soft/calibration.csv)."""
    score_lr: float = 1e-2
    """Learning rate of the scores (the authors' `mask_scores_learning_rate`)."""
    targets: list[str] | None = None
    """Linear layers to prune, as `magnitude_prune`'s: exact names or `re:<pattern>`; None: every
    encoder Linear."""

    def validate(self, where: str) -> None:
        if any(b < 1 for b in self.block):
            fail(where, "block", f"must be two positive sizes like [1, 4], got {list(self.block)}")
        if self.method == "soft":
            for key, why in (("sparsity", "soft movement's sparsity follows from 'l1_weight' and 'threshold'"),
                             ("pattern", "an N:M pattern fixes the sparsity, which soft movement does not")):
                if getattr(self, key) is not None:
                    fail(where, key, f"is set but {why}; leave it out or use method: hard")
            if self.l1_weight is None or self.l1_weight <= 0:
                fail(where, "l1_weight", f"must be > 0 with method: soft (larger is sparser; read the sparsity the "
                     f"stage reaches in its metrics), got {self.l1_weight}")
            if not 0.0 < self.threshold < 1.0:
                fail(where, "threshold", f"must be in (0, 1) (it is compared with sigmoid(score)), got {self.threshold}")
        else:
            if self.l1_weight is not None:
                fail(where, "l1_weight", "is set but only soft movement has an L1 term; use method: soft or leave it out")
            validate_pattern(self, where, blocks=((1, 1),))
            if not 0.0 <= self.sparsity < 1.0:
                fail(where, "sparsity", f"must be in [0, 1), got {self.sparsity}")
        if not 0.0 <= self.start < self.end <= 1.0:
            fail(where, "start", f"and 'end' must satisfy 0 <= start < end <= 1, got {self.start}, {self.end}")
        if self.score_lr <= 0:
            fail(where, "score_lr", f"must be > 0, got {self.score_lr}")
        if self.targets is not None:
            validate_target_syntax(self.targets, where)


def _key(name: str) -> str:
    return name.replace(".", "-")  # parameter names cannot hold dots


@register_recipe("movement_prune")
class MovementPrune(Recipe):
    """Learn a score per weight (or block) and keep the weights moving away from zero."""

    Config = MovementPruneConfig
    uses_architecture = True

    @classmethod
    def requires_training(cls, config: MovementPruneConfig) -> bool:
        return True  # the scores are learned; the task loss comes from another recipe of the stage

    def __init__(self, config: MovementPruneConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.layers: dict[str, nn.Linear] = {}
        self.current = 0.0
        """Hard: the schedule's sparsity now; soft: τ now."""
        self.scale = 1.0
        self._keep: dict[str, torch.Tensor] = {}  # masks of the current step (scores change per step)
        self.pattern = parse_pattern(config.pattern, self.where) if config.pattern else None

    def apply(self, model: nn.Module) -> nn.Module:
        check_pattern_fits(prunable_linears(model, self.config.targets, self.where), self.pattern, self.where)
        return model

    def setup(self, model: nn.Module) -> None:
        self.layers = prunable_linears(model, self.config.targets, self.where)
        r, c = self.config.block
        self.grids = {name: (math.ceil(lin.weight.shape[0] / r), math.ceil(lin.weight.shape[1] / c))
                      for name, lin in self.layers.items()}
        self.owned = nn.ParameterDict({
            _key(name): nn.Parameter(torch.zeros(g[0] * g[1], device=self.layers[name].weight.device))
            for name, g in self.grids.items()})

    # --- scores and masks -------------------------------------------------------------------
    def scores(self, name: str) -> torch.Tensor:
        """The layer's scores on their grid: score_lr / lr times the stored values, with the
        gradient passed unscaled (see the module docstring)."""
        p = self.owned[_key(name)]
        return (p.detach() * self.scale + (p - p.detach())).view(self.grids[name])

    @torch.no_grad()
    def keep(self, name: str, scores: torch.Tensor) -> torch.Tensor:
        """The bool mask on the score grid at the schedule's current point."""
        if name not in self._keep:
            if self.config.method == "soft":
                self._keep[name] = torch.sigmoid(scores) > self.current
            elif self.pattern is not None:
                self._keep[name] = nm_mask(scores, nm_keep(self.current, self.pattern), self.pattern[1])
            else:
                self._keep[name] = keep_top(scores, self.current)
        return self._keep[name]

    def mask(self, name: str) -> torch.Tensor:
        """The {0,1} weight mask, straight-through: its gradient goes to the scores unchanged."""
        s = self.scores(name)
        ste = self.keep(name, s.detach()).to(s.dtype) + (s - s.detach())
        return expand_blocks(ste, self.config.block, self.layers[name].weight.shape)

    def _forward(self, name: str, lin: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, lin.weight * self.mask(name).to(lin.weight.dtype), lin.bias)

    def _schedule(self, step: int, total: int) -> None:
        cfg = self.config
        final = cfg.threshold if cfg.method == "soft" else cfg.sparsity
        now = cubic_sparsity(step, total, 0.0, final, cfg.start, cfg.end)
        if now != self.current:
            self.current, self._keep = now, {}

    # --- training ---------------------------------------------------------------------------
    def on_train_begin(self, state: TrainState) -> None:
        first = next(iter(self.owned.parameters()))
        group = next(g for g in state.optimizer.param_groups if any(p is first for p in g["params"]))
        self.scale = self.config.score_lr / group.get("initial_lr", group["lr"])
        self._keep = {}
        self._schedule(state.step, state.total_steps)
        for name, lin in self.layers.items():  # an instance attribute: the saved state_dict is unchanged
            lin.forward = partial(self._forward, name, lin)

    def on_step_begin(self, state: TrainState) -> None:
        self._schedule(state.step, state.total_steps)

    def loss_terms(self, state: TrainState) -> LossTerms:
        cfg = self.config
        if cfg.method != "soft":
            return {}
        l1 = torch.stack([torch.sigmoid(self.scores(n)).mean() for n in self.layers]).mean()
        return {"movement_l1": (cfg.l1_weight * self.current / cfg.threshold, l1)}

    def on_after_optimizer_step(self, state: TrainState) -> None:
        self._keep = {}  # the scores moved
        state.logs["sparsity"] = self.current if self.config.method == "hard" else self.sparsity()

    @torch.no_grad()
    def sparsity(self) -> float:
        """The fraction of scores the current mask prunes, over all layers."""
        kept = [self.keep(n, self.scores(n)) for n in self.layers]
        return 1.0 - sum(int(k.sum()) for k in kept) / max(1, sum(k.numel() for k in kept))

    @torch.no_grad()
    def on_train_end(self, state: TrainState) -> None:
        # The stage ends at the schedule's end point; the final mask zeroes the weights for good.
        self._schedule(state.total_steps, state.total_steps)
        for name, lin in self.layers.items():
            lin.weight.mul_(self.mask(name).to(lin.weight.dtype))
            lin.__dict__.pop("forward", None)
        state.logs["sparsity"] = self.sparsity()
        self._keep = {}
