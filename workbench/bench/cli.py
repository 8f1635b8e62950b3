"""`workbench bench`: every engine on the same models, one process per engine, one table.

    workbench bench                                  # the full run (results/bench/)
    workbench bench --quick                          # 1 run each, batch 1, 1 thread, seq 32
    workbench bench --models distilbert --engines ort-int8,wb-int8 --threads 2 --batch 8
    workbench bench --models minilm,kwon=results/structural/seed-0/artifacts/kwon-40/model
    workbench bench --run results/structural --baseline teacher     # every saved stage -> speed.csv

Writes `<out>/engines.csv`, `<out>/engines.png` and `<out>/README.md` (ratios vs ort-int8), then
runs the kernel GEMM microbenchmark (`workbench.bench.gemm.run_gemm_bench`) when it exists.
The engines of one model and thread count take turns, one timed run each, so a drift of the
shared machine's speed hits them alike (`workbench.bench.interleave`; `--sequential`: each
engine's runs back to back). An engine that fails is recorded as a failed row; the run goes on. `--models` takes built-in
names, saved model folders (labelled `stage:<stage>` for a run's `artifacts/<stage>/model`) or
`label=folder`; `--run` benches a finished run's stages instead (`workbench.bench.runs`).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from workbench.bench.contention import busy_processes, check_contend
from workbench.bench.engines import BASELINE, DEFAULT_ENGINES, ENGINES, default_engines
from workbench.bench.models import DEFAULT_MODELS, MODELS, BenchModel, check_sequence_length, parse_model
from workbench.bench.processes import time_engines
from workbench.bench.report import add_ratios, write_engines_csv, write_markdown, write_plot
from workbench.bench.spread import add_spread
from workbench.results import atomic_write_text


def _list(kind: str, known: Any = None, cast: Any = str):
    def parse(text: str) -> list:
        items = [s.strip() for s in text.split(",") if s.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"empty {kind} list")
        try:
            values = [cast(s) for s in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{kind} must be comma-separated integers, got {text!r}")
        if known is not None:
            bad = [v for v in values if v not in known]
            if bad:
                raise argparse.ArgumentTypeError(
                    f"unknown {kind} {', '.join(map(str, bad))} (known: {', '.join(known)})")
        if cast is int and any(v < 1 for v in values):
            raise argparse.ArgumentTypeError(f"{kind} must be >= 1, got {text!r}")
        return values
    return parse


def _models(text: str) -> list[BenchModel]:
    from workbench.config import ConfigError

    items = [t for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("empty model list")
    try:
        models = [parse_model(t) for t in items]
    except ConfigError as exc:  # a missing folder: named before any work
        raise argparse.ArgumentTypeError(str(exc)) from None
    labels = [m.label for m in models]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise argparse.ArgumentTypeError(f"two models labelled {', '.join(dup)}: name them with label=folder")
    return models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 timed run, no warm-up, batch 1, 1 thread, seq 32 (unless given)")
    parser.add_argument("--models", type=_models, default=None,
                        help=f"comma-separated (default {','.join(DEFAULT_MODELS)}; known: {','.join(MODELS)}); "
                             "or a saved model folder (a run's <run>/artifacts/<stage>/model), or label=folder")
    parser.add_argument("--engines", type=_list("engine", list(ENGINES)), default=None,
                        help=f"comma-separated (default: {','.join(DEFAULT_ENGINES)}, and where they run "
                             f"wb-int8-tile90 and wb-int8-onednn (AMX), the -bf16attn / -i8attn engines and "
                             f"the -pc engines (AVX2); with --run: "
                             f"torch-fp32,ort-fp32,ort-int8,wb-int8; also: "
                             f"{','.join(e for e in ENGINES if e not in DEFAULT_ENGINES)})")
    parser.add_argument("--threads", type=_list("threads", cast=int), default=None,
                        help="e.g. 1,2 (default 1,2; with --run: the cores this process may use)")
    parser.add_argument("--batch", type=_list("batch", cast=int), default=None, help="e.g. 1,8 (default 1,8)")
    parser.add_argument("--seq-len", type=int, default=None,
                        help="tokens per sample (default 128; with --run: the run's eval.seq_len)")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per config (default 7, >= 5)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 2)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default results/bench; with --run: the run's folder)")
    parser.add_argument("--run", default=None,
                        help="bench the saved stages of a finished run (a folder, or a name under results/) "
                             "-> <out>/speed.csv; a --seeds run: seed 0 (see --seed)")
    parser.add_argument("--stages", type=_list("stage"), default=None,
                        help="with --run: comma-separated stages (default: every stage with a saved model)")
    parser.add_argument("--baseline", default=None,
                        help="with --run: the unpruned source stage (e.g. teacher); rows get their speed "
                             "over its torch-fp32 speed")
    parser.add_argument("--seed", type=int, default=0, help="with --run on a --seeds run: which seed-<s>/ (default 0)")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per engine process")
    parser.add_argument("--no-gemm", action="store_true", help="skip the kernel GEMM microbenchmark")
    parser.add_argument("--sequential", action="store_true",
                        help="time each engine's runs back to back, one engine after another (default: "
                             "the engines of a model and thread count take turns, one run each: "
                             "workbench.bench.interleave)")
    parser.add_argument("--contend", type=int, default=0,
                        help="time the engines while this many busy processes share the cores "
                             "(e.g. 1 with --threads 2: one core shared; workbench.bench.contention)")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    q = bool(args.quick)
    s = {
        "models": [m.label for m in args.models] if args.models else list(DEFAULT_MODELS),
        "engines": args.engines or list(default_engines()),
        "threads": args.threads or ([1] if q else [1, 2]),
        "batches": args.batch or ([1] if q else [1, 8]),
        "seq_len": args.seq_len or (32 if q else 128),
        "runs": args.runs if args.runs is not None else (1 if q else 7),
        "warmup": args.warmup if args.warmup is not None else (0 if q else 2),
    }
    if s["runs"] < 1 or s["warmup"] < 0 or s["seq_len"] < 2:
        raise ValueError("--runs must be >= 1, --warmup >= 0, --seq-len >= 2")
    s["contend"] = check_contend(args.contend)
    check_sequence_length(args.models or [], s["seq_len"])
    return s


def _run_gemm(args: argparse.Namespace, s: dict[str, Any]) -> None:
    """The kernel engineer's GEMM microbenchmark after the engine table, its table appended to
    the README; a failure is reported and never loses the engine table."""
    # same OpenMP policy as the engine processes (set by importing workbench_ext, before its
    # runtime starts; torch is not loaded in this process yet)
    import workbench_ext  # noqa: F401
    from workbench.bench.gemm import format_rows, run_gemm_bench

    try:
        table = format_rows(run_gemm_bench(out_dir=args.out, quick=args.quick, threads=s["threads"], verbose=False))
    except Exception as exc:  # never lose the engine table to the microbenchmark
        print(f"GEMM microbenchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return
    print(table)
    readme = args.out / "README.md"
    if readme.exists() and table:
        text = readme.read_text().rstrip("\n")
        text += ("\n\n## GEMM microbenchmark (`workbench.bench.gemm.run_gemm_bench`, gemm.csv)\n\n```\n"
                 + table.rstrip("\n") + "\n```\n")
        atomic_write_text(readme, text)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from workbench.config import ConfigError

    if args.run is not None:
        from workbench.bench.runs import run_cli

        try:
            return run_cli(args)
        except (ConfigError, ValueError) as exc:
            print(f"workbench bench: error: {exc}", file=sys.stderr)
            return 2
    if args.stages is not None or args.baseline is not None:
        print("workbench bench: error: --stages and --baseline go with --run RUN", file=sys.stderr)
        return 2
    try:
        s = _settings(args)
    except ValueError as exc:
        print(f"workbench bench: error: {exc}", file=sys.stderr)
        return 2
    paths = {m.label: m.path for m in args.models or []}
    out: Path = args.out or Path("results/bench")
    args.out = out
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with tempfile.TemporaryDirectory(prefix="wb-bench-") as tmp:
        work = Path(tmp)

        def spec(model: str, engine: str, threads: int) -> dict[str, Any]:
            return {"model": model, "model_path": paths.get(model), "engine": engine, "threads": threads,
                    "batches": s["batches"], "seq_len": s["seq_len"], "runs": s["runs"], "warmup": s["warmup"],
                    "cache_dir": str(work / "cache")}

        def keep(got: list[dict[str, Any]], bar: Any) -> None:
            for r in got:
                if r.get("status") != "ok":
                    bar.write(f"  FAILED {r['model']} / {r['engine']} / threads={r['threads']} batch={r['batch']}: "
                              f"{r.get('error')}")
            rows.extend(got)
            add_ratios(rows, BASELINE)
            write_engines_csv(rows, out / "engines.csv")  # as rows arrive: a partial table survives a kill

        groups = [(m, t) for m in s["models"] for t in s["threads"]]
        bar = tqdm(groups, desc="bench", unit="group", file=sys.stderr)
        with busy_processes(s["contend"]):
            for model, threads in bar:
                specs = [spec(model, e, threads) for e in s["engines"]]
                for _, got in time_engines(specs, work, args.timeout, not args.sequential,
                                           lambda text: bar.set_postfix_str(f"{model} t={threads}: {text}")):  # noqa: B023
                    keep(got, bar)
    order = [e for e in ENGINES if e in s["engines"]]
    rows.sort(key=lambda r: (s["models"].index(r["model"]), order.index(r["engine"]), r["threads"], r["batch"]))
    add_ratios(rows, BASELINE)
    add_spread(rows, BASELINE, interleaved=not args.sequential)
    write_engines_csv(rows, out / "engines.csv")
    argv = sys.argv[1:]
    if argv and argv[0] == "bench":
        argv = argv[1:]
    args_line = " ".join(["workbench bench"] + [shlex.quote(a) for a in argv])
    try:
        write_plot(rows, out / "engines.png", order)
    except Exception as exc:
        print(f"plot failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    write_markdown(rows, out / "README.md", order, BASELINE, args_line.strip(), (load_start, load_end),
                   interleaved=not args.sequential, contend=s["contend"])
    ok = sum(r.get("status") == "ok" for r in rows)
    print(f"{ok}/{len(rows)} configurations ok -> {out / 'engines.csv'}, {out / 'engines.png'}, {out / 'README.md'}")
    if not args.no_gemm:
        _run_gemm(args, s)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workbench bench", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
