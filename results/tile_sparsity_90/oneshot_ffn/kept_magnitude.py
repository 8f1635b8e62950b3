"""How much of each FFN Linear's weight magnitude (L1) 16x64 magnitude pruning keeps, with the
checkpoint's neuron order and after `sort_ffn_neurons`, on the seed-0 student of
`recipes/tile_sparsity_90.yaml` (run it first). From the repository root:
.venv/bin/python results/tile_sparsity_90/oneshot_ffn/kept_magnitude.py  -> kept_magnitude.txt
"""
from pathlib import Path

from workbench.models.arch import architecture
from workbench.models.registry import load_saved_model
from workbench.recipes.prune.magnitude import block_scores, keep_top
from workbench.recipes.prune.neuron_order import SortFfnNeurons, SortFfnNeuronsConfig
from workbench.recipes.base import RecipeContext

HERE = Path(__file__).resolve().parent
STUDENT = HERE.parent / "seed-0" / "artifacts" / "student" / "model"


def kept(weight, sparsity: float, block=(16, 64)) -> float:
    scores = block_scores(weight, block)
    return float((scores * keep_top(scores, sparsity)).sum() / scores.sum())


def main() -> None:
    model = load_saved_model(STUDENT)
    arch = architecture(model)
    roles = ("ffn_in", "ffn_out")
    before = {(i, r, s): kept(arch.module(i, r).weight.detach(), s)
              for i in range(arch.num_layers) for r in roles for s in (0.5, 0.9)}
    SortFfnNeurons(SortFfnNeuronsConfig(), RecipeContext(task=None, tokenizer=None, run_dir=None, stage="x")).apply(model)
    lines = ["Fraction of a Linear's L1 weight magnitude kept by 16x64 magnitude pruning, seed-0 student",
             "(layer, Linear: checkpoint order -> sorted neurons, at 50 % and at 90 %)", ""]
    for i in range(arch.num_layers):
        for r in roles:
            w = arch.module(i, r).weight.detach()
            cells = [f"{before[(i, r, s)]:.3f} -> {kept(w, s):.3f} ({kept(w, s) / before[(i, r, s)]:.2f}x)" for s in (0.5, 0.9)]
            lines.append(f"layer {i} {r:7s}  50 %: {cells[0]}   90 %: {cells[1]}")
    (HERE / "kept_magnitude.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
