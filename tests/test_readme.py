"""The README's example recipes run: its code block is executed, then used in a pipeline."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import torch

from workbench.pipeline import PipelineRun, PipelineSpec

README = Path(__file__).resolve().parents[1] / "README.md"


def _example_code() -> str:
    text = README.read_text()
    section = text[text.index("### Writing a recipe"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_recipes_run_in_a_pipeline(tmp_path, monkeypatch):
    from test_platform import _csv_task, _tiny_dir

    exec(compile(_example_code(), str(README), "exec"), {})
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    model = _tiny_dir(tmp_path, "tiny")

    def run(unfreeze_at: float, name: str):
        spec = PipelineSpec.from_dict({
            "name": name, "model": str(model), "seed": 0, "task": _csv_task(tmp_path),
            "eval": {"speed_batches": [1], "speed_iters": 1, "seq_len": 16},
            "stages": [{"name": "s", "recipes": ["finetune", {"freeze_embeddings": {"unfreeze_at": unfreeze_at}},
                                                 {"confidence_penalty": {"weight": 0.2}}],
                        "train": {"epochs": 2, "batch_size": 16, "lr": 1e-3}}]})
        r = PipelineRun(spec, results_root=tmp_path / "r")
        r.run()
        return r.models["s"], r.base_model

    frozen, base = run(1.0, "frozen")
    emb = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(frozen.state_dict()[emb], base.state_dict()[emb])  # frozen all stage
    assert not torch.equal(frozen.state_dict()["classifier.weight"], base.state_dict()["classifier.weight"])
    thawed, base = run(0.5, "thawed")
    assert not torch.equal(thawed.state_dict()[emb], base.state_dict()[emb])  # unfrozen halfway: it trained
    with open(tmp_path / "r" / "thawed" / "history" / "s.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"ce", "neg_entropy"} <= set(rows[0]) and float(rows[0]["neg_entropy"]) < 0
