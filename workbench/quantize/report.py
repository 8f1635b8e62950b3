"""The quantization comparison: `workbench compare RUN --quantization [--out DIR]`.

A quantization run (`recipes/quantization.yaml`, run with `--seeds`) names its fp32 references
by a bare name (`teacher`, `pruned`) and each quantized stage `<reference>.<method>`
(`teacher.static_mse`, `pruned.qat`). From the run's `seeds.csv` and, when present, the
cross-engine `speed.csv` written by `workbench bench --run RUN` (torch, ONNX Runtime on the
exported file, our runtime), this writes:

* `summary.csv`: one row per stage: reference, method, the engine the stage ends on, accuracy and
  macro-F1 (mean, std, n over seeds), the drop against its fp32 reference in points (positive =
  worse), disk size and its ratio to the reference, samples/s at batch 1 and 8 on the stage's own
  engine, and per `speed.csv` engine samples/s with the speed-up over the reference on that
  engine (same run, same process kind);
* `table.md`: the same, readable, with which method loses least per reference and whether
  QAT under distillation recovered the post-training int8 loss (oBERT's claim);
* `accuracy_vs_size.png`: accuracy against disk size per reference, one marker per method.

A stage that ran on fewer seeds than the others (a deterministic post-training method run once)
shows n = 1 and std 0: its spread is the calibration's, not the training's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.config import ConfigError
from workbench.prune.report import mean_std, read_speed
from workbench.results import atomic_write_text, format_stage_table, read_csv, write_csv

POST_TRAINING = ("dynamic", "static", "smooth")  # method-name prefixes of post-training quantization


def _num(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key) not in (None, "")]


def summarize(folder: Path) -> list[dict[str, Any]]:
    """One row per stage of the run in `folder` (see the module docstring)."""
    seeds_csv = Path(folder) / "seeds.csv"
    if not seeds_csv.exists():
        raise ConfigError(f"{folder} has no seeds.csv: run `workbench run recipes/quantization.yaml --seeds 0,1,2` first")
    raw = read_csv(seeds_csv)
    speed = read_speed(Path(folder) / "speed.csv")
    engines = sorted({engine for (_stage, engine, _batch) in speed})
    stages: dict[str, list[dict[str, str]]] = {}
    for r in raw:
        stages.setdefault(r["stage"], []).append(r)
    refs = {name: rs for name, rs in stages.items() if "." not in name}
    rows = []
    for stage, rs in stages.items():
        reference, _, method = stage.partition(".")
        if reference not in refs:
            continue
        ref = refs[reference]
        acc, f1 = mean_std(_num(rs, "accuracy")), mean_std(_num(rs, "macro_f1"))
        ref_acc, ref_f1 = mean_std(_num(ref, "accuracy"))[0], mean_std(_num(ref, "macro_f1"))[0]
        disk, ref_disk = mean_std(_num(rs, "disk_mb"))[0], mean_std(_num(ref, "disk_mb"))[0]
        row: dict[str, Any] = {
            "stage": stage, "reference": reference, "method": method or "fp32", "engine": rs[0].get("engine", ""),
            "n_seeds": len(rs), "mean_accuracy": acc[0], "std_accuracy": acc[1],
            "mean_macro_f1": f1[0], "std_macro_f1": f1[1], "drop_points": 100.0 * (ref_acc - acc[0]),
            "drop_f1_points": 100.0 * (ref_f1 - f1[0]),
            "disk_mb": disk, "size_ratio": disk / ref_disk if ref_disk else float("nan"),
            "own_b1": mean_std(_num(rs, "throughput_b1"))[0], "own_b8": mean_std(_num(rs, "throughput_b8"))[0],
        }
        for engine in engines:
            for batch in (1, 8):
                v, base = speed.get((stage, engine, batch)), speed.get((reference, engine, batch))
                if v is not None:
                    row[f"{engine}_b{batch}"] = v
                    row[f"{engine}_b{batch}_speedup"] = v / base if base else float("nan")
        rows.append(row)
    if not any(r["method"] != "fp32" for r in rows):
        raise ConfigError(f"{seeds_csv}: no stage is named '<reference>.<method>' after an fp32 stage")
    return rows


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """Which method loses least per reference, and whether QAT recovered the post-training loss."""
    lines = []
    for reference in dict.fromkeys(r["reference"] for r in rows):
        mine = [r for r in rows if r["reference"] == reference and r["method"] != "fp32"]
        if not mine:
            continue
        best = min(mine, key=lambda r: r["drop_points"])
        lines.append(f"- `{reference}`: least loss: **{best['method']}** ({best['drop_points']:+.2f} points, "
                     f"{best['size_ratio']:.2f}x the fp32 size).")
        ptq = [r for r in mine if r["method"].startswith(POST_TRAINING)]
        qat = [r for r in mine if r["method"].startswith("qat")]
        for q in qat:
            if not ptq:
                continue
            worst_ptq = max(ptq, key=lambda r: r["drop_points"])
            best_ptq = min(ptq, key=lambda r: r["drop_points"])
            held = q["drop_f1_points"] < 1.0
            beaten = sum(q["drop_points"] < r["drop_points"] for r in ptq)
            lines.append(
                f"- `{reference}.{q['method']}`: {q['drop_points']:+.2f} ± {100 * q['std_accuracy']:.2f} accuracy points "
                f"({q['drop_f1_points']:+.2f} macro-F1) against fp32 (n={q['n_seeds']}); post-training int8 lost "
                f"{best_ptq['drop_points']:+.2f} ({best_ptq['method']}) to {worst_ptq['drop_points']:+.2f} "
                f"({worst_ptq['method']}): QAT under distillation loses less than **{beaten} of {len(ptq)}** "
                f"post-training methods. oBERT's claim (QAT under distillation within 1 F1 point of the "
                f"unquantized model): **{'held' if held else 'did not hold'}** here.")
    return lines


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    from workbench.plots.runs import plt, save_figure

    fig, ax = plt.subplots(figsize=(8, 5))
    for reference in dict.fromkeys(r["reference"] for r in rows):
        mine = [r for r in rows if r["reference"] == reference]
        ax.errorbar([r["disk_mb"] for r in mine], [100 * r["mean_accuracy"] for r in mine],
                    yerr=[100 * r["std_accuracy"] for r in mine], fmt="o", capsize=3, label=reference)
        for r in mine:
            ax.annotate(r["method"], (r["disk_mb"], 100 * r["mean_accuracy"]), textcoords="offset points",
                        xytext=(5, 3), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("size on disk (MB, log)")
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    ax.set_title("quantization methods against their fp32 models (rt-sentiment)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None or value != value else fmt.format(value)


def quantization_report(folder: Path, out: Path | None = None) -> list[dict[str, Any]]:
    """Write summary.csv, table.md and accuracy_vs_size.png for the run in `folder` into `out`
    (default: the run's folder). summary.csv has "-" where a value does not apply."""
    rows = summarize(Path(folder))
    dest = Path(out) if out is not None else Path(folder)
    dest.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    write_csv(dest / "summary.csv", [{k: "-" if r.get(k) is None or r.get(k) != r.get(k) else r[k]
                                      for k in columns} for r in rows], columns)
    engines = sorted({k[:-3] for r in rows for k in r if k.endswith("_b1") and k != "own_b1"})
    shown = []
    for r in rows:
        cell = {"stage": r["stage"], "engine": r["engine"], "n": r["n_seeds"],
                "acc": f"{r['mean_accuracy']:.4f} ± {r['std_accuracy']:.4f}",
                "drop": _cell(r["drop_points"], "{:+.2f}"), "disk": _cell(r["disk_mb"], "{:.1f}"),
                "size": _cell(r["size_ratio"], "{:.2f}x"), "own_b1": _cell(r["own_b1"], "{:.1f}"),
                "own_b8": _cell(r["own_b8"], "{:.1f}")}
        for e in engines:
            v, x = r.get(f"{e}_b1"), r.get(f"{e}_b1_speedup")
            cell[e] = f"{v:.1f} ({x:.2f}x)" if v is not None else "-"
        shown.append(cell)
    cols = [("stage", None, "stage"), ("engine", None, "runs on"), ("acc", None, "test accuracy (mean ± std)"),
            ("n", None, "seeds"), ("drop", None, "drop vs fp32 (pts)"), ("disk", None, "disk MB"),
            ("size", None, "size vs fp32"), ("own_b1", None, "own engine b1/s"), ("own_b8", None, "own engine b8/s")]
    cols += [(e, None, f"{e} b1/s (vs fp32)") for e in engines]
    table = format_stage_table(shown, cols, fmt="markdown")
    atomic_write_text(dest / "table.md", "# Quantization\n\n" + table +
                      "\n\nDrop: points of test accuracy lost against the stage's own fp32 model (`teacher` or "
                      "`pruned`); positive = worse. Samples/s at sequence length 128, 2 threads; the own-engine "
                      "columns come from the pipeline's measurement, the engine columns from one "
                      "`workbench bench --run` call (each engine in a fresh process; speed-up over the fp32 "
                      "model on the same engine). Post-training stages have no training randomness (the static ones "
                      "are pinned to seed 0's calibration batches and reused by every seed): their std 0 is not a "
                      "spread; only QAT is trained per seed. One test example is about 0.1 point here.\n\n## What held\n\n" + "\n".join(verdicts(rows)) + "\n")
    plot(rows, dest / "accuracy_vs_size.png")
    return rows
