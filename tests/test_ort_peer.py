"""The ONNX Runtime int8 peer is, per row, the best of its four variants timed side by side.

`ort-int8` used to choose one variant in its setup; on the 2-core Zen 4 machine the variants'
speeds lie within noise of each other, so the choice changed from bench to bench and so did every
ratio against the peer. Now every variant is timed in every turn and each batch's row is the one
with the best median there. Fake sessions stand in for ORT: each variant runs at its own speed,
and which is fastest differs between batch sizes."""
from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
import torch

from workbench.bench import ort_engines, worker
from workbench.bench.ort_engines import ORT_INT8_VARIANTS, OrtInt8

# seconds per call by (variant, batch): plain-pc is fastest at batch 1, opt-pt at batch 2
STEADY_S = {("plain-pt", 1): 0.006, ("plain-pc", 1): 0.002, ("opt-pt", 1): 0.004,
            ("plain-pt", 2): 0.008, ("plain-pc", 2): 0.009, ("opt-pt", 2): 0.003}


class _FakeSession:
    def __init__(self, variant: str) -> None:
        self.variant, self.calls = variant, 0

    def run(self, outputs, feed):
        self.calls += 1
        b = feed["input_ids"].shape[0]
        time.sleep(STEADY_S[self.variant, b])
        return [np.zeros((b, 2), dtype=np.float32)]


@pytest.fixture
def fake_ort(monkeypatch):
    made: dict[str, _FakeSession] = {}

    def onnx_int8(model, cache_dir, model_name, graph, per_channel):
        variant = next(v for v, args in ORT_INT8_VARIANTS.items() if args == (graph, per_channel))
        if variant == "opt-pc":
            raise ValueError("this ORT cannot quantize it")
        return variant, f"notes of {variant}"

    def session(path, threads):
        made[path] = _FakeSession(path)
        return made[path]

    monkeypatch.setattr(ort_engines, "onnx_int8", onnx_int8)
    monkeypatch.setattr(ort_engines, "ort_session", session)
    monkeypatch.setattr(worker, "QUIET_S", 0.001)
    monkeypatch.setattr(worker, "WARM_S", 0.0)   # one untimed call per turn: the tests count calls
    monkeypatch.setattr("workbench.bench.models.make_inputs",
                        lambda model, b, s: {"input_ids": torch.ones(b, s, dtype=torch.long)})
    return made


def test_ort_int8_sets_up_every_variant_that_runs(fake_ort):
    eng = OrtInt8()
    eng.shape = (1, 8)
    eng.setup(None, 1, None, "m")
    assert eng.variants == ("plain-pt", "plain-pc", "opt-pt")
    assert eng.variant_notes["opt-pt"] == "notes of opt-pt"
    assert eng.notes.startswith("failed: opt-pc (ValueError")
    eng.use("opt-pt")
    assert eng.sess is fake_ort["opt-pt"]


PREPARED = worker._Prepared


def _prepared(eng, batches):
    """A worker's prepared engine on fake inputs and reference logits (no model)."""
    prep = PREPARED.__new__(PREPARED)
    prep.base = {"model": "m", "engine": eng.name, "threads": 1, "seq_len": 8, "runs": 5}
    prep.batches, prep.eng, prep.error, prep.setup_s, prep._fail = list(batches), eng, None, 0.0, False
    prep.inputs = {b: {"input_ids": torch.ones(b, 8, dtype=torch.long)} for b in batches}
    prep.refs = {b: np.zeros((b, 2), dtype=np.float32) for b in batches}
    return prep


def test_each_row_is_the_variant_fastest_at_its_batch(fake_ort, monkeypatch, tmp_path):
    eng = OrtInt8()
    eng.shape = (1, 8)
    eng.setup(None, 1, None, "m")
    setup_calls = {v: s.calls for v, s in fake_ort.items()}
    monkeypatch.setattr(worker, "_Prepared", lambda spec: _prepared(eng, [1, 2]))
    turns = 5
    commands = ["warm 1 1", *["time 1"] * turns, "warm 2 1", *["time 2"] * turns, "done"]
    replies = io.StringIO()
    worker.serve({}, tmp_path / "rows.json", iter(commands), replies)
    rows = {r["batch"]: r for r in json.loads((tmp_path / "rows.json").read_text())}
    assert rows[1]["variant"] == "plain-pc" and rows[2]["variant"] == "opt-pt"
    assert rows[1]["latency_ms_median"] == pytest.approx(2.0, abs=1.5)
    assert rows[2]["latency_ms_median"] == pytest.approx(3.0, abs=1.5)
    assert rows[1]["runs"] == turns and all(r["status"] == "ok" for r in rows.values())
    assert rows[2]["notes"].startswith("best of 3 variants at batch 2: opt-pt, median ms plain-pt=")
    assert "failed: opt-pc" in rows[2]["notes"] and rows[2]["notes"].endswith("notes of opt-pt")
    # every variant: per batch one warm-up call, then an untimed and a timed call in every turn
    assert all(s.calls - setup_calls[v] == 2 * (1 + 2 * turns) for v, s in fake_ort.items())
    # the turn's reply is its fastest variant's time (only ERR replies matter to the parent)
    assert replies.getvalue().splitlines()[0] == "READY"


def test_turn_rotates_who_goes_first(fake_ort):
    eng = OrtInt8()
    eng.shape = (1, 8)
    eng.setup(None, 1, None, "m")
    prep = _prepared(eng, [1])
    feed = eng.feed(prep.inputs[1])
    assert list(prep.turn(feed, 0)) == ["plain-pt", "plain-pc", "opt-pt"]
    assert list(prep.turn(feed, 1)) == ["plain-pc", "opt-pt", "plain-pt"]


def test_sequential_bench_times_every_variant(fake_ort, monkeypatch):
    eng = OrtInt8()
    eng.shape = (1, 8)
    eng.setup(None, 1, None, "m")
    monkeypatch.setattr(worker, "_Prepared", lambda spec: _prepared(eng, [1, 2]))
    rows = worker.run_spec({"runs": 3, "warmup": 1})
    assert [r["variant"] for r in rows] == ["plain-pc", "opt-pt"]
    assert all(r["runs"] == 3 for r in rows)


def test_bench_readme_names_each_rows_variant(tmp_path):
    """The README table names the variant of every ort-int8 row, and its setup notes list each
    row's (a variant per row: one line per distinct note, saying which rows it is for)."""
    from workbench.bench.report import add_ratios, write_markdown

    def row(engine, batch, sps, variant="", notes=""):
        return {"model": "m", "engine": engine, "threads": 2, "batch": batch, "seq_len": 8, "status": "ok",
                "samples_per_s": sps, "runs": 5, "max_abs_err_vs_torch_fp32": 0.01, "variant": variant,
                "notes": notes}

    rows = [row("ort-int8", 1, 10.0, "plain-pt", "best of 4 variants at batch 1: plain-pt"),
            row("ort-int8", 8, 20.0, "opt-pc", "best of 4 variants at batch 8: opt-pc"),
            row("wb-int8", 1, 12.0), row("wb-int8", 8, 30.0)]
    add_ratios(rows, "ort-int8")
    write_markdown(rows, tmp_path / "README.md", ["ort-int8", "wb-int8"], "ort-int8", "workbench bench")
    text = (tmp_path / "README.md").read_text()
    assert "| ort-int8 | 10.0 (1.00x) `plain-pt` | 20.0 (1.00x) `opt-pc` |" in text
    assert "- `ort-int8` (t=2 b=1): best of 4 variants at batch 1: plain-pt" in text
    assert "- `ort-int8` (t=2 b=8): best of 4 variants at batch 8: opt-pc" in text
