"""Pseudo-labels (`pseudo_label`): a teacher labels an unlabeled pool, a filter keeps the labels it
trusts, and the stage trains on what was kept with plain cross-entropy on the teacher's hard labels
(the term `pseudo_ce`).

The pool is the stage's own training split with its labels hidden (`pool: null`), or any text
file (one example per line), .csv/.tsv/.jsonl/.json/.parquet table, dataset saved with
`save_to_disk` or `hf:<dataset>`. Filters (`filter:`):

* `none`: every pseudo-label;
* `gold_agreement`: only where the teacher agrees with the gold label (Distil-Whisper's
  heuristic, Gandhi et al. 2023: drop pseudo-labels that disagree with the ground truth; it
  needs gold labels in the pool);
* `confidence` (`threshold` in (0, 1]): the teacher's top probability >= threshold;
* `entropy` (`threshold` in (0, 1]): the teacher's normalized entropy (0 one-hot .. 1 uniform)
  <= threshold;
* `teacher_agreement` (`agree_with`: a second teacher, an earlier stage or a model) and
  `student_agreement` (`agree_with`: an earlier stage, e.g. a student trained on unfiltered
  pseudo-labels): only where the two models predict the same label, uDistil's label-free
  agreement idea. Neither needs a gold label.

What was kept, and how good it is, goes to `<run>/pseudo_labels/<stage>.json` (the keep report):
kept/total, per-class counts of pseudo-labels and kept ones, the teacher's confidence quantiles,
and, where the pool has gold labels, the accuracy of all and of the kept pseudo-labels.
`python -m workbench.recipes.data.report RUN` tabulates the reports of a run next to the
students' test accuracy.

Soft labels: add `distill_logits` to the same stage; it reads the teacher's distribution on the
kept examples (its `ce` term then uses the pseudo-labels).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from workbench.config import ConfigError, fail
from workbench.data.pairs import tokenize_texts
from workbench.data.tables import TABLE_SUFFIXES
from workbench.recipes.base import LossTerms, StageCheck, TrainState, register_recipe
from workbench.recipes.data.pool import AGREEMENT_FILTERS, FILTERS, THRESHOLD_FILTERS, Pool, keep_mask, read_pool
from workbench.recipes.distill.teacher import TeacherRecipe, check_teacher

FilterName = Literal["none", "gold_agreement", "confidence", "entropy", "teacher_agreement", "student_agreement"]
assert set(FilterName.__args__) == set(FILTERS)  # type: ignore[attr-defined]


@dataclass
class PseudoLabelConfig:
    teacher: str = "teacher"
    """Who labels the pool: an earlier stage, or a model name or local path."""
    pool: str | None = None
    """null: this stage's training split with its labels hidden; or a text file, a
    .csv/.tsv/.jsonl/.json/.parquet table, a dataset saved with save_to_disk, or hf:<dataset>
    (its train split). In --quick mode a pool is cut to the quick training size."""
    text_column: str = "text"
    label_column: str | None = "label"
    """Gold labels of a table pool (class names or indices), when it has them: measured, never trained on."""
    filter: FilterName = "none"
    threshold: float | None = None
    """confidence: keep top probability >= threshold; entropy: keep normalized entropy <= threshold."""
    quick_threshold: float | None = None
    """The threshold under `--quick` (null: `threshold`). A quick teacher trains for a few dozen steps
    and is never confident, so a threshold meant for a trained teacher keeps nothing there."""
    agree_with: str | None = None
    """teacher_agreement: the second teacher; student_agreement: an earlier stage."""
    weight: float = 1.0
    """Weight of the `pseudo_ce` term."""
    batch_size: int = 64
    """Examples per batch while the teacher labels the pool."""

    def validate(self, where: str) -> None:
        f = self.filter
        if f in THRESHOLD_FILTERS:
            if self.threshold is None:
                fail(where, "threshold", f"is required by filter '{f}' (a number in (0, 1], e.g. 0.9 for "
                     "confidence, 0.3 for entropy)")
            if not 0.0 < self.threshold <= 1.0:
                fail(where, "threshold", f"must be in (0, 1] for filter '{f}', got {self.threshold}")
            if self.quick_threshold is not None and not 0.0 < self.quick_threshold <= 1.0:
                fail(where, "quick_threshold", f"must be in (0, 1] for filter '{f}', got {self.quick_threshold}")
        elif self.threshold is not None or self.quick_threshold is not None:
            key = "threshold" if self.threshold is not None else "quick_threshold"
            fail(where, key, f"goes with filter confidence or entropy, not '{f}'; remove it")
        if f in AGREEMENT_FILTERS and not self.agree_with:
            fail(where, "agree_with", f"is required by filter '{f}': name the "
                 + ("second teacher" if f == "teacher_agreement" else "earlier stage") + " to agree with")
        if f not in AGREEMENT_FILTERS and self.agree_with is not None:
            fail(where, "agree_with", f"goes with filter teacher_agreement or student_agreement, not '{f}'; remove it")
        if self.weight <= 0:
            fail(where, "weight", f"must be > 0, got {self.weight}")
        if self.batch_size < 1:
            fail(where, "batch_size", f"must be >= 1, got {self.batch_size}")
        if self.pool is not None and not self.pool.startswith("hf:"):
            # a missing, empty or blank file fails here, before any stage runs
            pool = read_pool(self.pool, self.text_column, self.label_column, None, f"{where}")
            if f == "gold_agreement" and pool.gold is None:
                has_table = Path(self.pool).suffix.lower() in TABLE_SUFFIXES
                fail(where, "filter", f"gold_agreement needs gold labels, but the pool '{self.pool}' has none"
                     + (f" (no '{self.label_column}' on every row)" if has_table else " (a text file)")
                     + "; use a label-free filter (confidence, entropy, teacher_agreement, student_agreement)")


@register_recipe("pseudo_label")
class PseudoLabel(TeacherRecipe):
    """Train on a teacher's filtered hard labels of an unlabeled pool."""

    Config = PseudoLabelConfig

    @classmethod
    def loss_term_names(cls, config: PseudoLabelConfig) -> set[str]:
        return {"pseudo_ce"}

    @classmethod
    def teacher_names(cls, config: PseudoLabelConfig) -> list[str]:
        return [config.teacher] + ([config.agree_with] if config.agree_with else [])

    @classmethod
    def check_stage(cls, config: PseudoLabelConfig, check: StageCheck) -> None:
        check_teacher(config.teacher, check)
        if config.filter == "teacher_agreement":
            check_teacher(config.agree_with, check, key="agree_with")
        elif config.filter == "student_agreement" and config.agree_with not in check.earlier:
            fail(check.where, "agree_with", f"must name an earlier stage ({', '.join(check.earlier) or 'none yet'}) "
                 f"for student_agreement, got {config.agree_with!r}")

    @classmethod
    def check_task(cls, config: PseudoLabelConfig, task: Any, where: str) -> None:
        if config.pool is not None and getattr(task.config, "text_pair_column", None):
            fail(where, "pool", f"is {config.pool!r}, but task '{task.name}' has text pairs and a pool holds single "
                 "texts; use pool: null (the task's own training pairs, labels hidden)")
        if config.pool is not None and not config.pool.startswith("hf:"):
            read_pool(config.pool, config.text_column, config.label_column, task.label_names, where)

    # ------------------------------------------------------------------------------- data
    def prepare_data(self, train_data: Any) -> Any:
        import datasets

        if not isinstance(train_data, datasets.Dataset) or "text" not in train_data.column_names:
            raise ConfigError(f"{self.where}: needs a datasets.Dataset training split with a 'text' column")
        c, ctx = self.config, self.ctx
        plain = train_data.with_format(None)
        if c.pool is None:
            pool = Pool(list(plain["text"]), [int(y) for y in plain["labels"]], "training split (labels hidden)")
            data, dropped = plain, 0
        else:
            pool = read_pool(c.pool, c.text_column, c.label_column, ctx.task.label_names, self.where)
            pool, dropped = self._without_eval_texts(pool)
            if ctx.quick and len(pool.texts) > len(plain):
                pool = _subset(pool, torch.randperm(len(pool.texts), generator=torch.Generator().manual_seed(0))
                               [: len(plain)].sort().values.tolist())
            data = self._tokenized(plain, pool)
        probs = self._probabilities(c.teacher, data).softmax(-1)
        pseudo = probs.argmax(-1)
        gold = torch.tensor(pool.gold) if pool.gold is not None else None
        other = self._probabilities(c.agree_with, data).argmax(-1) if c.agree_with else None
        threshold = c.quick_threshold if ctx.quick and c.quick_threshold is not None else c.threshold
        keep = keep_mask(c.filter, probs, gold=gold, other=other, threshold=threshold)
        self.report = keep_report(self, pool, probs, keep, gold, other, dropped)
        _write_report(ctx.run_dir / "pseudo_labels" / f"{ctx.stage}.json", self.report)
        kept = keep.nonzero().flatten().tolist()
        r = self.report
        print(f"[workbench]   {ctx.stage}: kept {r['kept']:,}/{r['total']:,} pseudo-labels ({100 * r['kept_fraction']:.1f}%, "
              f"filter {c.filter})" + (f"; accuracy vs gold: kept {r['kept_accuracy']:.4f}, all {r['pool_accuracy']:.4f}"
                                       if r.get("kept_accuracy") is not None else ""), flush=True)
        if not kept:
            raise ConfigError(f"{self.where}: filter '{c.filter}'"
                              + (f" (threshold {threshold})" if threshold is not None else "")
                              + (f" (agree_with {c.agree_with!r})" if c.agree_with else "")
                              + f" kept none of the {len(pool.texts)} pseudo-labels; loosen the filter")
        out = data.select(kept).remove_columns("labels").add_column("labels", pseudo[kept].tolist())
        out = out.cast(plain.features)
        fmt = train_data.format
        return out.with_format(fmt["type"], columns=fmt["columns"], output_all_columns=fmt["output_all_columns"],
                               **fmt["format_kwargs"])

    def _without_eval_texts(self, pool: Pool) -> tuple[Pool, int]:
        """Pool texts that are also validation or test texts of the task would leak: dropped."""
        def norm(t: str) -> str:
            return " ".join(t.split()).lower()

        held_out = {norm(t) for s in ("validation", "test") if s in self.ctx.task.splits
                    for t in self.ctx.task.splits[s]["text"]}
        idx = [i for i, t in enumerate(pool.texts) if norm(t) not in held_out]
        if not idx:
            raise ConfigError(f"{self.where}: every text of the pool '{pool.source}' is in the task's validation "
                              "or test split; give a pool of other texts")
        return _subset(pool, idx), len(pool.texts) - len(idx)

    def _tokenized(self, like: Any, pool: Pool) -> Any:
        """The pool as a split with the training split's columns (labels: gold or 0, replaced later)."""
        import datasets

        max_length = getattr(getattr(self.ctx.task, "config", None), "max_length", None) or 512
        enc = tokenize_texts(self.ctx.tokenizer, pool.texts, truncation=True, max_length=max_length)
        cols: dict[str, list[Any]] = {}
        for col in like.column_names:
            if col == "text":
                cols[col] = pool.texts
            elif col == "labels":
                cols[col] = pool.gold if pool.gold is not None else [0] * len(pool.texts)
            elif col in enc:
                cols[col] = list(enc[col])
            else:
                raise ConfigError(f"{self.where}: cannot fill the column '{col}' for pool examples")
        return datasets.Dataset.from_dict(cols, features=like.features)

    def _probabilities(self, name: str, data: Any) -> torch.Tensor:
        """Logits [N, K] of the model `name` on every example of `data` (per example, cached by the
        teacher service: the KD stages of the run read the same values)."""
        from workbench.data import Collator

        model = self.ctx.teachers.get(name, set(), self.where)
        collate = Collator(self.ctx.tokenizer)
        cols = [k for k in data.column_names if k != "labels"]
        rows = data.select_columns(cols)
        out = []
        for s in range(0, len(rows), self.config.batch_size):
            part = rows[s:s + self.config.batch_size]
            batch = collate([{k: part[k][i] for k in cols} for i in range(len(part["text"]))])
            out.append(model.outputs(batch).logits.float())
        self.ctx.teachers.save()
        return torch.cat(out)

    # ------------------------------------------------------------------------------- loss
    def loss_terms(self, state: TrainState) -> LossTerms:
        return {"pseudo_ce": (self.config.weight, F.cross_entropy(state.outputs.logits, state.batch["labels"]))}


def _subset(pool: Pool, idx: list[int]) -> Pool:
    return Pool([pool.texts[i] for i in idx], [pool.gold[i] for i in idx] if pool.gold is not None else None,
                pool.source)


def keep_report(recipe: PseudoLabel, pool: Pool, probs: torch.Tensor, keep: torch.Tensor,
                gold: torch.Tensor | None, other: torch.Tensor | None, dropped: int) -> dict[str, Any]:
    """What the filter kept: counts per class, confidence quantiles, accuracy against gold."""
    c, names = recipe.config, recipe.ctx.task.label_names
    pseudo = probs.argmax(-1)
    conf = probs.max(-1).values
    n, k = len(pseudo), int(keep.sum())
    r: dict[str, Any] = {
        "stage": recipe.ctx.stage, "teacher": c.teacher, "filter": c.filter, "threshold": c.threshold,
        "agree_with": c.agree_with, "pool": pool.source, "dropped_eval_overlap": dropped,
        "total": n, "kept": k, "kept_fraction": k / max(1, n),
        "per_class": {name: {"pseudo": int((pseudo == i).sum()), "kept": int((pseudo[keep] == i).sum())}
                      for i, name in enumerate(names)},
        "confidence_quantiles": {f"q{int(q * 100)}": round(float(conf.quantile(q)), 4)
                                 for q in (0.1, 0.25, 0.5, 0.75, 0.9)},
        "pool_accuracy": None, "kept_accuracy": None,
    }
    if other is not None:
        r["agreement"] = float((pseudo == other).float().mean())
    if gold is not None:
        r["pool_accuracy"] = float((pseudo == gold).float().mean())
        r["kept_accuracy"] = float((pseudo[keep] == gold[keep]).float().mean()) if k else None
        for i, name in enumerate(names):
            r["per_class"][name]["gold"] = int((gold == i).sum())
            r["per_class"][name]["kept_gold"] = int((gold[keep] == i).sum())
    return r


def _write_report(path: Path, report: dict[str, Any]) -> None:
    from workbench.results import write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, report)
