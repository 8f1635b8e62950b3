"""The report of a sweep: Pareto plot, parameter importance, best trial's stages, README.md.

Written by `run_sweep(..., report=True)` and by `workbench report <sweep>`. Reads the study
through `workbench.sweep.study`; it imports neither the runner nor `workbench.report`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workbench.results import REPORT_STAGE_COLUMNS, atomic_write_text, format_cell, format_stage_table
from workbench.sweep.study import best_trials, load_study, trial_rows


def sweep_report(folder: Path | str, study: Any = None, storage: str | None = None,
                 peers_csv: Path | str | None = None) -> Path:
    """Plots + README.md for a sweep, in <sweep>/report/. Returns the report folder."""
    from optuna.trial import TrialState

    from workbench.plots import param_importance, param_importances, pareto_front, read_peers
    from workbench.plots.runs import per_layer_sparsity, stage_waterfall

    folder = Path(folder)
    study = study or load_study(folder, storage)
    out = folder / "report"
    objectives = study.user_attrs.get("objectives") or ["accuracy", "throughput"]
    rows = trial_rows(study, objectives)
    done = [r for r in rows if r["state"] == "COMPLETE"]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    first = min(complete, key=lambda t: t.number) if complete else None
    teacher = (first.user_attrs.get("stages") or [None])[0] if first else None
    first_metrics = folder / "trials" / str(first.number) / "metrics.json" if first else None
    if first_metrics is not None and first_metrics.is_file():
        teacher = json.loads(first_metrics.read_text())["stages"][0]
    recipe = (first.user_attrs.get("recipe") or {}) if first else {}
    seq_len = (recipe.get("eval") or {}).get("seq_len")
    peers_path = Path(peers_csv) if peers_csv else folder.parent.parent / "bench" / "engines.csv"
    peers = read_peers(peers_path, seq_len=seq_len, threads=(teacher or {}).get("threads"))
    quick = (study.user_attrs.get("sweep") or {}).get("quick")
    pareto_front(done, out / "pareto.png", teacher=teacher, peers=peers, seq_len=seq_len,
                 title=f"sweep {folder.name}: accuracy vs throughput ({len(done)} trials"
                       + (", quick" if quick else "") + ")")
    imps, why = param_importances(study)
    param_importance(imps, out / "param_importance.png", message=why, title=f"sweep {folder.name}: parameter importance")

    best = best_trials(study, top_k=3)
    by_number = {r["number"]: r for r in rows}
    best_rows = [{**by_number[t.number], "recipe": f"[trial-{t.number}.yaml](../best/trial-{t.number}.yaml)"}
                 for t in best]
    lines = [f"# Sweep `{folder.name}`", "",
             f"Objectives: {', '.join(objectives)} (maximised; throughput is batch-1 samples/s of the last stage). "
             f"Trials: {sum(r['state'] == 'COMPLETE' for r in rows)} complete, "
             f"{sum(r['state'] == 'PRUNED' for r in rows)} pruned, {sum(r['state'] == 'FAIL' for r in rows)} failed, "
             f"{sum(r['state'] == 'RUNNING' for r in rows)} running.", "",
             f"## {'Pareto front' if len(objectives) > 1 else 'Best trials'}", "",
             format_stage_table(best_rows, [("number", "{}", "trial"), "accuracy",
                                            ("throughput", "{:.1f}", "throughput (samples/s)"), "params",
                                            ("nonzero_params", None, "non-zero params"), "engine", "stages",
                                            "recipe"], fmt="markdown")]
    if teacher:
        lines += ["", f"Reference: teacher (first stage of trial {first.number}) accuracy "
                      f"{format_cell(teacher.get('accuracy'))}, {format_cell(teacher.get('throughput_b1'), '{:.1f}')} "
                      f"samples/s ({teacher.get('engine')})."]
    lines += ["", ("Peers (vertical lines) from " + str(peers_path) + ": "
                   + ", ".join(f"{p['engine']} {p['throughput']:.1f}/s ({p['threads']} thr)" for p in peers))
              if peers else f"Peers: none ({peers_path} absent or without minilm rows at batch 1"
                            + (f", seq {seq_len}" if seq_len else "") + "; run `workbench bench`).",
              "", "![pareto](pareto.png)", "", "## Parameter importance", ""]
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
                      format_stage_table(stages, REPORT_STAGE_COLUMNS, fmt="markdown"), "",
                      "![waterfall](best_stage_waterfall.png)", "",
                      "![sparsity](best_per_layer_sparsity.png)", ""]
    all_rows = [{**r, "parameters": "; ".join(
        f"{k[6:].replace('stages.', '').replace('recipes.', '')}=" + (f"{v:.4g}" if isinstance(v, float) else str(v))
        for k, v in r.items() if k.startswith("param:"))} for r in rows]
    lines += ["## All trials", "",
              format_stage_table(all_rows, [("number", "{}", "trial"), ("state", None), "accuracy",
                                            ("throughput", "{:.1f}"), "params", ("duration_s", "{:.0f}", "duration (s)"),
                                            "parameters"], fmt="markdown")]
    atomic_write_text(out / "README.md", "\n".join(lines) + "\n")
    return out
