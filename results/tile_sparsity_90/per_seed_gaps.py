"""The per-seed accuracy differences the README cites, from seeds.csv (test split, points):
.venv/bin/python results/tile_sparsity_90/per_seed_gaps.py  -> per_seed_gaps.md
"""
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
PAIRS = [("pruned.16x64", "pruned.1x4"), ("runtime.16x64", "runtime.1x4"),
         ("pruned.16x64-sorted", "pruned.16x64"), ("runtime.16x64-sorted", "runtime.16x64"),
         ("pruned.1x4-global", "pruned.1x4"), ("pruned.16x64-global", "pruned.16x64"),
         ("pruned.mixed", "pruned.1x4"), ("runtime.mixed", "runtime.1x4"), ("pruned.mixed", "pruned.16x64")]


def main() -> None:
    acc = pd.read_csv(HERE / "seeds.csv").pivot_table(index="seed", columns="stage", values="accuracy")
    lines = ["Test accuracy differences per seed, in points (from `seeds.csv`).", "",
             "| stage | minus | " + " | ".join(f"seed {s}" for s in acc.index) + " |",
             "|---|---|" + "---|" * len(acc.index)]
    for a, b in PAIRS:
        lines.append(f"| {a} | {b} | " + " | ".join(f"{100 * d:+.2f}" for d in acc[a] - acc[b]) + " |")
    (HERE / "per_seed_gaps.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
