"""`length_search`: choose a length configuration for a length-adaptive model (LAT's evolutionary
search), under a latency budget, and save it with the model (inference only: its stage does not
train; put it after the `length_adaptive` stage and before `workbench_runtime`).

    - name: searched
      recipes:
        - length_search: {budget: 0.5, trials: 60, latency: runtime}

On the VALIDATION split (never the test split), NSGA-II (`workbench.dynamic.search`) scores
`trials` per-layer ratio configurations by accuracy and by cost under a cost model (`latency`):
"runtime" = a per-layer latency table measured on our int8 runtime at a few token counts and
interpolated (`workbench.runtime.latency`, via `workbench.dynamic.latency`), "tokens" = tokens
processed (deterministic). `budget` is a fraction of the full-length model's cost on
the same examples: the chosen configuration is the most accurate one whose cost is within it,
and becomes `model.dynamic.length_ratios` (saved through the `dynamic_spec` edit; the runtime
compiles it). A budget below the smallest reachable configuration fails before the search
(ConfigError: no silent fallback to a configuration that breaks the budget).

Writes `<run>/dynamic/<stage>/length_pareto.csv` (every configuration: ratios, validation
accuracy, cost, fraction of the full cost, on the front, chosen), `latency_table.json` and
`dynamic.json` (the chosen spec); when the model has exit heads, the CSV also holds a sweep of
`exit_thresholds` on top of the chosen lengths (rows `kind=exit`; the saved threshold stays the
model's unless `exit_threshold` is set).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from workbench.config import fail
from workbench.dynamic.latency import DEFAULT_TOKEN_COUNTS, CostFn, runtime_cost, token_cost
from workbench.dynamic.search import Validation, check_budget, choose, search, smallest_ratios
from workbench.models.dynamic import DynamicSpec, model_spec
from workbench.models.edits import record_edit
from workbench.recipes.base import Recipe, register_recipe
from workbench.results import write_csv, write_json

LATENCY_MODELS = ("runtime", "tokens")


@dataclass
class LengthSearchConfig:
    budget: float = 0.5
    """Cost budget as a fraction of the full-length model's cost (0.5: half its latency)."""
    trials: int = 60
    latency: str = "runtime"
    """Cost model: runtime (our int8 engine's per-layer latency table) or tokens (tokens processed)."""
    token_counts: list[int] = field(default_factory=lambda: list(DEFAULT_TOKEN_COUNTS))
    """Token counts the latency table is measured at."""
    min_step: float = 0.5
    """Smallest per-layer step factor r_i / r_{i-1} searched."""
    min_ratio: float = 0.05
    step: float = 0.05
    """Grid of the step factors."""
    val_examples: int | None = None
    """Validation examples scored (None: all; quick runs: 200)."""
    batch_size: int = 64
    exit_thresholds: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2, 0.3, 0.4, 0.5])
    """Swept on top of the chosen lengths when the model has exit heads."""
    exit_threshold: float | None = None
    """Saved into the spec (None: keep the model's)."""
    seed: int = 0

    def validate(self, where: str) -> None:
        if not 0.0 < self.budget <= 1.0:
            fail(where, "budget", f"must be a fraction of the full-length cost in (0, 1], got {self.budget}")
        if self.trials < 1:
            fail(where, "trials", f"must be >= 1, got {self.trials}")
        if self.latency not in LATENCY_MODELS:
            fail(where, "latency", f"must be one of {LATENCY_MODELS}, got {self.latency!r}")
        if len(self.token_counts) < 2 or sorted(set(self.token_counts)) != list(self.token_counts) \
                or self.token_counts[0] < 1:
            fail(where, "token_counts", f"must be at least two increasing counts >= 1, got {self.token_counts}")
        if not 0.0 < self.min_step <= 1.0:
            fail(where, "min_step", f"must be in (0, 1], got {self.min_step}")
        if not 0.0 < self.min_ratio <= 1.0:
            fail(where, "min_ratio", f"must be in (0, 1], got {self.min_ratio}")
        if self.min_step < 1.0 and not 0.0 < self.step <= 1.0 - self.min_step + 1e-9:
            fail(where, "step", f"must be in (0, 1 - min_step], got {self.step}")
        if self.batch_size < 1:
            fail(where, "batch_size", f"must be >= 1, got {self.batch_size}")
        if self.seed < 0:
            fail(where, "seed", f"must be >= 0, got {self.seed}")
        if self.val_examples is not None and self.val_examples < 1:
            fail(where, "val_examples", f"must be >= 1 or null, got {self.val_examples}")
        for key, vals in (("exit_thresholds", self.exit_thresholds),
                          ("exit_threshold", [] if self.exit_threshold is None else [self.exit_threshold])):
            if any(not 0.0 <= v <= 1.0 for v in vals):
                fail(where, key, f"must be in [0, 1], got {vals}")


@register_recipe("length_search")
class LengthSearch(Recipe):
    """Evolutionary search of `length_ratios` under a cost budget (one-shot, inference only)."""

    Config = LengthSearchConfig
    uses_architecture = True
    inference_only = True

    cost_fn: CostFn | None = None
    """A cost model to use instead of `latency` (tests, other engines); see workbench.dynamic.latency."""

    def cost_model(self, model: nn.Module) -> tuple[CostFn, dict[str, Any]]:
        c = self.config
        if self.cost_fn is not None:
            return self.cost_fn, {"source": "given cost function"}
        if c.latency == "tokens":
            return token_cost, {"source": "tokens processed"}
        cost = runtime_cost(model, tuple(c.token_counts), repeats=3 if self.ctx.quick else 7)
        return cost, cost.to_dict()

    def validation(self) -> Validation:
        from workbench.data import Collator, tokenize_task

        val = tokenize_task(self.ctx.task, self.ctx.tokenizer)["validation"]
        limit = self.config.val_examples or (200 if self.ctx.quick else None)
        if limit is not None:
            val = val.select(range(min(limit, len(val))))
        if not len(val):
            fail(self.where, "val_examples", "leaves no validation example to search on; the task needs a validation split")
        return Validation(val, Collator(self.ctx.tokenizer), self.config.batch_size)

    def apply(self, model: nn.Module) -> nn.Module:
        from workbench.models.arch import architecture

        c = self.config
        n_layers = architecture(model, self.where).num_layers
        base = model_spec(model) or DynamicSpec()
        static = base.replace(length_ratios=None, exit_threshold=None, exit_at=None)
        val = self.validation()
        cost, table = self.cost_model(model)
        full = val.evaluate(model, static, cost)
        smallest = val.evaluate(model, static.replace(length_ratios=smallest_ratios(n_layers, c.min_step, c.min_ratio)),
                                cost)
        check_budget(smallest.cost, full.cost, c.budget, self.where)

        def score(ratios: list[float]) -> tuple[float, float]:
            e = val.evaluate(model, static.replace(length_ratios=ratios), cost)
            return e.accuracy, e.cost

        cands = search(score, n_layers, c.trials, c.seed, c.min_step, c.min_ratio, c.step)
        best = choose(cands, c.budget * full.cost, self.where)
        rows = [{"kind": "length", "length_ratios": json.dumps(x.ratios), "exit_threshold": "",
                 "val_accuracy": round(x.accuracy, 5), "cost": round(x.cost, 6),
                 "cost_fraction": round(x.cost / full.cost, 5) if full.cost else 0.0, "budget": c.budget,
                 "pareto": x.pareto, "chosen": x is best} for x in cands]
        spec = base.replace(length_ratios=best.ratios)
        if c.exit_threshold is not None:
            spec = spec.replace(exit_threshold=c.exit_threshold)
        heads = getattr(model, "exit_heads", None)
        if base.exit_layers and heads is not None:
            for th in c.exit_thresholds:
                e = val.evaluate(model, spec.replace(exit_threshold=th, exit_at=None), cost)
                rows.append({"kind": "exit", "length_ratios": json.dumps(best.ratios), "exit_threshold": th,
                             "val_accuracy": round(e.accuracy, 5), "cost": round(e.cost, 6),
                             "cost_fraction": round(e.cost / full.cost, 5) if full.cost else 0.0,
                             "budget": c.budget, "pareto": "", "chosen": th == spec.exit_threshold,
                             "mean_exit_layer": round(float(e.exit_layer.mean()), 3)})
        record_edit(model, "dynamic_spec", spec=spec.to_dict())
        out = self.ctx.run_dir / "dynamic" / self.ctx.stage
        write_csv(out / "length_pareto.csv", rows, ["kind", "length_ratios", "exit_threshold", "val_accuracy", "cost",
                                                   "cost_fraction", "budget", "pareto", "chosen", "mean_exit_layer"])
        write_json(out / "latency_table.json", table)
        write_json(out / "dynamic.json", {**spec.to_dict(), "val_accuracy": best.accuracy,
                                          "cost_fraction": best.cost / full.cost if full.cost else 0.0,
                                          "full_val_accuracy": full.accuracy, "budget": c.budget})
        print(f"[workbench]   {self.ctx.stage}: length search chose {best.ratios} (validation accuracy "
              f"{best.accuracy:.4f} vs {full.accuracy:.4f} at full length, cost {best.cost / full.cost:.2f} of full, "
              f"budget {c.budget})", flush=True)
        return model
