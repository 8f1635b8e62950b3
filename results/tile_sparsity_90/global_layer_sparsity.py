"""Each pruned Linear's sparsity under `scope: global` (the blocks of all layers ranked together at
90 % overall), per block shape, averaged over the seeds' saved models. From the repository root,
after `workbench run recipes/tile_sparsity_90.yaml --seeds 0,1,2`:
.venv/bin/python results/tile_sparsity_90/global_layer_sparsity.py  -> global_layer_sparsity.md
"""
from pathlib import Path

import numpy as np

from workbench.models.arch import architecture
from workbench.models.registry import load_saved_model
from workbench.recipes.prune.magnitude import prunable_linears

HERE = Path(__file__).resolve().parent
ROLES = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")


def sparsities(stage: str) -> np.ndarray:
    """[seeds, layers, roles] fraction of zero weights."""
    out = []
    for seed_dir in sorted(HERE.glob("seed-*")):
        model = load_saved_model(seed_dir / "artifacts" / stage / "model")
        arch = architecture(model)
        assert len(prunable_linears(model)) == arch.num_layers * len(ROLES)
        out.append([[float((arch.module(i, r).weight == 0).float().mean()) for r in ROLES]
                    for i in range(arch.num_layers)])
    return np.array(out)


def main() -> None:
    lines = ["Fraction of zero weights per Linear under `scope: global` at 90 % overall (mean over the seeds;",
             "per-layer scope: 0.90 everywhere).", ""]
    for stage in ("pruned.1x4-global", "pruned.16x64-global"):
        s = sparsities(stage)
        lines += [f"{stage} ({s.shape[0]} seeds)", "", "| layer | " + " | ".join(ROLES) + " |",
                  "|---|" + "---|" * len(ROLES)]
        for i, row in enumerate(s.mean(0)):
            lines.append(f"| {i} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
        lines.append("")
    (HERE / "global_layer_sparsity.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
