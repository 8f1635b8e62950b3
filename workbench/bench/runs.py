"""The cross-engine speed of a finished run's stages: `workbench bench --run results/<run>`.

    bench_run_stages("results/structural", baseline="teacher")      # -> results/structural/speed.csv
    workbench bench --run results/structural --stages teacher,kwon-40 --baseline teacher

A pipeline measures each stage on the engine the stage ends on (torch fp32 for a pruned model).
Whether a structurally pruned model is also faster on the engines one would deploy it on is a
separate question: this benches each stage's *saved* model (`<run>/artifacts/<stage>/model`, or
the shared copy a reused stage came from; loaded with `load_edited_model`, so shrunk stages
reload) on torch fp32, ONNX Runtime fp32 and int8 and our runtime int8, each engine in a fresh
process (`workbench.bench.worker`, as `workbench bench` does), at batch 1 and 8; the engines of a
stage and thread count take turns, one timed run each (`workbench.bench.interleave`;
`--sequential`: back to back), so their ratios come from the same minutes of the machine.

Stages without a saved model (torch int8 and compiled runtime stages are rebuilt, never saved)
are skipped, except by `ort-exported`: each stage as the file `workbench export` writes for it,
exported here first (`workbench.bench.exported`; a stage export refuses gets "skipped" rows with
the reason). A `--seeds` run (`seed-0/`, `seed-1/`...) is benched on one seed (0 by default):
speed does not depend on the seed. `speed.csv` (atomic, rewritten after every engine so a killed
run keeps what it measured) goes to the run's own folder by default, where
`workbench compare --structural` reads it.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from workbench.bench.models import BenchModel, check_sequence_length
from workbench.config import ConfigError

RUN_ENGINES = ("torch-fp32", "ort-fp32", "ort-int8", "wb-int8")
SPEED_COLUMNS = [
    "stage", "engine", "batch", "threads", "seq_len", "status", "samples_per_s", "samples_per_s_min",
    "samples_per_s_max", "latency_ms_median", "runs", "baseline", "vs_baseline_torch_fp32",
    "max_abs_err_vs_torch_fp32", "argmax_agree_vs_torch_fp32", "isa", "load_avg_1m", "seed", "model_path",
    "error", "notes",
]


def seed_folder(run_dir: Path, seed: int = 0) -> Path:
    """The folder holding the run's stages: `run_dir` itself, or `run_dir/seed-<seed>` for a
    `--seeds` run."""
    seeds = sorted(p.name for p in run_dir.glob("seed-*") if p.is_dir())
    if not seeds:
        return run_dir
    if f"seed-{seed}" not in seeds:
        raise ConfigError(f"run '{run_dir}' has no seed-{seed}/ (it has {', '.join(seeds)}); choose one with --seed")
    return run_dir / f"seed-{seed}"


def run_sequence_length(folder: Path, default: int = 128) -> int:
    """The tokens per sequence the run in `folder` timed its stages at (`eval.seq_len` of its
    recipe.yaml, which holds the length as run: lowered to the model's, when it was)."""
    import yaml

    try:
        recipe = yaml.safe_load((folder / "recipe.yaml").read_text())
        return int(recipe["eval"]["seq_len"])
    except (OSError, TypeError, KeyError, ValueError, yaml.YAMLError):  # no recipe, or an older layout
        return default


def stage_models(folder: Path) -> dict[str, Path]:
    """Stage -> saved model folder, in the run's stage order (metrics.json), then any other
    saved stage. A stage reused from the shared cache may have only the shared copy."""
    order: list[str] = []
    reused: dict[str, Path] = {}
    metrics = folder / "metrics.json"
    if metrics.exists():
        for m in json.loads(metrics.read_text()).get("stages", []):
            order.append(m["stage"])
            if m.get("reused_from"):
                reused[m["stage"]] = Path(m["reused_from"]) / "model"
    art = folder / "artifacts"
    order += sorted(p.name for p in art.glob("*") if p.is_dir() and p.name not in order) if art.is_dir() else []
    found: dict[str, Path] = {}
    for stage in order:
        for cand in (art / stage / "model", reused.get(stage)):
            if cand is not None and (cand / "config.json").is_file():
                found[stage] = cand
                break
    return found


def _check(run_dir: Path, stages: Sequence[str] | None, engines: Sequence[str], batches: Sequence[int],
           threads: Sequence[int], baseline: str | None, seed: int, seq_len: int, runs: int, warmup: int
           ) -> tuple[Path, dict[str, Path | None]]:
    """Everything that can be wrong, before any work: the models to bench, in order (None: a
    stage with no saved model, which only `ort-exported` benches)."""
    from workbench.bench.engines import ENGINES
    from workbench.bench.exported import ENGINE as EXPORTED, run_stage_names

    if not run_dir.is_dir():
        raise ConfigError(f"bench --run: no run folder '{run_dir}'")
    folder = seed_folder(run_dir, seed)
    available = stage_models(folder)
    if not available:
        raise ConfigError(f"bench --run: '{folder}' holds no saved stage model (artifacts/<stage>/model); "
                          "is the run finished?")
    known = ", ".join(available)
    listed: dict[str, Path | None] = dict(available)
    if EXPORTED in engines:  # it also benches the measured stages the pipeline rebuilds
        listed = {s: available.get(s) for s in dict.fromkeys([*run_stage_names(folder), *available])}
    bad = [s for s in (stages or []) if s not in listed]
    if bad and EXPORTED in engines:
        raise ConfigError(f"bench --run '{folder}': no stage(s) {', '.join(bad)} in the run (measured or saved: "
                          f"{', '.join(listed)})")
    if bad:
        raise ConfigError(f"bench --run '{folder}': no saved model for stage(s) {', '.join(bad)} (saved: {known}; "
                          "torch int8 and runtime stages are rebuilt, not saved; ort-exported benches them)")
    if baseline is not None and baseline not in available:
        raise ConfigError(f"bench --run '{folder}': --baseline '{baseline}' has no saved model (saved: {known})")
    bad = [e for e in engines if e not in ENGINES]
    if bad or not engines:
        raise ConfigError(f"bench --run: unknown engine(s) {', '.join(bad) or '(none given)'} (known: {', '.join(ENGINES)})")
    if baseline is not None and "torch-fp32" not in engines:
        raise ConfigError("bench --run: --baseline compares with the baseline stage's torch-fp32 speed; "
                          "add torch-fp32 to --engines")
    for key, values in (("batches", batches), ("threads", threads)):
        if not values or any(int(v) < 1 for v in values):
            raise ConfigError(f"bench --run: {key} must be integers >= 1, got {list(values)}")
    if runs < 1 or warmup < 0 or seq_len < 2:
        raise ConfigError(f"bench --run: runs must be >= 1, warmup >= 0, seq_len >= 2 (got {runs}, {warmup}, {seq_len})")
    chosen = list(stages) if stages else list(listed)
    if baseline is not None and baseline not in chosen:
        chosen.insert(0, baseline)  # its torch fp32 speed is the ratios' denominator (only that is run)
    check_sequence_length([BenchModel(s, str(listed[s])) for s in chosen if listed[s] is not None], seq_len)
    return folder, {s: listed[s] for s in chosen}


def add_baseline_ratios(rows: list[dict[str, Any]], baseline: str | None) -> None:
    """`vs_baseline_torch_fp32`: samples/s over the baseline stage's torch-fp32 samples/s at the
    same batch, threads and sequence length (empty without a baseline or a measurement)."""
    base = {(r["batch"], r["threads"], r["seq_len"]): r.get("samples_per_s") for r in rows
            if r["stage"] == baseline and r["engine"] == "torch-fp32" and r.get("status") == "ok"}
    for r in rows:
        b = base.get((r["batch"], r["threads"], r["seq_len"]))
        ok = b and r.get("status") == "ok" and r.get("samples_per_s") not in (None, "")
        r["baseline"] = baseline or ""
        r["vs_baseline_torch_fp32"] = round(float(r["samples_per_s"]) / float(b), 3) if ok else ""


def bench_run_stages(run_dir: str | Path, stages: Sequence[str] | None = None,
                     engines: Sequence[str] = RUN_ENGINES, batches: Sequence[int] = (1, 8),
                     threads: Sequence[int] | None = None, out: str | Path | None = None,
                     baseline: str | None = None, *, seed: int = 0, seq_len: int | None = None, runs: int = 7,
                     warmup: int = 2, timeout: float = 1200.0, interleaved: bool = True) -> list[dict[str, Any]]:
    """Bench each saved stage of a finished run on `engines` (one process each); write
    `<out>/speed.csv` (default out: `run_dir`) and return its rows.

    stages: names (default: every stage with a saved model, in run order); baseline: the unpruned
    source stage whose torch-fp32 speed each row is compared with (benched on torch-fp32 alone
    when `stages` does not list it);
    threads: default the thread count the kernels use here (OMP_NUM_THREADS, else the usable cores).
    seq_len: default the length the run measured its speed at (its recipe's `eval.seq_len`), so
    speed.csv compares with the run's own numbers; 128 for a run without recipe.yaml.
    interleaved: the engines of one stage and thread count take turns, one timed run each
    (`workbench.bench.interleave`, as `workbench bench` does), so a drift of the machine's speed
    hits them alike; False: each engine's runs back to back.
    Bad input (no such run, seed, stage or engine) is a ConfigError before any engine starts."""
    from tqdm import tqdm

    from workbench.bench.processes import time_engines
    from workbench.bench.exported import ENGINE as EXPORTED, export_stages, reference_models, skipped_rows, write_pointer
    from workbench.results import write_csv
    from workbench.runtime.kernels import active_isa, default_threads

    run_dir = Path(run_dir)
    threads = list(threads) if threads else [default_threads()]
    if seq_len is None:
        seq_len = run_sequence_length(seed_folder(run_dir, seed) if run_dir.is_dir() else run_dir)
    folder, models = _check(run_dir, stages, list(engines), list(batches), threads, baseline, seed,
                            seq_len, runs, warmup)
    out_dir = Path(out) if out is not None else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    isa, rows = active_isa(), []
    meta = folder / "metrics.json"
    run_seed = json.loads(meta.read_text()).get("seed", "") if meta.exists() else (seed if folder != run_dir else "")
    only_ratio = baseline if stages and baseline not in stages else None  # not asked for: torch-fp32 only
    configs = [(s, e, t) for s in models for e in engines for t in threads
               if (s != only_ratio or e == "torch-fp32") and (models[s] is not None or e == EXPORTED)]
    exported: dict[str, Any] = {}
    if EXPORTED in engines:  # in this process, before any engine: each stage's file, checked by export
        exported = export_stages(folder, list(dict.fromkeys(s for s, e, _ in configs if e == EXPORTED)),
                                 reference_models(folder, stage_models(folder)),
                                 log=lambda line: print(line, file=sys.stderr))
    groups: dict[tuple[str, int], list[str]] = {}
    for stage, engine, t in configs:
        groups.setdefault((stage, t), []).append(engine)
    with tempfile.TemporaryDirectory(prefix="wb-bench-run-") as tmp:
        bar = tqdm(list(groups.items()), desc="bench stages", unit="group", file=sys.stderr)
        for n, ((stage, t), group) in enumerate(bar):
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            specs, by_engine = [], {e: [] for e in group}
            for engine in group:
                model_path, cache = str(models[stage]), Path(tmp) / "cache"
                if engine == EXPORTED:
                    model_path, cache = exported[stage].reference, Path(tmp) / "exported" / f"{n}"
                spec = {"model": stage, "model_path": model_path, "engine": engine, "threads": t,
                        "batches": [int(b) for b in batches], "seq_len": seq_len, "runs": runs, "warmup": warmup,
                        "cache_dir": str(cache)}
                if engine == EXPORTED and exported[stage].status != "ok":
                    by_engine[engine] = skipped_rows(exported[stage], batches, t, seq_len, runs)
                    continue
                if engine == EXPORTED:
                    write_pointer(cache, exported[stage])
                specs.append(spec)
            progress = lambda text: bar.set_postfix_str(f"{stage} t={t}: {text}")  # noqa: E731,B023
            for x, got in time_engines(specs, Path(tmp), timeout, interleaved, progress):
                by_engine[x["engine"]] = got
            for r in (r for e in group for r in by_engine[e]):
                engine = r["engine"]
                r["stage"] = r.pop("model")
                r.update({"isa": isa, "load_avg_1m": round(load, 2), "seed": run_seed,
                          "model_path": exported[stage].path if engine == EXPORTED else str(models[stage])})
                if r.get("status") != "ok":
                    bar.write(f"  {str(r.get('status')).upper()} {stage} / {engine} / threads={t} batch={r['batch']}: {r.get('error')}")
                rows.append(r)
            add_baseline_ratios(rows, baseline)
            write_csv(out_dir / "speed.csv", rows, SPEED_COLUMNS)  # after every group: survives a kill
    return rows


def run_cli(args: Any) -> int:
    """`workbench bench --run RUN` (arguments of `workbench.bench.cli.add_arguments`)."""
    from workbench.paths import run_folder
    from workbench.results import format_stage_table

    if args.models is not None:
        raise ConfigError("--models and --run exclude each other: --run benches the run's own stage models")
    try:
        run_dir = run_folder(args.run)
    except ConfigError as err:
        raise ConfigError(f"--run: {err}") from None
    q = bool(args.quick)
    rows = bench_run_stages(
        run_dir, args.stages, args.engines or RUN_ENGINES, args.batch or ([1] if q else [1, 8]), args.threads,
        args.out, args.baseline, seed=args.seed, seq_len=args.seq_len or (32 if q else None),
        runs=args.runs if args.runs is not None else (1 if q else 7),
        warmup=args.warmup if args.warmup is not None else (0 if q else 2), timeout=args.timeout,
        interleaved=not args.sequential)
    columns = ["stage", "engine", "threads", "batch", "status", ("samples_per_s", "{:.1f}"),
               ("vs_baseline_torch_fp32", "{:.2f}"), ("max_abs_err_vs_torch_fp32", "{:.2g}")]
    print(format_stage_table(rows, columns, fmt="markdown"))
    ok = sum(r.get("status") == "ok" for r in rows)
    print(f"{ok}/{len(rows)} configurations ok -> {Path(args.out) if args.out else run_dir}/speed.csv")
    return 0 if ok else 1
