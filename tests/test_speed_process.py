"""Stage speed is measured the same way for every stage: in a fresh worker process per stage
(`workbench.pipeline.speed`), with threads, kernel ISA and load average recorded beside it.
(The rest of the suite measures in-process: conftest sets WORKBENCH_SPEED_PROCESS=same.)"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from workbench.results import read_csv

from test_platform import _spec, _tiny_dir


def test_every_stage_is_timed_in_a_fresh_process_with_its_context(tmp_path, monkeypatch, capsys):
    from workbench.pipeline import PipelineRun, speed
    from workbench.runtime.kernels import active_isa

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WORKBENCH_SPEED_PROCESS", "fresh")

    def not_here(*args, **kwargs):
        raise AssertionError("speed measured in the pipeline's process")

    monkeypatch.setattr(speed, "measure_here", not_here)  # only a worker process can produce the numbers
    spec = _spec(tmp_path, [{"name": "t", "recipes": ["finetune"], "train": {"epochs": 1, "batch_size": 16, "max_steps": 2}},
                            {"name": "int8", "recipes": ["dynamic_int8"]},
                            {"name": "runtime", "from": "t", "recipes": ["workbench_runtime"]}], str(_tiny_dir(tmp_path, "tiny")))
    metrics = PipelineRun(spec, results_root=tmp_path / "r").run()
    assert "measured in the pipeline's process" not in capsys.readouterr().out
    assert [m["engine"] for m in metrics] == ["torch-fp32", "torch-int8", "workbench-int8"]
    for m in metrics:
        assert m["speed_process"] == "fresh", m.get("speed_note")
        assert m["threads"] == torch.get_num_threads() and m["isa"] == active_isa()
        assert isinstance(m["load_avg"], float) and m["load_avg"] >= 0
        assert m["throughput_b1"] > 0 and m["latency_ms_b1"] > 0
    row = read_csv(tmp_path / "r/p/stages.csv")[0]
    assert row["isa"] == active_isa() and row["speed_process"] == "fresh" and row["load_avg"] and row["threads"]


def test_a_model_that_cannot_go_to_a_worker_is_timed_here_and_says_why(monkeypatch, capsys):
    from workbench.pipeline.speed import stage_speed

    monkeypatch.setenv("WORKBENCH_SPEED_PROCESS", "fresh")

    class Local(nn.Module):  # neither a Hugging Face model nor a runtime model
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(50, 8)

        def forward(self, input_ids, attention_mask=None):
            return type("Out", (), {"logits": self.emb(input_ids).mean(1)})()

    s = stage_speed(Local(), 50, 8, [1, 2], iters=1, warmup=0)
    assert s["speed_process"] == "same" and "could not be written for a worker" in s["speed_note"]
    assert s["throughput_b1"] > 0 and s["throughput_b2"] > 0 and s["isa"] and s["threads"] >= 1
    assert "speed measured in the pipeline's process" in capsys.readouterr().out


@pytest.mark.parametrize("mode", ["same", "fresh"])
def test_the_worker_and_the_pipeline_report_the_same_fields(tiny_bert, monkeypatch, mode):
    from workbench.pipeline.speed import stage_speed

    monkeypatch.setenv("WORKBENCH_SPEED_PROCESS", mode)
    s = stage_speed(tiny_bert, 120, 16, [1], iters=2, warmup=1)
    assert set(s) >= {"latency_ms_b1", "throughput_b1", "threads", "isa", "load_avg", "speed_process"}
    assert s["speed_process"] == mode and "speed_note" not in s
