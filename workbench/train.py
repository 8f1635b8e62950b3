"""The training loop: AdamW, linear warm-up/decay, gradient clipping, seeds, recipe hooks,
named loss terms, evaluation every epoch, checkpoints every N steps, and exact resume after a kill.

The loss is the weighted sum of the named terms every recipe contributes (`ce`, `kd_logits`,
`hidden_l3`, ...); each term is logged per step to the progress bar and to the stage's
`history.csv` (step, epoch, lr, loss, every term, and the validation metrics at epoch ends).
Parameters that recipes own (projections, prediction heads) join the optimizer, the schedule
and the checkpoint before any checkpoint is restored.

Data order is a seeded permutation per epoch, and the checkpoint holds the model, optimizer,
scheduler, RNG and recipe states plus the position in the epoch, so a resumed run takes the
same steps the uninterrupted one would have.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from workbench.config import ConfigError, fail
from workbench.forward import forward_with
from workbench.recipes.base import LossTerms, Recipe, TrainState
from workbench.results import atomic_file, write_csv


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup: float = 0.1
    """Fraction of the optimizer steps spent warming the learning rate up from 0."""
    max_grad_norm: float = 1.0
    checkpoint_every: int = 100
    """Optimizer steps between checkpoints (0: only at epoch ends)."""
    eval_batch_size: int = 64
    max_steps: int | None = None
    """Stop after this many optimizer steps (overrides epochs when smaller)."""
    group_by_length: bool = True
    """Batch examples of similar length together (within random windows of 50 batches, batch
    order shuffled), as Hugging Face's `group_by_length` does: padding is dynamic, so on
    short-sentence tasks this halves the tokens a step computes on. False: plain shuffling."""

    def validate(self, where: str) -> None:
        for key in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, key) < 1:
                fail(where, key, f"must be >= 1, got {getattr(self, key)}")
        if not 0 < self.lr < 1:
            fail(where, "lr", f"must be in (0, 1), got {self.lr}")
        if not 0 <= self.warmup < 1:
            fail(where, "warmup", f"must be in [0, 1), got {self.warmup}")
        if self.weight_decay < 0:
            fail(where, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        if self.max_grad_norm <= 0:
            fail(where, "max_grad_norm", f"must be > 0, got {self.max_grad_norm}")
        if self.checkpoint_every < 0:
            fail(where, "checkpoint_every", f"must be >= 0, got {self.checkpoint_every}")
        if self.max_steps is not None and self.max_steps < 1:
            fail(where, "max_steps", f"must be >= 1, got {self.max_steps}")


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _param_groups(model: nn.Module, weight_decay: float, lr: float | None = None,
                  lr_scales: dict[str, float] | None = None) -> list[dict[str, Any]]:
    # Frozen parameters are included: AdamW skips a parameter without a gradient, so a recipe can
    # freeze a part at the start of a stage and unfreeze it later (it then trains normally).
    # lr_scales: parameters whose name starts with a prefix get lr * scale (their own groups).
    scales = dict(lr_scales or {})
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        scale = next((v for k, v in scales.items() if name.startswith(k)), 1.0)
        no_decay = p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name
        groups.setdefault((scale, no_decay), []).append(p)
    out = []
    for (scale, no_decay), params in sorted(groups.items(), key=lambda kv: (kv[0][0] != 1.0, kv[0])):
        g: dict[str, Any] = {"params": params, "weight_decay": 0.0 if no_decay else weight_decay}
        if scale != 1.0 and lr is not None:
            g["lr"] = lr * scale
        out.append(g)
    return out or [{"params": [], "weight_decay": weight_decay}]


def _adamw(groups: list[dict[str, Any]], lr: float) -> torch.optim.AdamW:
    # The fused kernel updates all parameters in one pass: on CPU it is ~5x faster than the
    # default per-tensor loop (0.02 s vs 0.10 s a step for MiniLM), which is ~10% of a step.
    params = [p for g in groups for p in g["params"]]
    fused = all(p.device.type == "cpu" and p.dtype in (torch.float32, torch.float64) for p in params)
    return torch.optim.AdamW(groups, lr=lr, fused=fused or None)


def example_lengths(data: Any) -> list[int]:
    """Token count of every example (`input_ids` before padding)."""
    if hasattr(data, "with_format"):  # a datasets.Dataset: the column as plain lists, ~7x faster than rows
        return [len(ids) for ids in data.with_format(None)["input_ids"]]
    return [len(data[i]["input_ids"]) for i in range(len(data))]


class Trainer:
    """Trains one stage's model with its recipes' hooks and loss terms."""

    def __init__(self, model: nn.Module, train_data: Any, collate: Callable[[list], dict],
                 config: TrainConfig, recipes: list[Recipe], seed: int, checkpoint_dir: Path | None,
                 evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
                 on_eval: Callable[[int, dict[str, float]], None] | None = None,
                 desc: str = "train", history_path: Path | None = None,
                 on_checkpoint: Callable[[], None] | None = None) -> None:
        self.model, self.data, self.collate, self.cfg = model, train_data, collate, config
        self.recipes, self.seed, self.ckpt_dir = recipes, seed, checkpoint_dir
        self.evaluate, self.on_eval, self.desc = evaluate, on_eval, desc
        self.history_path, self.on_checkpoint = history_path, on_checkpoint
        self.steps_per_epoch = math.ceil(len(train_data) / config.batch_size)
        self.total_steps = self.steps_per_epoch * config.epochs
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)
        self.history: list[dict[str, float]] = []
        """One row per epoch: step, loss and the validation metrics."""
        self.step_log: list[dict[str, float]] = []
        """One row per optimizer step: step, epoch, lr, loss and every loss term."""
        self.steps_run = 0
        """Optimizer steps taken by this process (a resumed run takes only the remaining ones)."""
        self.resumed_from_step = 0
        """The checkpoint's step this process started from (0: the stage started from scratch)."""
        self.needs: set[str] = set().union(*(r.needs() for r in recipes)) if recipes else set()

    def _hook(self, name: str, state: TrainState) -> None:
        for r in self.recipes:
            getattr(r, name)(state)

    def _owned(self) -> list[tuple[Recipe, nn.Module]]:
        return [(r, r.owned) for r in self.recipes if r.owned is not None]

    def _checkpoint(self, state: TrainState, scheduler: Any, epoch: int, batch_in_epoch: int) -> None:
        self._write_history()
        if self.on_checkpoint is not None:
            self.on_checkpoint()  # e.g. the teachers' logit caches, before the state that relies on them
        if self.ckpt_dir is None:
            return
        state_dicts = {
            "model": self.model.state_dict(), "optimizer": state.optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "step": state.step, "epoch": epoch,
            "batch_in_epoch": batch_in_epoch, "rng": torch.get_rng_state(),
            "recipes": [r.state_dict() for r in self.recipes],
            "owned": [m.state_dict() if m is not None else None for m in (r.owned for r in self.recipes)],
            "history": self.history, "step_log": self.step_log,
        }
        with atomic_file(self.ckpt_dir / "last.pt") as tmp:  # a killed run keeps its previous checkpoint
            torch.save(state_dicts, tmp)

    def _write_history(self) -> None:
        if self.history_path is None:
            return
        rows = [dict(r) for r in self.step_log]
        for ep in self.history:  # validation metrics on the step that closed each epoch
            for r in rows:
                if r["step"] == ep["step"]:
                    r.update({k: v for k, v in ep.items() if k.startswith("val_")})
        cols = ["step", "epoch", "lr", "loss"] + sorted({k for r in rows for k in r} - {"step", "epoch", "lr", "loss"},
                                                       key=lambda k: (k.startswith("val_"), k))
        write_csv(self.history_path, rows, cols)

    def _order(self, epoch: int) -> list[int]:
        """The epoch's example order, a pure function of (seed, epoch) so a resumed run repeats it."""
        g = torch.Generator().manual_seed(self.seed * 10_007 + epoch)
        order = torch.randperm(len(self.data), generator=g).tolist()
        if not self.cfg.group_by_length:
            return order
        bs = self.cfg.batch_size
        lengths = self._lengths
        window = bs * 50
        batches = []
        for w in range(0, len(order), window):
            chunk = sorted(order[w:w + window], key=lambda i: -lengths[i])
            batches += [chunk[i:i + bs] for i in range(0, len(chunk), bs)]
        # only the very last batch can be short; keep it last so batches stay aligned
        full, tail = (batches[:-1], batches[-1:]) if len(batches[-1]) < bs else (batches, [])
        shuffled = [full[i] for i in torch.randperm(len(full), generator=g).tolist()] + tail
        return [i for batch in shuffled for i in batch]

    @functools.cached_property
    def _lengths(self) -> list[int]:
        return example_lengths(self.data)

    def _loss(self, state: TrainState) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted sum of every recipe's named terms, and each term's value."""
        terms: LossTerms = {}
        owner: dict[str, str] = {}
        for r in self.recipes:
            for name, (weight, value) in r.loss_terms(state).items():
                if name in terms:
                    raise ConfigError(f"stage '{self.desc}': recipes '{owner[name]}' and '{r.name}' both "
                                      f"contribute the loss term '{name}'; keep one of them")
                terms[name], owner[name] = (float(weight), value), r.name
        if not terms:
            raise ConfigError(f"stage '{self.desc}': no recipe contributes a loss term "
                              "(add 'finetune' or a distill_* recipe)")
        loss = sum(w * v for w, v in terms.values() if w != 0.0)
        return loss, {name: float(v.detach()) for name, (_, v) in terms.items()}

    def train(self) -> nn.Module:
        cfg, model = self.cfg, self.model
        seed_everything(self.seed)
        for r in self.recipes:
            r.setup(model)
        scales = {k: v for r in self.recipes for k, v in r.lr_scales().items()}
        groups = _param_groups(model, cfg.weight_decay, cfg.lr, scales)
        for r, owned in self._owned():
            groups += _param_groups(owned, cfg.weight_decay)
        groups = [g for g in groups if g["params"]]
        optimizer = self.optimizer = _adamw(groups, cfg.lr)  # kept for inspection (tests, callbacks)
        params = [p for g in groups for p in g["params"]]
        warm = int(cfg.warmup * self.total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (
            (s + 1) / max(1, warm) if s < warm else max(0.0, (self.total_steps - s) / max(1, self.total_steps - warm))))
        state = TrainState(model, optimizer, 0, self.total_steps, 0, self.steps_per_epoch)
        start_epoch, skip = 0, 0
        ckpt = self.ckpt_dir / "last.pt" if self.ckpt_dir else None
        if ckpt is not None and ckpt.exists():
            saved = torch.load(ckpt, weights_only=True)
            model.load_state_dict(saved["model"])
            for r, owned_state in zip(self.recipes, saved["owned"]):
                if owned_state is not None:
                    r.owned.load_state_dict(owned_state)
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            torch.set_rng_state(saved["rng"])
            for r, rs in zip(self.recipes, saved["recipes"]):
                r.load_state_dict(rs)
            state.step, start_epoch, skip = saved["step"], saved["epoch"], saved["batch_in_epoch"]
            self.history, self.step_log = saved["history"], saved["step_log"]
            self.resumed_from_step = state.step
            print(f"[workbench]   {self.desc}: resuming from the checkpoint at step {state.step} of "
                  f"{self.total_steps}", flush=True)
        self._hook("on_train_begin", state)
        bar = tqdm(total=self.total_steps, initial=state.step, desc=self.desc, leave=False,
                   disable=os.environ.get("WORKBENCH_PROGRESS", "1") == "0")
        for epoch in range(start_epoch, cfg.epochs):
            if state.step >= self.total_steps:
                break
            state.epoch = epoch
            model.train()
            for _, owned in self._owned():
                owned.train()
            self._hook("on_epoch_begin", state)
            order = self._order(epoch)
            for b in range(skip, self.steps_per_epoch):
                if state.step >= self.total_steps:
                    break
                idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                state.batch = self.collate([self.data[i] for i in idx])
                self._hook("on_step_begin", state)
                state.outputs = forward_with(model, state.batch, self.needs)
                loss, values = self._loss(state)
                state.loss = loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                lr = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                state.step += 1
                self.steps_run += 1
                self._hook("on_after_optimizer_step", state)
                self._hook("on_step_end", state)
                state.logs["loss"] = float(loss.detach())
                self.step_log.append({"step": state.step, "epoch": epoch + 1, "lr": lr,
                                      "loss": state.logs["loss"], **values})
                bar.update(1)
                bar.set_postfix({k: f"{v:.3g}" for k, v in {"loss": state.logs["loss"], **values}.items()})
                if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
                    self._checkpoint(state, scheduler, epoch, b + 1)
            skip = 0
            metrics = self.evaluate(model) if self.evaluate else {}
            model.train()
            self.history.append({"epoch": epoch + 1, "step": state.step, "loss": state.logs.get("loss", float("nan")),
                                 **{f"val_{k}": v for k, v in metrics.items()}})
            self._hook("on_epoch_end", state)
            self._checkpoint(state, scheduler, epoch + 1, 0)
            if self.on_eval is not None:
                self.on_eval(epoch + 1, metrics)
        bar.close()
        self._hook("on_train_end", state)
        self._write_history()
        model.eval()
        return model
