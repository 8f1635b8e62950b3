"""The dynamic-inference study: `workbench compare RUN --dynamic [--out DIR]`.

A dynamic run (`recipes/dynamic.yaml`, run with `--seeds`) trains ONE length-adaptive, multi-exit
student per seed (stage `lat`), searches its per-layer lengths on the validation split
(`length_search` stages write `<seed run>/dynamic/<stage>/length_pareto.csv`), and keeps the
fixed-length student of the same size (`student`), the demo's static student (`demo-student`, when
the recipe has it) and the teacher beside it. For each seed this module then:

1. picks the operating points of the one trained model **on the validation split**: for each
   latency budget in `BUDGETS` (a fraction of the full-length cost of the runtime's latency
   table), the most accurate searched length configuration within it; and for each early-exit
   threshold in `EXIT_THRESHOLDS`, the full-length model exiting per example by entropy;
2. measures every operating point **on the test split** on our int8 runtime (the engine drops
   the tokens and skips the layers itself) and, as the reference, in PyTorch fp32
   (`dynamic_forward`);
3. times each on our runtime at batch 1 over the first `SPEED_EXAMPLES` test sentences at
   their own length (the work the engine skips depends on the sentence), beside the teacher and
   the fixed-length students on the same engine and on torch fp32, in the same process.

It writes `summary.csv` (one row per seed and operating point), `table.md` (mean ± std over
seeds, the speed-up at <= 1 point of accuracy loss against the teacher, beside the papers' 3.3x
and 8.8x) and `accuracy_vs_throughput.png`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workbench.config import ConfigError
from workbench.dynamic.measure import BUDGETS, EXIT_THRESHOLDS, SPEED_EXAMPLES, SPEED_REPEATS, measure_seed
from workbench.results import atomic_write_text, format_stage_table, write_csv

CLAIMS = (("Dynamic-TinyBERT (length only)", 3.3), ("QuaLA-MiniLM (MiniLM KD + length + int8)", 8.8))


def _seed_runs(folder: Path) -> list[Path]:
    runs = sorted(p for p in folder.glob("seed-*") if (p / "metrics.json").exists())
    if not runs:
        raise ConfigError(f"{folder} holds no finished seed run (seed-*/metrics.json): run "
                          "`workbench run recipes/dynamic.yaml --seeds 0,1,2` first")
    return runs


def _mean_std(values: list[float]) -> tuple[float, float]:
    from workbench.prune.report import mean_std

    return mean_std([v for v in values if v is not None and v == v])


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std over seeds per (model, engine, operating point)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["engine"], r["point"]), []).append(r)
    out = []
    for (model, engine, point), rs in groups.items():
        acc, sps = _mean_std([r["test_accuracy"] for r in rs]), _mean_std([r["samples_per_s"] for r in rs])
        up = _mean_std([r["speedup_vs_teacher_fp32"] for r in rs])
        out.append({"model": model, "engine": engine, "point": point, "kind": rs[0]["kind"], "n": len(rs),
                    "mean_accuracy": acc[0], "std_accuracy": acc[1],
                    "mean_val_accuracy": _mean_std([r.get("val_accuracy") for r in rs])[0],
                    "mean_layers_run": _mean_std([r.get("layers_run") for r in rs])[0],
                    "mean_accuracy_fp32": _mean_std([r.get("test_accuracy_fp32") for r in rs])[0],
                    "mean_samples_per_s": sps[0], "std_samples_per_s": sps[1], "speedup": up[0], "speedup_std": up[1]})
    return out


def claims(summary: list[dict[str, Any]]) -> list[str]:
    """The verdicts. The operating point is chosen on validation: the fastest point of the trained
    model whose validation accuracy is within 1 point of the teacher's; its test accuracy and speed
    are what is reported."""
    teacher = next((r for r in summary if r["model"] == "teacher" and r["engine"] == "torch-fp32"), None)
    if teacher is None:
        return ["- no teacher row: speed-ups against the teacher are not available."]
    lat = [r for r in summary if r["model"] == "lat"]
    t_val = teacher["mean_val_accuracy"]
    on_val = t_val == t_val and all(r["mean_val_accuracy"] == r["mean_val_accuracy"] for r in lat)
    chosen_by = "validation" if on_val else "test (no validation accuracies in the rows)"
    key = "mean_val_accuracy" if on_val else "mean_accuracy"
    ok = [r for r in lat if teacher[key] - r[key] <= 0.01]
    lines = []
    full = next((r for r in lat if r["point"] == "full length"), None)
    if ok:
        best = max(ok, key=lambda r: r["speedup"])
        dynamic_gain = best["mean_samples_per_s"] / full["mean_samples_per_s"] if full else float("nan")
        # Dynamic-TinyBERT's claim is about dropping tokens alone: its best length point, same rule
        by_length = max((r for r in ok if r["kind"] == "length"), key=lambda r: r["speedup"], default=None)
        length_gain = by_length["mean_samples_per_s"] / full["mean_samples_per_s"] if by_length and full else float("nan")
        test_gap = teacher["mean_accuracy"] - best["mean_accuracy"]
        lines.append(f"- Chosen on {chosen_by} (the fastest point within 1 point of the teacher there), the trained "
                     f"model's operating point is **{best['point']}** on our int8 runtime: test "
                     f"{100 * best['mean_accuracy']:.2f} ± {100 * best['std_accuracy']:.2f}% vs the teacher's "
                     f"{100 * teacher['mean_accuracy']:.2f}% ({'within' if test_gap <= 0.01 else 'more than'} 1 point "
                     f"on test) at **{best['speedup']:.2f}x** the teacher's torch-fp32 speed (of which "
                     f"{dynamic_gain:.2f}x from the dynamic operating point over the same model at full length; by "
                     f"dropping tokens alone the best such point is "
                     f"{by_length['point'] if by_length else 'none'}, {length_gain:.2f}x).")
        for name, claim in CLAIMS:
            value = length_gain if "length only" in name else best["speedup"]
            lines.append(f"- {name} claims up to {claim}x within 1% loss: here **{value:.2f}x** "
                         f"({'held' if value >= claim else 'did not hold'}).")
    else:
        lines.append(f"- No operating point of the trained model stays within 1 point of the teacher on {chosen_by}.")
    fixed = sorted((r for r in lat if r["kind"] == "exit_at"), key=lambda r: r["point"])
    if fixed and full:
        parts = ", ".join(f"{r['point']}: {100 * r['mean_accuracy']:.2f} ± {100 * r['std_accuracy']:.2f}% "
                          f"at {r['mean_samples_per_s'] / full['mean_samples_per_s']:.2f}x full-length speed" for r in fixed)
        lines.append(f"- Early exits (multi-exit self-distillation: lower layers useful on their own): {parts}; full "
                     f"length {100 * full['mean_accuracy']:.2f} ± {100 * full['std_accuracy']:.2f}%.")
    return lines


def plot(summary: list[dict[str, Any]], path: Path) -> Path:
    from workbench.plots.runs import plt, save_figure

    fig, ax = plt.subplots(figsize=(8, 5))
    for (model, engine), marker in ((("lat", "wb-int8"), "o-"),):
        for kind, style, what in (("length", "o-", "per-layer lengths"), ("exit", "s--", "early exit by entropy"),
                                  ("exit_at", "D", "every example at one exit")):
            rs = sorted([r for r in summary if r["model"] == model and r["engine"] == engine
                         and (r["kind"] == kind or (r["point"] == "full length" and kind != "exit_at"))],
                        key=lambda r: r["mean_samples_per_s"])
            if rs:
                ax.errorbar([r["mean_samples_per_s"] for r in rs], [100 * r["mean_accuracy"] for r in rs],
                            yerr=[100 * r["std_accuracy"] for r in rs], fmt=style, capsize=3,
                            label=f"one length-adaptive model, {what} (int8)")
    for r in summary:
        if r["kind"] == "static":
            ax.errorbar([r["mean_samples_per_s"]], [100 * r["mean_accuracy"]], yerr=[100 * r["std_accuracy"]], fmt="^",
                        capsize=3, label=f"{r['model']} ({r['engine']})")
    ax.set_xscale("log")
    ax.set_xlabel("samples/s, batch 1, test sentences at their own length (log)")
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    ax.set_title("train once, run at any budget (rt-sentiment)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    return save_figure(fig, path)


ROWS_FILE = "report_rows.json"
"""Per seed run, under its `dynamic/` folder: the measured rows and what they were measured from,
so an interrupted report (or a seed added later) re-measures only the seeds that changed."""


def _source_key(seed_run: Path) -> str:
    """A digest of what a seed's rows depend on: its stage metrics and its length searches."""
    import hashlib

    h = hashlib.sha256()
    for path in [seed_run / "metrics.json", *sorted((seed_run / "dynamic").glob("*/length_pareto.csv"))]:
        h.update(path.name.encode() + path.read_bytes())
    h.update(repr((BUDGETS, EXIT_THRESHOLDS, SPEED_EXAMPLES, SPEED_REPEATS)).encode())
    return h.hexdigest()


def measured_rows(seed_run: Path) -> list[dict[str, Any]]:
    """`measure_seed`, or its saved rows when the seed's metrics and searches are unchanged."""
    import sys

    cache, key = seed_run / "dynamic" / ROWS_FILE, _source_key(seed_run)
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            print(f"[workbench] {seed_run.name}: measured rows reused ({cache})", file=sys.stderr)
            return saved["rows"]
    print(f"[workbench] {seed_run.name}: measuring every operating point on test (minutes)", file=sys.stderr)
    rows = measure_seed(seed_run)
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache, json.dumps({"key": key, "rows": rows}, indent=1, default=float))
    return rows


def dynamic_report(folder: Path, out: Path | None = None) -> list[dict[str, Any]]:
    """Measure every seed run in `folder` and write summary.csv (per seed), table.md and the plot."""
    folder = Path(folder)
    rows = [r for seed_run in _seed_runs(folder) for r in measured_rows(seed_run)]
    dest = Path(out) if out is not None else folder
    dest.mkdir(parents=True, exist_ok=True)
    write_csv(dest / "summary.csv", [{k: ("-" if v is None else v) for k, v in r.items()} for r in rows],
              list(dict.fromkeys(k for r in rows for k in r)))
    summary = summarize(rows)
    shown = [{"model": r["model"], "engine": r["engine"], "point": r["point"], "n": r["n"],
              "acc": f"{r['mean_accuracy']:.4f} ± {r['std_accuracy']:.4f}",
              "fp32": f"{r['mean_accuracy_fp32']:.4f}" if r["mean_accuracy_fp32"] == r["mean_accuracy_fp32"] else "-",
              "val": f"{r['mean_val_accuracy']:.4f}" if r["mean_val_accuracy"] == r["mean_val_accuracy"] else "-",
              "layers": f"{r['mean_layers_run']:.2f}" if r["mean_layers_run"] == r["mean_layers_run"] else "-",
              "sps": f"{r['mean_samples_per_s']:.1f} ± {r['std_samples_per_s']:.1f}", "up": f"{r['speedup']:.2f}x"}
             for r in summary]
    table = format_stage_table(shown, [("model", None, "model"), ("engine", None, "engine"), ("point", None, "operating point"),
                                       ("n", None, "seeds"), ("val", None, "val accuracy"), ("acc", None, "test accuracy"),
                                       ("fp32", None, "same point, torch fp32"), ("layers", None, "layers run (mean)"),
                                       ("sps", None, "samples/s b1"),
                                       ("up", None, "vs teacher torch fp32")], fmt="markdown")
    atomic_write_text(dest / "table.md", "# Dynamic inference: one trained model, many budgets\n\n" + table +
                      "\n\nOperating points chosen on the validation split (budgets: fractions of the full-length cost "
                      "in the runtime's latency table; exits: entropy thresholds at full length, or every example leaving at "
                      "one exit), measured on test; the verdicts choose the point on validation. "
                      f"Samples/s at batch 1 over the first {SPEED_EXAMPLES} test sentences at their own length, every "
                      "row in the same process per seed (median of 3 passes).\n\n## The papers' claims, here\n\n"
                      + "\n".join(claims(summary)) + "\n")
    plot(summary, dest / "accuracy_vs_throughput.png")
    return rows
