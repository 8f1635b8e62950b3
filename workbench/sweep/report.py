"""The report of a sweep: Pareto plot, parameter importance, best trial's stages, README.md.

Written by `run_sweep(..., report=True)` and by `workbench report <sweep>`. Reads the study
through `workbench.sweep.study`; it imports neither the runner nor `workbench.report`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workbench.results import REPORT_STAGE_COLUMNS, atomic_write_text, format_cell, format_stage_table
from workbench.sweep.study import SPLIT_NOTE, best_trials, load_study, trial_rows

ACCURACY_COLUMNS = [("val_accuracy", "{:.4f}", "val accuracy (validation split, chosen on)"),
                    ("test_accuracy", "{:.4f}", "test accuracy (test split, reported)")]


def _examples(trials: list[Any], split: str) -> int | None:
    """How many examples the trials' `val` / `test` metrics used (None for older studies)."""
    counts = {(t.user_attrs.get(split) or {}).get("examples") for t in trials} - {None}
    return max(counts) if counts else None


def sweep_report(folder: Path | str, study: Any = None, storage: str | None = None,
                 peers_csv: Path | str | None = None) -> Path:
    """Plots + README.md for a sweep, in <sweep>/report/. Returns the report folder.

    Accuracy on the plot and in the tables' `val` columns is the validation split (what the sweep
    chose on); `test` columns are the test split, reported only. Peers are the front trials' own
    models on the peer engines (`peers_csv`, default <sweep>/peers.csv from workbench.sweep.peers)."""
    from workbench.plots import param_importance, param_importances, pareto_front
    from workbench.plots.runs import per_layer_sparsity, stage_waterfall
    from workbench.sweep.peers import read_peer_rows

    folder = Path(folder)
    study = study or load_study(folder, storage)
    out = folder / "report"
    objectives = study.user_attrs.get("objectives") or ["accuracy", "throughput"]
    rows = trial_rows(study, objectives)
    done = [r for r in rows if r["state"] == "COMPLETE"]
    legacy = bool(done) and all(r["val_accuracy"] is None for r in done)  # chosen on test, before validation
    acc = "test_accuracy" if legacy else "val_accuracy"
    ref = study.user_attrs.get("reference")
    teacher = {"accuracy": ref["val_accuracy"], "throughput_b1": ref.get("throughput_b1"),
               "engine": ref.get("engine")} if ref and not legacy else None
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    recipe = (min(complete, key=lambda t: t.number).user_attrs.get("recipe") or {}) if complete else {}
    seq_len = (recipe.get("eval") or {}).get("seq_len")
    peers_path = Path(peers_csv) if peers_csv else folder / "peers.csv"
    peers = read_peer_rows(peers_path)
    quick = (study.user_attrs.get("sweep") or {}).get("quick")
    pareto_front([{**r, "accuracy": r[acc]} for r in done if r[acc] is not None], out / "pareto.png",
                 teacher=teacher, trial_peers=peers, seq_len=seq_len,
                 ylabel="accuracy (" + ("test split: a study from before validation selection" if legacy
                                        else "validation split, the objective") + ")",
                 title=f"sweep {folder.name}: accuracy vs throughput ({len(done)} trials"
                       + (", quick" if quick else "") + ")")
    imps, why = param_importances(study)
    param_importance(imps, out / "param_importance.png", message=why, title=f"sweep {folder.name}: parameter importance")

    best = best_trials(study, top_k=3)
    by_number = {r["number"]: r for r in rows}
    best_rows = [{**by_number[t.number], "recipe": f"[trial-{t.number}.yaml](../best/trial-{t.number}.yaml)"}
                 for t in best]
    val_n, test_n = (_examples(complete, k) for k in ("val", "test"))
    lines = [f"# Sweep `{folder.name}`", "",
             f"Objectives: {', '.join(objectives)} (maximised; throughput is batch-1 samples/s of the last stage). "
             f"Trials: {sum(r['state'] == 'COMPLETE' for r in rows)} complete, "
             f"{sum(r['state'] == 'PRUNED' for r in rows)} pruned, {sum(r['state'] == 'FAIL' for r in rows)} failed, "
             f"{sum(r['state'] == 'RUNNING' for r in rows)} running.", "",
             f"Splits: {SPLIT_NOTE}." + (f" Validation: {val_n} examples; test: {test_n} examples." if val_n else ""),
             ""]
    if legacy:
        lines += ["**This study chose on the test split** (it predates selection on validation): its accuracy "
                  "is test accuracy and its front is not a held-out estimate. Re-run the sweep with --fresh.", ""]
    lines += [f"## {'Pareto front' if len(objectives) > 1 else 'Best trials'}", "",
              format_stage_table(best_rows, [("number", "{}", "trial"), *ACCURACY_COLUMNS,
                                             ("throughput", "{:.1f}", "throughput (samples/s)"), "params",
                                             ("nonzero_params", None, "non-zero params"), "engine", "stages",
                                             "recipe"], fmt="markdown")]
    if ref:
        lines += ["", f"Reference: {ref['stage']} (first stage of trial {ref['trial']}) validation accuracy "
                      f"{format_cell(ref.get('val_accuracy'))}, test accuracy {format_cell(ref.get('test_accuracy'))}, "
                      f"{format_cell(ref.get('throughput_b1'), '{:.1f}')} samples/s ({ref.get('engine')})."]
    lines += ["", "![pareto](pareto.png)", "", "## Peers: the front trials' own models on other engines", ""]
    if peers:
        lines += [f"Each front trial's model (its last fp32 stage) run on each peer engine (a fresh process per "
                  f"engine), batch 1, seq {seq_len}, timed like the trial; accuracy on the same validation examples "
                  f"({peers_path.name}). On the plot each peer point is joined to its trial.", "",
                  format_stage_table(peers, [("trial", None), ("stage", None), ("params", None), ("engine", None),
                                             ("val_accuracy", "{:.4f}", "val accuracy"),
                                             ("samples_per_s", "{:.1f}", "samples/s"), ("threads", None),
                                             ("argmax_agree_vs_torch_fp32", "{:.3f}", "argmax agree vs fp32"),
                                             ("status", None), ("error", None)], fmt="markdown")]
    else:
        lines.append(f"none ({peers_path} absent: the sweep's `peers:` is empty, or the report ran before the "
                     "sweep finished).")
    lines += ["", "## Parameter importance", ""]
    if imps:
        params = sorted({p for d in imps.values() for p in d})
        lines.append(format_stage_table([{"parameter": f"`{p}`", **{o: d.get(p, 0.0) for o, d in imps.items()}}
                                         for p in params],
                                        [("parameter", None), *((o, "{:.3f}") for o in imps)], fmt="markdown"))
    else:
        lines.append(f"_{why}_")
    lines += ["", "![importance](param_importance.png)", ""]
    if best:
        top = best[0]
        trial_metrics = folder / "trials" / str(top.number) / "metrics.json"
        stages = (json.loads(trial_metrics.read_text())["stages"] if trial_metrics.is_file()
                  else top.user_attrs.get("stages") or [])
        if stages:
            stage_waterfall(stages, out / "best_stage_waterfall.png", title=f"trial {top.number}: through the stages")
            per_layer_sparsity(stages, out / "best_per_layer_sparsity.png", title=f"trial {top.number}: per-layer sparsity")
            lines += [f"## Most accurate {'Pareto ' if len(objectives) > 1 else ''}trial: {top.number}", "",
                      "Stage metrics below are on the test split (the recipe's eval.split), reported only.", "",
                      format_stage_table(stages, REPORT_STAGE_COLUMNS, fmt="markdown"), "",
                      "![waterfall](best_stage_waterfall.png)", "",
                      "![sparsity](best_per_layer_sparsity.png)", ""]
    all_rows = [{**r, "parameters": "; ".join(
        f"{k[6:].replace('stages.', '').replace('recipes.', '')}=" + (f"{v:.4g}" if isinstance(v, float) else str(v))
        for k, v in r.items() if k.startswith("param:"))} for r in rows]
    lines += ["## All trials", "",
              format_stage_table(all_rows, [("number", "{}", "trial"), ("state", None), *ACCURACY_COLUMNS,
                                            ("throughput", "{:.1f}"), "params", ("duration_s", "{:.0f}", "duration (s)"),
                                            "parameters"], fmt="markdown")]
    atomic_write_text(out / "README.md", "\n".join(lines) + "\n")
    return out
