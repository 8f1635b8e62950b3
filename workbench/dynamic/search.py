"""Length-configuration search (LAT's evolutionary search): the accuracy-cost front of one
length-adaptive model, and the configuration chosen for a cost budget.

A configuration is one kept-token ratio per layer (non-increasing). The search is Optuna's
NSGA-II (a genetic algorithm with non-dominated sorting) over per-layer *step* factors
f_i in [min_step, 1], r_i = r_{i-1} * f_i, so every sample is a valid, non-increasing
configuration; two objectives: validation accuracy (max) and cost (min, `latency` cost model).
The last layer's ratio is not searched: dropping after the last layer saves nothing (only [CLS]
feeds the classifier), so it equals the previous layer's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from workbench.config import ConfigError
from workbench.dynamic.latency import CostFn
from workbench.models.dynamic import DynamicSpec, dynamic_forward


@dataclass
class Evaluation:
    """One spec run over the validation batches."""

    accuracy: float
    cost: float
    tokens: np.ndarray
    """[examples, layers] tokens processed."""
    exit_layer: np.ndarray


class Validation:
    """Validation examples, batched once (shortest first), to score many specs quickly."""

    def __init__(self, data: Any, collate: Callable[[list], dict], batch_size: int = 64) -> None:
        from workbench.train import example_lengths

        order = np.argsort(example_lengths(data), kind="stable") if len(data) else np.zeros(0, dtype=int)
        self.batches = [collate([data[int(i)] for i in order[s:s + batch_size]])
                        for s in range(0, len(order), batch_size)]
        self.labels = np.concatenate([b["labels"].numpy() for b in self.batches]) if self.batches else np.zeros(0)

    def __len__(self) -> int:
        return len(self.labels)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, spec: DynamicSpec, cost: CostFn) -> Evaluation:
        model.eval()
        preds, tokens, exits = [], [], []
        for b in self.batches:
            logits, trace = dynamic_forward(model, b["input_ids"], b.get("attention_mask"), spec,
                                            b.get("token_type_ids"), return_trace=True)
            preds.append(logits.argmax(-1).numpy())
            tokens.append(trace.tokens.numpy())
            exits.append(trace.exit_layer.numpy())
        tok, ex = np.concatenate(tokens), np.concatenate(exits)
        acc = float((np.concatenate(preds) == self.labels).mean())
        return Evaluation(acc, cost(spec, tok, ex), tok, ex)


def ratios_from_steps(steps: list[float], num_layers: int) -> list[float]:
    """Cumulative products of the step factors (one per layer but the last); the last layer
    repeats the previous ratio."""
    ratios, r = [], 1.0
    for f in steps:
        r = round(r * f, 4)
        ratios.append(r)
    ratios = ratios[: num_layers - 1]
    return ratios + [ratios[-1] if ratios else 1.0]


def smallest_ratios(num_layers: int, min_step: float, min_ratio: float) -> list[float]:
    """The smallest configuration the search can reach."""
    return [max(min_ratio, r) for r in ratios_from_steps([min_step] * (num_layers - 1), num_layers)]


@dataclass
class Candidate:
    ratios: list[float]
    accuracy: float
    cost: float
    pareto: bool = False


def search(evaluate: Callable[[list[float]], tuple[float, float]], num_layers: int, trials: int, seed: int = 0,
           min_step: float = 0.5, min_ratio: float = 0.05, step: float = 0.05) -> list[Candidate]:
    """Evaluate `trials` configurations chosen by NSGA-II (the full-length one and the smallest
    one first); `evaluate(ratios) -> (accuracy, cost)`. Every distinct configuration once."""
    from workbench.optuna_import import optuna_module

    optuna = optuna_module()
    dims = max(0, num_layers - 1)
    seen: dict[tuple[float, ...], Candidate] = {}

    def run(ratios: list[float]) -> Candidate:
        ratios = [max(min_ratio, r) for r in ratios]
        key = tuple(ratios)
        if key not in seen:
            acc, cost = evaluate(ratios)
            seen[key] = Candidate(ratios, acc, cost)
        return seen[key]

    if dims == 0 or trials <= 0:
        run([1.0] * num_layers)
        return _mark_pareto(list(seen.values()))
    sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(20, trials // 3)))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.enqueue_trial({f"f{i}": 1.0 for i in range(dims)})
    study.enqueue_trial({f"f{i}": min_step for i in range(dims)})

    def objective(trial: Any) -> tuple[float, float]:
        steps = [trial.suggest_float(f"f{i}", min_step, 1.0, step=step) for i in range(dims)]
        c = run(ratios_from_steps(steps, num_layers))
        return c.accuracy, c.cost

    study.optimize(objective, n_trials=trials)
    return _mark_pareto(list(seen.values()))


def _mark_pareto(cands: list[Candidate]) -> list[Candidate]:
    from workbench.plots.sweep import pareto_indices

    for i in pareto_indices([(c.accuracy, -c.cost) for c in cands]):
        cands[i].pareto = True
    return sorted(cands, key=lambda c: (c.cost, -c.accuracy))


def choose(cands: list[Candidate], max_cost: float, where: str = "length_search") -> Candidate:
    """The most accurate configuration whose cost is within `max_cost` (ties: the cheaper one).
    None within it -> ConfigError naming the cheapest cost reached."""
    ok = [c for c in cands if c.cost <= max_cost + 1e-12]
    if not ok:
        cheapest = min(c.cost for c in cands)
        raise ConfigError(f"{where}: no configuration fits the budget (cost {max_cost:.4g}; the cheapest found costs "
                          f"{cheapest:.4g}); raise 'budget' or lower 'min_ratio' / 'min_step'")
    return max(ok, key=lambda c: (c.accuracy, -c.cost))


def check_budget(smallest_cost: float, full_cost: float, budget: float, where: str) -> None:
    """Fail before the search when even the smallest configuration costs more than the budget."""
    if full_cost > 0 and smallest_cost > budget * full_cost + 1e-12:
        raise ConfigError(f"{where}: 'budget' {budget} is below what the smallest configuration costs "
                          f"({smallest_cost / full_cost:.3f} of the full-length model); use a budget >= "
                          f"{math.ceil(smallest_cost / full_cost * 100) / 100:.2f} or lower 'min_ratio' / 'min_step'")
