"""A pipeline killed with SIGKILL inside a distillation stage resumes from its checkpoint: it
runs only the remaining steps and ends bit-identical to an uninterrupted run (weights, history,
metrics). A changed recipe discards the killed stage's checkpoint, says so, and ends
bit-identical to a fresh run of the changed recipe: nothing of the discarded attempt leaks in
(the teacher's cached logits are per example, not per batch).

Tiny: a 2-layer, 32-wide BERT with the MiniLM tokenizer whose classifier is scaled up, so the
teacher's logits are O(1) and a last-bit change in them reaches the student's weights; texts of
varied lengths, so batches pad differently. Teacher 3 steps; student (1 layer copied,
`distill_logits`) 2 epochs x 6 steps, a checkpoint every 4 steps, killed after step 5.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from test_platform import _tiny_dir

WORKER = Path(__file__).with_name("resume_worker.py")
KILL_AT, CHECKPOINT_EVERY, STEPS = 5, 4, 12
CHANGED_BATCH = 7  # the changed recipe: another batch size, so other padding and batch-mates


def _task(tmp: Path) -> str:
    rnd = random.Random(0)
    filler = ["quite", "really", "long", "plot", "actor", "scene", "music"]
    rows = []
    for i in range(120):
        word, label = [("good", "pos"), ("great", "pos"), ("bad", "neg"), ("awful", "neg")][i % 4]
        pad = " ".join(rnd.choice(filler) for _ in range(rnd.randint(0, 25)))
        rows.append(f"the film was {word} {pad} number {i},{label}")
    (tmp / "reviews.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    return str(tmp / "reviews.csv")


def _model(tmp: Path) -> Path:
    from transformers import BertForSequenceClassification

    path = _tiny_dir(tmp, "tiny")
    model = BertForSequenceClassification.from_pretrained(path)
    with torch.no_grad():
        model.classifier.weight.mul_(100.0)
    model.save_pretrained(path)
    return path


def _spec(tmp: Path, model: Path, task: str, batch_size: int = 16) -> Path:
    spec = {
        "name": "p", "model": str(model), "seed": 0, "task": task,
        "eval": {"speed_batches": [1], "speed_iters": 1, "seq_len": 16},
        "stages": [
            {"name": "teacher", "recipes": ["finetune"],
             "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "max_steps": 3}},
            {"name": "student", "recipes": [{"student": {"layers": [1]}},
                                            {"distill_logits": {"teacher": "teacher", "alpha": 0.7}}],
             "train": {"epochs": 2, "batch_size": batch_size, "lr": 1e-3, "checkpoint_every": CHECKPOINT_EVERY}}]}
    path = tmp / f"spec-{batch_size}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _run(tmp: Path, *args: str | Path) -> subprocess.CompletedProcess:
    """The worker runs the pipelines (spec, results root) one after the other in one process."""
    env = {**os.environ, "WORKBENCH_PROGRESS": "0", "OMP_NUM_THREADS": "1", "WORKBENCH_CACHE": str(tmp / "cache"),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, str(WORKER), "pipeline", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=900)


def _stage(results: Path, name: str) -> dict:
    return next(s for s in json.loads((results / "p" / "metrics.json").read_text())["stages"] if s["stage"] == name)


def _same_student(tmp: Path, run_a: str, run_b: str) -> None:
    """Bit-identical weights, validation history, per-step loss terms and test metrics."""
    wa = load_file(str(tmp / run_a / "p/artifacts/student/model/model.safetensors"))
    wb = load_file(str(tmp / run_b / "p/artifacts/student/model/model.safetensors"))
    assert wa.keys() == wb.keys()
    diff = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not diff, f"{run_b}: weights differ from {run_a}: {diff[:5]}"
    a, b = _stage(tmp / run_a, "student"), _stage(tmp / run_b, "student")
    for key in ("accuracy", "macro_f1", "history"):
        assert a[key] == b[key], key
    assert (tmp / run_a / "p/history/student.csv").read_text() == (tmp / run_b / "p/history/student.csv").read_text()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume-pipeline")
    model, task = _model(tmp), _task(tmp)
    spec, changed = _spec(tmp, model, task), _spec(tmp, model, task, CHANGED_BATCH)
    clean = _run(tmp, spec, tmp / "clean", changed, tmp / "clean-changed")
    assert clean.returncode == 0, clean.stderr[-3000:]
    killed = _run(tmp, spec, tmp / "killed", f"student:{KILL_AT}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (tmp / "killed/p/artifacts/student").exists()
    shutil.copytree(tmp / "killed", tmp / "killed-changed")  # the killed state, re-run under the changed recipe
    again = _run(tmp, spec, tmp / "killed", changed, tmp / "killed-changed")
    assert again.returncode == 0, again.stderr[-3000:]
    first = again.stdout.index("[workbench] stage 1/2")
    second = again.stdout.index("[workbench] stage 1/2", first + 1)  # where the changed recipe's run starts
    return tmp, again.stdout[:second], again.stdout[second:]


def test_killed_distillation_stage_resumes_bit_identical(runs):
    tmp, resumed_out, _ = runs
    last = KILL_AT // CHECKPOINT_EVERY * CHECKPOINT_EVERY
    assert f"student: resuming from the checkpoint at step {last} of {STEPS}" in resumed_out
    # the re-run took only the remaining steps, from the checkpoint: training again from scratch
    # with the same seeds would also end bit-exact, and must not pass
    a, b = _stage(tmp / "clean", "student"), _stage(tmp / "killed", "student")
    assert (a["resumed_from_step"], a["steps_run"]) == (0, STEPS)
    assert (b["resumed_from_step"], b["steps_run"]) == (last, STEPS - last)
    assert "reused_from" in _stage(tmp / "killed", "teacher")  # finished before the kill: read back from disk
    _same_student(tmp, "clean", "killed")


def test_a_changed_recipe_starts_the_killed_stage_over_and_says_why(runs):
    tmp, _, changed_out = runs
    assert "student: its checkpoint belongs to an earlier definition of the stage; starting the stage over" \
        in changed_out
    assert "resuming" not in changed_out
    s = _stage(tmp / "killed-changed", "student")
    assert s["resumed_from_step"] == 0 and s["steps_run"] == _stage(tmp / "clean-changed", "student")["steps_run"]
    assert "reused_from" in _stage(tmp / "killed-changed", "teacher")  # the unchanged teacher is kept
    # nothing of the discarded attempt (its checkpoint, the teacher logits it computed inside
    # its own batches) changes the result: the same as a fresh run of the changed recipe
    _same_student(tmp, "clean-changed", "killed-changed")
