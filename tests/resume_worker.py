"""Trains in a subprocess that can be SIGKILLed mid-training; used by test_resume.py and
test_resume_pipeline.py.

usage: python resume_worker.py CHECKPOINT_DIR OUT_FILE [KILL_AT_STEP]
    a tiny BERT with gradual pruning and an owned projection, on the Trainer alone;
usage: python resume_worker.py pipeline SPEC.yaml RESULTS_ROOT [SPEC.yaml RESULTS_ROOT ...] [STAGE:KILL_AT_STEP]
    whole pipelines (`PipelineRun`), one after the other; the last is killed inside STAGE.
With KILL_AT_STEP the process SIGKILLs itself right after that optimizer step (no clean-up,
like an OOM kill or a pulled plug); the kill is a patch of the Trainer here, not a recipe, so
the stage keys of the killed and the re-run pipeline are the same.
"""
import os
import signal
import sys

import torch
from transformers import BertConfig, BertForSequenceClassification

from torch import nn

from workbench.recipes.base import Recipe, RecipeContext
from workbench.recipes.finetune import Finetune, FinetuneConfig
from workbench.recipes.prune.magnitude import MagnitudePrune, MagnitudePruneConfig
from workbench.train import TrainConfig, Trainer


class KillAt(Recipe):
    def on_step_end(self, state):
        if self.config is not None and state.step == self.config:
            os.kill(os.getpid(), signal.SIGKILL)


class OwnedProjection(Recipe):
    """A recipe that owns a parameter (like a distillation projection) and adds a loss term."""

    name = "owned_projection"

    def needs(self):
        return {"hidden_states"}

    def setup(self, model):
        torch.manual_seed(3)
        self.owned = nn.Linear(16, 16)

    def loss_terms(self, state):
        h = state.outputs.hidden_states[-1]
        return {"aux": (0.1, ((self.owned(h) - h.detach()) ** 2).mean())}


def pipeline_main(args: list[str]) -> None:
    from pathlib import Path

    from workbench.pipeline import PipelineRun, PipelineSpec

    torch.set_num_threads(1)
    kill = args.pop() if len(args) % 2 else None
    if kill is not None:
        stage, step = kill.rsplit(":", 1)
        hook = Trainer._hook

        def kill_hook(self, name, state):
            hook(self, name, state)
            if name == "on_step_end" and self.desc == stage and state.step == int(step):
                os.kill(os.getpid(), signal.SIGKILL)

        Trainer._hook = kill_hook
    for spec_path, results in zip(args[::2], args[1::2]):
        PipelineRun(PipelineSpec.from_yaml(spec_path), results_root=Path(results)).run()


def main() -> None:
    if sys.argv[1] == "pipeline":
        pipeline_main(sys.argv[2:])
        return
    ckpt, out = sys.argv[1], sys.argv[2]
    kill_at = int(sys.argv[3]) if len(sys.argv) > 3 else None
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=16, num_labels=2)
    model = BertForSequenceClassification(cfg)
    g = torch.Generator().manual_seed(1)
    # varied lengths, so the length-grouped batch order is part of what must resume exactly
    data = [{"input_ids": torch.randint(1, 50, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g),
             "labels": torch.tensor(i % 2)} for i in range(40)]

    def collate(rows):
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r["input_ids"])] = r["input_ids"]
        return {"input_ids": ids, "attention_mask": (ids != 0).long(),
                "labels": torch.stack([r["labels"] for r in rows])}

    ctx = RecipeContext(task=None, tokenizer=None, run_dir=None, stage="s")
    prune = MagnitudePrune(MagnitudePruneConfig(sparsity=0.75, schedule="cubic", end=0.8, frequency=2), ctx)
    model = prune.apply(model)
    projection = OwnedProjection(None, ctx)
    trainer = Trainer(model, data, collate, TrainConfig(epochs=3, batch_size=8, lr=1e-3, checkpoint_every=4),
                      [prune, Finetune(FinetuneConfig(), ctx), projection, KillAt(kill_at, ctx)], seed=0, checkpoint_dir=__import__("pathlib").Path(ckpt))
    trained = trainer.train()
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    state.update({f"owned.{k}": v.clone() for k, v in projection.owned.state_dict().items()})
    state["steps_run"] = torch.tensor(trainer.steps_run)
    torch.save(state, out)


if __name__ == "__main__":
    main()
