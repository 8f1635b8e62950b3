"""The training loop: AdamW, linear warm-up/decay, gradient clipping, seeds, recipe hooks,
evaluation every epoch, checkpoints every N steps, and exact resume after a kill.

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

from workbench.config import fail
from workbench.recipes.base import Recipe, TrainState


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


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _adamw(groups: list[dict[str, Any]], lr: float) -> torch.optim.AdamW:
    # The fused kernel updates all parameters in one pass: on CPU it is ~5x faster than the
    # default per-tensor loop (0.02 s vs 0.10 s a step for MiniLM), which is ~10% of a step.
    params = [p for g in groups for p in g["params"]]
    fused = all(p.device.type == "cpu" and p.dtype in (torch.float32, torch.float64) for p in params)
    return torch.optim.AdamW(groups, lr=lr, fused=fused or None)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def example_lengths(data: Any) -> list[int]:
    """Token count of every example (`input_ids` before padding)."""
    if hasattr(data, "with_format"):  # a datasets.Dataset: the column as plain lists, ~7x faster than rows
        return [len(ids) for ids in data.with_format(None)["input_ids"]]
    return [len(data[i]["input_ids"]) for i in range(len(data))]


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k != "labels"}


class Trainer:
    """Trains one stage's model with its recipes' hooks."""

    def __init__(self, model: nn.Module, train_data: Any, collate: Callable[[list], dict],
                 config: TrainConfig, recipes: list[Recipe], seed: int, checkpoint_dir: Path | None,
                 evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
                 on_eval: Callable[[int, dict[str, float]], None] | None = None,
                 desc: str = "train") -> None:
        self.model, self.data, self.collate, self.cfg = model, train_data, collate, config
        self.recipes, self.seed, self.ckpt_dir = recipes, seed, checkpoint_dir
        self.evaluate, self.on_eval, self.desc = evaluate, on_eval, desc
        self.steps_per_epoch = math.ceil(len(train_data) / config.batch_size)
        self.total_steps = self.steps_per_epoch * config.epochs
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)
        self.history: list[dict[str, float]] = []

    def _hook(self, name: str, state: TrainState) -> None:
        for r in self.recipes:
            getattr(r, name)(state)

    def _checkpoint(self, state: TrainState, scheduler: Any, epoch: int, batch_in_epoch: int) -> None:
        if self.ckpt_dir is None:
            return
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        _atomic_torch_save({
            "model": self.model.state_dict(), "optimizer": state.optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "step": state.step, "epoch": epoch,
            "batch_in_epoch": batch_in_epoch, "rng": torch.get_rng_state(),
            "recipes": [r.state_dict() for r in self.recipes], "history": self.history,
        }, self.ckpt_dir / "last.pt")

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

    def train(self) -> nn.Module:
        cfg, model = self.cfg, self.model
        seed_everything(self.seed)
        optimizer = _adamw(_param_groups(model, cfg.weight_decay), cfg.lr)
        warm = int(cfg.warmup * self.total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (
            (s + 1) / max(1, warm) if s < warm else max(0.0, (self.total_steps - s) / max(1, self.total_steps - warm))))
        state = TrainState(model, optimizer, 0, self.total_steps, 0, self.steps_per_epoch)
        start_epoch, skip = 0, 0
        ckpt = self.ckpt_dir / "last.pt" if self.ckpt_dir else None
        resumed = ckpt is not None and ckpt.exists()
        if resumed:
            saved = torch.load(ckpt, weights_only=False)
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            torch.set_rng_state(saved["rng"])
            for r, rs in zip(self.recipes, saved["recipes"]):
                r.load_state_dict(rs)
            state.step, start_epoch, skip = saved["step"], saved["epoch"], saved["batch_in_epoch"]
            self.history = saved["history"]
        self._hook("on_train_begin", state)
        bar = tqdm(total=self.total_steps, initial=state.step, desc=self.desc, leave=False,
                   disable=os.environ.get("WORKBENCH_PROGRESS", "1") == "0")
        for epoch in range(start_epoch, cfg.epochs):
            if state.step >= self.total_steps:
                break
            state.epoch = epoch
            model.train()
            self._hook("on_epoch_begin", state)
            order = self._order(epoch)
            for b in range(skip, self.steps_per_epoch):
                if state.step >= self.total_steps:
                    break
                idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                state.batch = self.collate([self.data[i] for i in idx])
                self._hook("on_step_begin", state)
                state.outputs = model(**model_inputs(state.batch))
                loss = torch.nn.functional.cross_entropy(state.outputs.logits, state.batch["labels"])
                for r in self.recipes:
                    loss = r.compute_loss(state, loss)
                state.loss = loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                state.step += 1
                self._hook("on_after_optimizer_step", state)
                self._hook("on_step_end", state)
                state.logs["loss"] = float(loss.detach())
                bar.update(1)
                bar.set_postfix({k: f"{v:.3g}" for k, v in state.logs.items()})
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
        model.eval()
        return model
