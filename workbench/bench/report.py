"""Writing `workbench bench` results: engines.csv, engines.png, README.md (all atomic)."""
from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path
from typing import Any

from workbench.bench.after_pause import FIELD as AFTER_PAUSE_FIELD, after_pause_section
from workbench.bench.host import cpu_name
from workbench.bench.worker import QUIET_S, WARM_S
from workbench.bench.spread import RUNS_FIELD, SHARES_FIELD, SPREAD_FIELDS, spread_section
from workbench.bench.placement import FIELD as PLACEMENT_FIELD, placement_lines
from workbench.bench.stalls import stall_lines
from workbench.results import atomic_write_text, format_stage_table, write_csv

COLUMNS = [
    "model", "engine", "threads", "batch", "seq_len", "status", "samples_per_s",
    "samples_per_s_min", "samples_per_s_max", "latency_ms_median", "latency_ms_min",
    "latency_ms_max", "runs", "vs_ort_int8", *[f for f in SPREAD_FIELDS if f != RUNS_FIELD], AFTER_PAUSE_FIELD,
    "max_abs_err_vs_torch_fp32", "argmax_agree_vs_torch_fp32", "sparsity", "setup_s", "error", "variant",
    "notes", RUNS_FIELD, SHARES_FIELD, PLACEMENT_FIELD,
]


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def add_ratios(rows: list[dict[str, Any]], baseline: str) -> None:
    """`vs_ort_int8`: samples/s over the baseline engine's, same model/threads/batch/seq."""
    base = {(r["model"], r["threads"], r["batch"], r["seq_len"]): _num(r.get("samples_per_s"))
            for r in rows if r["engine"] == baseline and r.get("status") == "ok"}
    for r in rows:
        b = base.get((r["model"], r["threads"], r["batch"], r["seq_len"]))
        s = _num(r.get("samples_per_s"))
        r["vs_ort_int8"] = round(s / b, 3) if (b and s is not None and r.get("status") == "ok") else ""


def write_engines_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """engines.csv, atomically, in the order of COLUMNS (missing values empty)."""
    write_csv(path, rows, COLUMNS)


def write_plot(rows: list[dict[str, Any]], path: Path, engines_order: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from workbench.plots.runs import save_figure

    models = list(dict.fromkeys(r["model"] for r in rows))
    panels = sorted({(r["threads"], r["batch"]) for r in rows})
    fig, axes = plt.subplots(len(models), len(panels), squeeze=False,
                             figsize=(max(4.0, 3.6 * len(panels)), 3.4 * len(models) + 0.6))
    for i, model in enumerate(models):
        for j, (t, b) in enumerate(panels):
            ax = axes[i][j]
            sel = {r["engine"]: r for r in rows if r["model"] == model and r["threads"] == t and r["batch"] == b}
            names = [e for e in engines_order if e in sel]
            vals, lo, hi, colors = [], [], [], []
            for e in names:
                r = sel[e]
                ok = r.get("status") == "ok"
                v = _num(r.get("samples_per_s")) if ok else 0.0
                vals.append(v or 0.0)
                lo.append((v - _num(r["samples_per_s_min"])) if ok else 0.0)
                hi.append((_num(r["samples_per_s_max"]) - v) if ok else 0.0)
                colors.append("tab:green" if e.startswith("wb-") else "tab:orange" if e.startswith("ort-")
                              else "tab:blue")
            y = range(len(names))
            ax.barh(list(y), vals, xerr=[lo, hi], color=colors, capsize=2)
            ax.set_yticks(list(y), names, fontsize=7)
            ax.invert_yaxis()
            for k, e in enumerate(names):
                if sel[e].get("status") != "ok":
                    ax.text(0, k, " failed", va="center", fontsize=7, color="red")
            ax.set_title(f"{model}  threads={t}  batch={b}", fontsize=8)
            ax.set_xlabel("samples/s (median, bars: min-max)", fontsize=7)
            ax.tick_params(axis="x", labelsize=7)
    seq = rows[0]["seq_len"] if rows else "?"
    fig.suptitle(f"Engines, seq len {seq} (higher is better)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _machine() -> list[str]:
    lines = [f"- host CPU: {cpu_name()}, {os.cpu_count()} logical cores; {platform.platform()}"]
    try:
        from workbench_ext import cpu

        feats = cpu.features()
        lines.append(f"- workbench_ext ISA: {cpu.active_isa()} (available: {', '.join(cpu.available_isas())}; "
                     f"features: {', '.join(k for k, v in sorted(feats.items()) if v)})")
    except Exception:
        lines.append("- workbench_ext: not built (the runtime ran its NumPy fallbacks)")
    vers = []
    for mod in ("torch", "onnxruntime", "transformers", "numpy"):
        try:
            vers.append(f"{mod} {__import__(mod).__version__}")
        except Exception:
            pass
    lines.append("- " + ", ".join(vers))
    return lines


def _runs(rows: list[dict[str, Any]]) -> str:
    runs = sorted({int(r["runs"]) for r in rows if r.get("status") == "ok" and r.get("runs")})
    if not runs:
        return "?"
    return str(runs[0]) if len(runs) == 1 else f"{runs[0]}-{runs[-1]} (column `runs`)"


MODEL_NOTES = {
    "distilbert": "`distilbert`: DistilBERT-base shape (`DistilBertConfig()`, random weights, seed 0).",
    "minilm": "`minilm`: the embedded all-MiniLM-L6-v2 (real weights) with a seeded 2-label head.",
    "tiny-distilbert": "`tiny-distilbert`: a 2-layer, 64-wide DistilBERT with random weights (tests).",
}


def _pool_policy() -> str:
    """How the workbench kernels' pool threads wait between jobs in the engine processes."""
    from workbench_ext import pool

    return f"`WORKBENCH_POOL_SPIN_US={pool.spin_from_env()}`, `WORKBENCH_POOL_APART={int(pool.apart_from_env())}`"


def _openmp_policy() -> str:
    """The OpenMP waiting policy the engine processes get (`workbench.bench.processes.child_env`)."""
    from workbench_ext import OPENMP_DEFAULTS, openmp_defaults

    env = openmp_defaults(dict(os.environ))
    return ", ".join(f"`{k}={env[k]}`" for k in OPENMP_DEFAULTS)


def write_markdown(rows: list[dict[str, Any]], path: Path, engines_order: list[str], baseline: str,
                   args_line: str, load: tuple[float, float] | None = None, interleaved: bool = True,
                   contend: int = 0) -> None:
    models = list(dict.fromkeys(r["model"] for r in rows))
    panels = sorted({(r["threads"], r["batch"]) for r in rows})
    seq = rows[0]["seq_len"] if rows else "?"
    out = [
        "# Engine benchmark",
        "",
        f"Generated by `{args_line}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"Throughput in samples/s (median of {_runs(rows)} timed runs after warm-up; "
        f"sequence length {seq}, no padding), and in parentheses the ratio to **{baseline}** "
        "(ONNX Runtime dynamic int8, per row the best of its plain and ORT-optimized graphs with "
        "per-tensor and per-channel weights, all four timed in the same rounds, 7-bit weights on CPUs "
        "without VNNI as ORT advises: the strongest peer; the table names the variant) for the same model, "
        "threads and batch. `err` is the largest |logit - torch fp32 logit| over all batches "
        "(for the pruned engines, vs the pruned model in torch fp32).",
        "",
    ]
    columns = ["engine", *(f"t={t} b={b}" for t, b in panels), "err"]
    for model in models:
        out += [f"## {model}", ""]
        table = []
        for e in engines_order:
            sel = {(r["threads"], r["batch"]): r for r in rows if r["model"] == model and r["engine"] == e}
            if not sel:
                continue
            cells = {"engine": f"**{e}**" if e.startswith("wb-") else e}
            errs = []
            for t, b in panels:
                r, col = sel.get((t, b)), f"t={t} b={b}"
                if r is None:
                    cells[col] = ""
                elif r.get("status") != "ok":
                    cells[col] = "failed"
                else:
                    ratio = r.get("vs_ort_int8")
                    cells[col] = (f"{float(r['samples_per_s']):.1f}" + (f" ({float(ratio):.2f}x)" if ratio != "" else "")
                                  + (f" `{r['variant']}`" if r.get("variant") else ""))
                    errs.append(float(r["max_abs_err_vs_torch_fp32"]))
            cells["err"] = f"{max(errs):.2g}" if errs else ""
            table.append(cells)
        out += [format_stage_table(table, columns, fmt="markdown"), ""]
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed:
        out += ["## Failures", ""]
        for r in failed:
            out.append(f"- {r['model']} / {r['engine']} / threads={r['threads']} batch={r['batch']}: "
                       f"{r.get('error', '')}")
        out.append("")
    out += spread_section(rows, engines_order, baseline, interleaved)
    out += placement_lines(rows)
    out += stall_lines(rows) if interleaved else []
    out += after_pause_section(rows, engines_order, baseline, QUIET_S)
    notes: dict[str, dict[str, str]] = {}  # engine -> note -> the rows it is for
    for r in rows:
        if r.get("notes"):
            where = (f"{r['model']} " if len(models) > 1 else "") + f"t={r['threads']} b={r['batch']}"
            notes.setdefault(r["engine"], {}).setdefault(r["notes"], where)
    from workbench.bench.models import MODELS

    saved = [m for m in models if m not in MODELS]
    out += ["## Method", "",
            "- One process per (model, engine, threads): no shared thread pools or state; "
            "`OMP/MKL/OPENBLAS_NUM_THREADS`, `torch.set_num_threads`, ORT `intra_op_num_threads` all "
            "set to the thread count; workbench's pool threads spin briefly between jobs, then sleep "
            f"({_pool_policy()}), the caller takes the chunks a late thread has not started, and a "
            "worker that finds itself on another pool thread's vCPU moves to another one; "
            f"torch's OpenMP threads spin briefly, then sleep ({_openmp_policy()}); ORT's spin.",
            *([f"- Contended (`--contend {contend}`): {contend} busy process(es) shared the cores while "
               "the engines were timed (`workbench.bench.contention`): how each engine copes with a "
               "core it does not have to itself."] if contend else []),
            *[f"- {MODEL_NOTES[m]}" for m in models if m in MODEL_NOTES],
            *([f"- {', '.join(f'`{m}`' for m in saved)}: saved model folders (e.g. a run's "
               "`artifacts/<stage>/model`), loaded with `workbench.models.edits.load_edited_model` "
               "(structural edits replayed: uneven heads and FFN widths, removed blocks)."] if saved else []),
            *(["- `wb-int8-spNN`: the model pruned with `magnitude_prune_(model, NN/100, block=(1, 4))` "
               "(encoder Linears)."] if any(e.startswith("wb-int8-sp") for e in engines_order) else []),
            *(["- `wb-int8-tileNN`: pruned with `block=(16, 64)`, one AMX weight tile per block: on AMX "
               "the tile-sparse kernel, which skips whole tiles, is a candidate for each Linear."]
              if any(e.startswith("wb-int8-tile") for e in engines_order) else []),
            "- `wb-int8*`: compiled with `compile_model(quantize=True, kernel_choice=\"measure\")` at the "
            "bench's shapes (every Linear on the fastest of the dense, block-sparse, library "
            "(torch's `_int_mm`, oneDNN) and, on AMX, tile-sparse kernels per batch size; the notes "
            "list them).",
            *(["- `wb-int8-onednn`: every Linear on the library kernel (`kernel_choice=\"library\"`: "
               "torch's `_int_mm`, oneDNN, between our quantization and epilogue; the same outputs as "
               "`wb-int8`): our GEMM kernels against oneDNN's in the same runtime."]
              if "wb-int8-onednn" in engines_order else []),
            *(["- `ort-int8`: each of its four variants (plain or ORT-optimized graph, per-tensor or "
               "per-channel weights) does its own untimed and timed calls in every turn, a pause before "
               "each; a row is the variant with the best median at that batch (named in the table)."]
              if "ort-int8" in engines_order else []),
            "- The workbench engine evaluates only the [CLS] row in the last encoder layer (exact for "
            "sequence classification); peers run the full graph as exported.",
            ("- Interleaved timing (`workbench.bench.interleave`): the engines of a model and thread count "
             f"are set up one at a time, then take turns, one timed run each (after a {QUIET_S:g} s pause in "
             f"which the previous engine's threads stop spinning, and untimed runs of their own for "
             f"{WARM_S * 1e3:g} ms, at least one, so a fast engine is as warm as a slow one), so a "
             "change of the shared machine's speed hits every engine of a round alike; min-max bars "
             "show the spread over the rounds." if interleaved else
             "- Sequential timing (`--sequential`): engines run one after another, so a load change during "
             "the run moves their numbers differently (see the load averages below); min-max bars show "
             "the spread within each engine's runs."),
            "", "Engine setup:", ""]
    for e, by_note in notes.items():  # an engine with variants has a note per row (the variant it ran)
        out += [f"- `{e}`" + (f" ({where})" if len(by_note) > 1 else "") + f": {n}" for n, where in by_note.items()]
    out += ["", "## Machine", ""] + _machine()
    if load is not None:
        out.append(f"- 1-minute load average: {load[0]:.2f} at the start of the run, {load[1]:.2f} at the end "
                   f"({os.cpu_count()} logical cores)")
    out.append("")
    atomic_write_text(path, "\n".join(out))
