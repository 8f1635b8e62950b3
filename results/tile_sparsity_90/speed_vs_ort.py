"""Our runtime against ONNX Runtime int8 on the same compressed models, per seed: the ratio of
`wb-int8` to `ort-int8` samples/s within each stage's `workbench bench --run` panel (the engines
of a stage take turns, so the ratio is a same-run one), then mean ± std over the seeds.

Run from the repository root after the three `workbench bench --run results/tile_sparsity_90
--seed S --out results/tile_sparsity_90/seed-S ...` commands (README.md):
.venv/bin/python results/tile_sparsity_90/speed_vs_ort.py  -> speed_vs_ort.md
A folder argument reads its `seed-*/speed.csv` instead and writes its own `speed_vs_ort.md`
(`mixed-speed/`: the benches of the mixed-block stage, README).
"""
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent


def main(root: Path = HERE) -> None:
    frames = [pd.read_csv(f) for f in sorted(root.glob("seed-*/speed.csv"))]
    df = pd.concat(frames)
    wide = df.pivot_table(index=["stage", "seed", "batch"], columns="engine", values="samples_per_s")
    wide["ratio"] = wide["wb-int8"] / wide["ort-int8"]
    per_seed = wide["ratio"].unstack("batch").dropna(how="all")  # the baseline stage has no int8 rows
    summary = per_seed.groupby("stage").agg(["mean", "std"])
    speed = wide[["wb-int8", "ort-int8"]].groupby(["stage", "batch"]).mean().unstack("batch")
    order = [s for s in ("student", "pruned.1x4", "pruned.16x64", "pruned.mixed") if s in per_seed.index.get_level_values(0)]
    lines = [f"`wb-int8` over `ort-int8` on the same model, same-run ratios, 2 threads, sequence 128 "
             f"({len(frames)} seeds; {df.isa.iloc[0]} ISA). Samples/s are the seeds' means.", "",
             "| stage | b=1 ratio (mean ± std) | b=1 per seed | wb-int8 b=1 | ort-int8 b=1 | b=8 ratio | wb-int8 b=8 | ort-int8 b=8 |",
             "|---|---|---|---|---|---|---|---|"]
    for stage in order:
        seeds = ", ".join(f"{r:.2f}x" for r in per_seed.loc[stage][1])
        lines.append(
            f"| {stage} | {summary.loc[stage, (1, 'mean')]:.2f}x ± {summary.loc[stage, (1, 'std')]:.2f} | {seeds} "
            f"| {speed.loc[stage, ('wb-int8', 1)]:.0f}/s | {speed.loc[stage, ('ort-int8', 1)]:.0f}/s "
            f"| {summary.loc[stage, (8, 'mean')]:.2f}x ± {summary.loc[stage, (8, 'std')]:.2f} "
            f"| {speed.loc[stage, ('wb-int8', 8)]:.0f}/s | {speed.loc[stage, ('ort-int8', 8)]:.0f}/s |")
    (root / "speed_vs_ort.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else HERE)
