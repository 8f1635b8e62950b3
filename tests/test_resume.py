"""A training run killed with SIGKILL resumes from its checkpoint and ends where an
uninterrupted run ends, bit for bit."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

WORKER = Path(__file__).with_name("resume_worker.py")


def run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "WORKBENCH_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(WORKER), *args], env=env, capture_output=True, text=True, timeout=300)


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    clean = run([str(tmp_path / "clean"), str(tmp_path / "clean.pt")])
    assert clean.returncode == 0, clean.stderr
    killed = run([str(tmp_path / "ckpt"), str(tmp_path / "resumed.pt"), "10"])  # 3 epochs x 5 steps, checkpoint every 4
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "resumed.pt").exists()
    saved = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)
    assert saved["step"] == 8 and saved["batch_in_epoch"] == 3  # mid-epoch, the last one before the kill
    resumed = run([str(tmp_path / "ckpt"), str(tmp_path / "resumed.pt")])
    assert resumed.returncode == 0, resumed.stderr
    assert "train: resuming from the checkpoint at step 8 of 15" in resumed.stdout  # and says so
    assert "resuming" not in clean.stdout
    a = torch.load(tmp_path / "clean.pt")
    b = torch.load(tmp_path / "resumed.pt")
    # the re-run took only the remaining steps, from the checkpoint (training again from scratch
    # with the same seed would also end bit-exact, and must not pass)
    assert int(a.pop("steps_run")) == 15 and int(b.pop("steps_run")) == 15 - 8
    assert a.keys() == b.keys()
    assert any(k.startswith("owned.") for k in a)  # the recipe-owned projection resumed too
    for k in a:
        assert torch.equal(a[k], b[k]), k
    w = b["bert.encoder.layer.0.intermediate.dense.weight"]
    assert float((w == 0).float().mean()) == 0.75  # pruning state survived the kill too
