"""`gradient_free_prune`: Nova et al. (2023), "Gradient-Free Structured Pruning with Unlabeled
Data" — remove heads and FFN neurons under a FLOPs budget from the weights and unlabeled text
alone: no labels, no gradients, no training. The authors' code is not public; the choices we
made are marked in `workbench.prune.gradient_free`.

1. Unlabeled text: `num_examples` texts of the stage's training split with every column but the
   model inputs dropped (labels are never read), or the lines of `corpus:` (a text file, one
   text per line, tokenized with the stage's tokenizer at the task's `max_length`).
2. R2: a representative ranking of each layer's neurons from a kernelised convex-hull
   approximation of their weights (`hull_scores`, RBF kernel `gamma`, `hull_iters` steps).
3. D2: forward passes on the text; each unit's first-order effect on the following LayerNorm
   (`activation_stats`): heads and neurons get an energy, neurons also per-example votes.
4. Search under a MAC budget (`flops`: the fraction of the encoder's FLOPs removed, MACs at the
   sample's mean length or `seq_len`): `search.search_budget` on the energies, the neurons of a
   layer taken in the order of the merged R2/D2 ranking (`representative_weight`,
   `data_weight`); `max_heads_removed` and `targets` as in `retraining_free_prune`.
5. Rescaling (`rescale: true`): layer-wise least squares of each kept head's and neuron's scale
   so that the pruned sub-blocks reproduce the dense model's outputs on the same unlabeled text
   (*choice*: Kwon et al.'s LSMR mask tuning, `workbench.prune.tune`, reference = the dense
   model, damping `damp`, scales above `max_scale` given up).
6. Scales folded in, removed units dropped physically (`structure.shrink`): the stage saves a
   smaller model that reloads with `load_edited_model`.

`model.config.workbench_pruning` records what `retraining_free_prune` records
(`pruning_seconds`, `peak_rss_mb`, `macs_before` / `macs_after`, `flops_removed`, kept heads and
neurons per layer, the least-squares fits) plus the unlabeled source (`corpus`).
"""
from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.config import ConfigError, fail
from workbench.forward import MODEL_INPUT_KEYS
from workbench.prune.flops import encoder_macs, head_macs, neuron_macs
from workbench.prune.gradient_free import activation_stats, merged_neuron_scores, representative_scores
from workbench.prune.search import protect_per_layer, search_budget
from workbench.prune.structure import example_batches, mean_length, selected_units, shrink, structure
from workbench.prune.tune import tune_masks
from workbench.recipes.base import Recipe, register_recipe
from workbench.recipes.prune.common import check_budget_fields, check_max_heads, record_pruning


def corpus_texts(path: str, where: str) -> list[str]:
    """The non-blank lines of a corpus file; a missing, unreadable or empty file is a ConfigError
    naming it."""
    file = Path(path)
    if not file.is_file():
        fail(where, "corpus", f"file '{path}' does not exist (give a text file, one text per line)")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        fail(where, "corpus", f"file '{path}' cannot be read as UTF-8 text: {exc}")
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        fail(where, "corpus", f"file '{path}' has no text: it needs one text per line (or leave 'corpus' out "
             "to use the stage's training texts)")
    return texts


def unlabeled_batches(ctx: Any, corpus: str | None, num_examples: int, batch_size: int, where: str
                      ) -> list[dict[str, Any]]:
    """Batches of model inputs only (no labels, no text), collated like the pipeline's."""
    if corpus is not None:
        max_length = getattr(getattr(ctx.task, "config", None), "max_length", None) or 128
        enc = ctx.tokenizer(corpus_texts(corpus, where), truncation=True, max_length=max_length)
        keys = [k for k in MODEL_INPUT_KEYS if k in enc]
        data: Any = [{k: enc[k][j] for k in keys} for j in range(len(enc["input_ids"]))]
    else:
        data = ctx.train_data
        if data is None or len(data) == 0:
            raise ConfigError(f"{where}: needs unlabeled text, but the stage has no training split: "
                              "give 'corpus' (a text file, one text per line)")
        data = data.select_columns([k for k in MODEL_INPUT_KEYS if k in data.column_names])
    return example_batches(data, ctx.tokenizer, num_examples, batch_size, seed=ctx.seed)


def fixed_count(valid: torch.Tensor, free: torch.Tensor, max_removed: int | None) -> int:
    """How many units the search must keep whatever the scores: those outside `targets`, and per
    layer the free ones beyond a cap of `max_removed` removals (`search.protect_per_layer`)."""
    count = int((valid & ~free).sum())
    if max_removed is not None:
        count += sum(max(0, int(free[i].sum()) - max_removed) for i in range(free.shape[0]))
    return count


@dataclass
class GradientFreePruneConfig:
    flops: float
    """Fraction of the encoder's FLOPs to remove, in (0, 1)."""
    num_examples: int = 2048
    batch_size: int = 32
    seq_len: float | None = None
    """Sequence length for the MAC budget; None: the mean length of the sample."""
    corpus: str | None = None
    """A text file, one unlabeled text per line; None: the stage's training texts."""
    gamma: float | None = None
    """RBF kernel width of the hull ranking, exp(-gamma |x - y|^2); None: 1 / median distance^2."""
    hull_iters: int = 20
    representative_weight: float = 0.5
    """Weight of the weights-only hull ranking (R2) in the within-layer merge."""
    data_weight: float = 0.5
    """Weight of the activation votes (D2) in the within-layer merge."""
    rescale: bool = True
    damp: float = 1.0
    max_scale: float = 10.0
    max_heads_removed: int | None = None
    targets: list[str] | None = None

    def validate(self, where: str) -> None:
        check_budget_fields(self, where)
        if self.hull_iters < 1:
            fail(where, "hull_iters", f"must be >= 1, got {self.hull_iters}")
        if self.gamma is not None and not self.gamma > 0:
            fail(where, "gamma", f"must be > 0 (or null for the median heuristic), got {self.gamma}")
        for key in ("representative_weight", "data_weight"):
            if getattr(self, key) < 0:
                fail(where, key, f"must be >= 0, got {getattr(self, key)}")
        if self.representative_weight + self.data_weight <= 0:
            fail(where, "data_weight", "and 'representative_weight' are both 0: give one of them a positive weight")
        if self.corpus is not None:
            corpus_texts(self.corpus, where)


@register_recipe("gradient_free_prune")
class GradientFreePrune(Recipe):
    """Hull + activation rankings, MAC-budgeted search, least-squares rescaling, shrink."""

    Config = GradientFreePruneConfig
    uses_architecture = True

    @classmethod
    def output_width(cls, config: GradientFreePruneConfig, width: int | None) -> int | None:
        return None  # the FLOPs budget may remove heads, a different number per layer

    def masks(self, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """The (rescaled) head and neuron masks this recipe would apply to `model`, and what was
        measured; `apply` shrinks the model with them. Bad settings fail before any forward pass."""
        cfg, where = self.config, self.where
        head_free, neuron_free = selected_units(model, cfg.targets, where)
        check_max_heads(model, cfg.max_heads_removed, head_free, where)
        batches = unlabeled_batches(self.ctx, cfg.corpus, cfg.num_examples, cfg.batch_size, where)
        seq = cfg.seq_len or mean_length(batches)
        st = structure(model)
        valid_h, valid_f = st.valid()
        info: dict[str, Any] = {"seq_len": seq, "macs_before": encoder_macs(model, seq)["total"],
                                "examples": sum(len(b["input_ids"]) for b in batches), "corpus": cfg.corpus}
        cost_h, cost_n = head_macs(st.hidden_size, st.head_size, seq), neuron_macs(st.hidden_size, seq)
        kept = 1.0 - cfg.flops
        fixed_macs = cost_h * fixed_count(valid_h, head_free, cfg.max_heads_removed) \
            + cost_n * fixed_count(valid_f, neuron_free, None)
        unmet = f"cannot be met: the units kept by 'targets' / 'max_heads_removed' alone exceed {kept:.0%} of the " \
            "encoder's MACs"
        if fixed_macs > kept * info["macs_before"] * (1 + 1e-6):  # before any forward pass
            fail(where, "flops", unmet)
        times: dict[str, float] = {}
        tick = time.perf_counter()
        stats = activation_stats(model, batches)
        times["activations"] = time.perf_counter() - tick
        tick = time.perf_counter()
        rep = representative_scores(model, neuron_free.any(1), cfg.gamma, cfg.hull_iters) \
            if cfg.representative_weight > 0 else torch.zeros_like(stats.neuron_votes)
        times["hull"] = time.perf_counter() - tick
        tick = time.perf_counter()
        hs = stats.head_energy
        ns = merged_neuron_scores(stats.neuron_energy, stats.neuron_votes, rep, neuron_free,
                                  cfg.data_weight, cfg.representative_weight)
        fixed_h = (valid_h & ~head_free) | protect_per_layer(hs, head_free, torch.zeros_like(head_free),
                                                             cfg.max_heads_removed)
        found = search_budget(hs, ns, head_free, neuron_free, fixed_h, valid_f & ~neuron_free, cost_h, cost_n,
                              kept * info["macs_before"])
        if found is None:
            fail(where, "flops", unmet)
        head_mask, neuron_mask = found[0].float(), found[1].float()
        times["search"] = time.perf_counter() - tick
        tick = time.perf_counter()
        fits: list[dict[str, Any]] = []
        if cfg.rescale:
            head_mask, neuron_mask, report = tune_masks(model, batches, head_mask, neuron_mask,
                                                        damp=cfg.damp, max_scale=cfg.max_scale)
            fits = report.as_dicts()
        times["rescale"] = time.perf_counter() - tick
        info.update(seconds={k: round(v, 2) for k, v in times.items()}, fits=fits,
                    tuned_blocks=sum(1 for f in fits if f["applied"]))
        return head_mask, neuron_mask, info

    def apply(self, model: nn.Module) -> nn.Module:
        t0 = time.perf_counter()
        head_mask, neuron_mask, info = self.masks(model)
        summary = shrink(model, head_mask, neuron_mask)
        macs_after = encoder_macs(model, info["seq_len"])["total"]
        seconds, fits, tuned = info.pop("seconds"), info.pop("fits"), info.pop("tuned_blocks")
        record_pruning(model, {
            "stage": self.ctx.stage, "method": self.name, "pruning_seconds": time.perf_counter() - t0,
            "seconds": seconds, **info,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "macs_after": macs_after, "flops_removed": 1.0 - macs_after / info["macs_before"], **summary,
            "tuned_blocks": tuned, "fits": fits})
        return model
