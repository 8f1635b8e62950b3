"""`workbench bench --quick` on a tiny model: the table, chart and README are written.

Behaviour only (files, columns, a recorded failure); never speed.
"""
from __future__ import annotations

import argparse
import csv

import pytest

from conftest import tiny_spec, write_tiny_task
from workbench.bench import cli
from workbench.bench.report import COLUMNS


def _args(argv):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_quick_bench_writes_csv_png_readme(tmp_path):
    out = tmp_path / "bench"
    rc = cli.run(_args(["--quick", "--models", "tiny-distilbert", "--engines", "torch-fp32,wb-int8,wb-int8-tile90",
                        "--threads", "1", "--batch", "1", "--out", str(out), "--no-gemm"]))
    assert rc == 0
    with open(out / "engines.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        assert reader.fieldnames == COLUMNS
    assert {r["engine"] for r in rows} == {"torch-fp32", "wb-int8", "wb-int8-tile90"}
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert (r["model"], r["threads"], r["batch"], r["runs"]) == ("tiny-distilbert", "1", "1", "1")
        assert float(r["samples_per_s"]) > 0
        assert float(r["samples_per_s_min"]) <= float(r["samples_per_s"]) <= float(r["samples_per_s_max"])
        assert float(r["argmax_agree_vs_torch_fp32"]) == 1.0
    wb = next(r for r in rows if r["engine"] == "wb-int8")
    assert "DenseInt8Linear" in wb["notes"]
    assert float(wb["max_abs_err_vs_torch_fp32"]) < 0.05
    assert (out / "engines.png").stat().st_size > 1000
    readme = (out / "README.md").read_text()
    assert "| engine |" in readme and "wb-int8" in readme and "block=(16, 64)" in readme
    assert not list(out.glob("*.tmp*"))  # atomic writes leave no temporaries


@pytest.mark.parametrize("mode", ["interleaved", "sequential"])
def test_interleaved_and_sequential_runs_give_the_same_table(tmp_path, mode):
    """Interleaved (default): engines take turns, one timed run each; --sequential: back to back.
    Same rows either way: every engine, every batch, the runs asked for."""
    out = tmp_path / mode
    argv = ["--models", "tiny-distilbert", "--engines", "torch-fp32,wb-int8", "--threads", "1", "--batch", "1,2",
            "--seq-len", "16", "--runs", "3", "--warmup", "1", "--out", str(out), "--no-gemm"]
    assert cli.run(_args(argv + (["--sequential"] if mode == "sequential" else []))) == 0
    rows = list(csv.DictReader(open(out / "engines.csv", newline="")))
    assert sorted((r["engine"], r["batch"], r["runs"], r["status"]) for r in rows) == [
        ("torch-fp32", "1", "3", "ok"), ("torch-fp32", "2", "3", "ok"), ("wb-int8", "1", "3", "ok"), ("wb-int8", "2", "3", "ok")]
    assert all(float(r["argmax_agree_vs_torch_fp32"]) == 1.0 for r in rows)
    for r in rows:  # every timed run is kept, and the spread is computed from them
        runs = [float(v) for v in r["latency_ms_runs"].split(";")]
        assert len(runs) == 3 and min(runs) == pytest.approx(float(r["latency_ms_min"]), abs=1e-3)
        assert float(r["spread_pct"]) == pytest.approx(100 * (max(runs) - min(runs)) / sorted(runs)[1], abs=0.06)
    assert "## Run-to-run spread" in (out / "README.md").read_text()
    from workbench.bench.placement import FIELD, cpu_pair
    for r in rows:  # interleaved: the CPUs' cache-line round trip before each of the 3 rounds
        trips = [float(v) for v in r[FIELD].split(";")] if r[FIELD] else []
        assert len(trips) == (3 if mode == "interleaved" and cpu_pair() else 0) and all(t > 0 for t in trips)


def _row(engine, runs_ms, batch=1):
    return {"model": "m", "engine": engine, "threads": 2, "batch": batch, "seq_len": 8, "status": "ok",
            "latency_ms_runs": ";".join(str(t) for t in runs_ms)}


@pytest.mark.parametrize("interleaved", [True, False])
def test_spread_and_per_round_ratios(interleaved):
    """Spread = (max - min) / median of the runs; the per-round ratio pairs run r of an engine with
    run r of the baseline (interleaved only); the README names engines more spread than the baseline."""
    from workbench.bench.spread import add_spread, spread_section

    rows = [_row("ort-int8", [20.0, 40.0, 20.0]),            # round 2 slow for everyone: spread 100 %
            _row("wb-int8", [10.0, 20.0, 10.0]),             # same slowdown: ratio steady at 2x
            _row("wb-int8-sp90", [5.0, 5.0, 15.0])]          # its own outlier: spread 200 %
    add_spread(rows, "ort-int8", interleaved)
    ort, wb, sp = rows
    assert (ort["spread_pct"], wb["spread_pct"], sp["spread_pct"]) == (100.0, 100.0, 200.0)
    if interleaved:
        assert (wb["vs_ort_int8_round_min"], wb["vs_ort_int8_round_max"]) == (2.0, 2.0)
        assert (sp["vs_ort_int8_round_min"], sp["vs_ort_int8_round_max"]) == (1.333, 8.0)
    else:
        assert wb["vs_ort_int8_round_min"] == sp["vs_ort_int8_round_max"] == ""
    text = "\n".join(spread_section(rows, ["ort-int8", "wb-int8", "wb-int8-sp90"], "ort-int8", interleaved))
    assert "m wb-int8-sp90 t=2 b=1 (200% vs 100%; 10.0 ms vs 20.0 ms)" in text and "m wb-int8 t=2" not in text
    assert (sp["spread_ms"], ort["spread_ms"]) == (10.0, 20.0)
    assert "wider in ms as well: none." in text  # its 10 ms range is half the baseline's 20 ms
    assert ("(2.00-2.00x)" in text) == interleaved


def test_interleaved_worker_reports_a_failing_engine(tmp_path, monkeypatch):
    """An engine whose run raises: its rows fail with the error, the other engine's rows are fine."""
    from workbench.bench.worker import FAIL_ENV

    out = tmp_path / "bench"
    monkeypatch.setenv(FAIL_ENV, "wb-int8")  # the engine processes inherit it
    rc = cli.run(_args(["--quick", "--models", "tiny-distilbert", "--engines", "torch-fp32,wb-int8",
                        "--threads", "1", "--batch", "1", "--out", str(out), "--no-gemm", "--timeout", "600"]))
    assert rc == 0
    rows = {r["engine"]: r for r in csv.DictReader(open(out / "engines.csv", newline=""))}
    assert rows["torch-fp32"]["status"] == "ok"
    assert rows["wb-int8"]["status"] == "failed" and "injected failure" in rows["wb-int8"]["error"]


def test_failing_engine_is_recorded_not_fatal(tmp_path, monkeypatch):
    # a timeout stands in for any engine process that dies: the row says why, the run goes on
    out = tmp_path / "bench"
    rc = cli.run(_args(["--quick", "--models", "tiny-distilbert", "--engines", "torch-fp32",
                        "--threads", "1", "--batch", "1", "--out", str(out), "--no-gemm",
                        "--timeout", "0.01"]))
    assert rc == 1  # nothing succeeded
    rows = list(csv.DictReader(open(out / "engines.csv", newline="")))
    assert rows and rows[0]["status"] == "failed" and "timed out" in rows[0]["error"]
    assert "Failures" in (out / "README.md").read_text()


def test_bad_filters_are_rejected():
    with pytest.raises(SystemExit):
        _args(["--engines", "torch-fp32,nope"])
    with pytest.raises(SystemExit):
        _args(["--threads", "0"])


def test_contend_is_checked_before_work(tmp_path, capsys):
    out = tmp_path / "never"
    for n in ("-1", "999"):
        assert cli.run(_args(["--quick", "--contend", n, "--out", str(out), "--no-gemm"])) == 2
        assert "--contend must be between 0 and" in capsys.readouterr().err
    assert not out.exists()


def test_busy_processes_run_for_the_block_and_die_after_it():
    from workbench.bench.contention import busy_processes

    with pytest.raises(RuntimeError):
        with busy_processes(2) as procs:
            assert len(procs) == 2 and all(p.poll() is None for p in procs)
            raise RuntimeError("the timing failed")
    assert all(p.poll() is not None for p in procs)  # killed on the way out of a failed block


def test_contended_bench_says_so(tmp_path):
    out = tmp_path / "bench"
    rc = cli.run(_args(["--quick", "--models", "tiny-distilbert", "--engines", "wb-int8", "--threads", "1",
                        "--contend", "1", "--out", str(out), "--no-gemm"]))
    assert rc == 0
    readme = (out / "README.md").read_text()
    assert "Contended (`--contend 1`)" in readme and "GOMP_SPINCOUNT=" in readme
    assert "WORKBENCH_POOL_SPIN_US=" in readme and "WORKBENCH_POOL_APART=1" in readme   # the kernels' pool policy


# ------------------------------------------------------------------ saved stages of a run
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny finished --seeds-style run: a fine-tuned teacher and a structurally pruned stage
    (uneven heads and FFN widths), under multi/seed-0 (seed-1 alongside, never benched)."""
    import os

    from workbench.pipeline import PipelineRun, PipelineSpec

    tmp = tmp_path_factory.mktemp("run")
    old_cache = os.environ.get("WORKBENCH_CACHE")
    os.environ["WORKBENCH_CACHE"] = str(tmp / "cache")
    csv_path, folder = write_tiny_task(tmp, repeats=30)
    spec = PipelineSpec.from_dict(tiny_spec(csv_path, folder, [
        {"name": "teacher", "recipes": ["finetune"], "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3}},
        {"name": "magnitude-50", "from": "teacher",
         "recipes": [{"structured_prune": {"heads": 0.5, "neurons": 0.6, "max_heads_removed": 3}}]},
        {"name": "int8", "recipes": ["dynamic_int8"]},  # not saved: never benched
    ], name="seed-0"))
    try:
        PipelineRun(spec, quick=True, results_root=tmp / "multi").run()
    finally:
        if old_cache is None:
            os.environ.pop("WORKBENCH_CACHE", None)
        else:
            os.environ["WORKBENCH_CACHE"] = old_cache
    (tmp / "multi" / "seed-1").mkdir()
    return tmp / "multi"


def test_models_take_saved_stage_folders(finished_run, tmp_path, capsys):
    stage = finished_run / "seed-0" / "artifacts" / "magnitude-50" / "model"
    models = _args(["--models", f"tiny-distilbert,{stage},mine={stage}"]).models
    assert [m.label for m in models] == ["tiny-distilbert", "stage:magnitude-50", "mine"]
    assert models[0].path is None and models[1].path == models[2].path == str(stage.resolve())
    (tmp_path / "badjson").mkdir()
    (tmp_path / "badjson" / "config.json").write_text("{not json")
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text((stage / "config.json").read_text())
    for bad, says in ((tmp_path / "nope" / "model", "does not exist"), (tmp_path, "no config.json"),
                      ("nosuchmodel", "unknown model"),
                      (tmp_path / "badjson", "cannot be read as a Hugging Face model configuration"),
                      (tmp_path / "noweights", "holds no weights")):
        with pytest.raises(SystemExit):
            _args(["--models", f"tiny-distilbert,{bad}"])
        err = capsys.readouterr().err
        assert str(bad) in err and says in err, err
    with pytest.raises(SystemExit):
        _args(["--models", f"{stage},{stage}"])
    assert "two models labelled stage:magnitude-50" in capsys.readouterr().err


def test_bench_run_writes_speed_csv_for_seed_0(finished_run):
    from workbench.bench.runs import SPEED_COLUMNS

    from workbench.bench.runs import stage_models

    # every saved stage, in run order; the int8 stage is rebuilt by the pipeline, never saved
    assert list(stage_models(finished_run / "seed-0")) == ["teacher", "magnitude-50"]
    rc = cli.run(_args(["--run", str(finished_run), "--engines", "torch-fp32,wb-int8",
                        "--stages", "magnitude-50", "--baseline", "teacher", "--threads", "1", "--batch", "1,8", "--runs", "5",
                        "--warmup", "1", "--seq-len", "16"]))
    assert rc == 0
    with open(finished_run / "speed.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        assert reader.fieldnames == SPEED_COLUMNS
    assert not list(finished_run.glob("*.tmp*"))
    got = {(r["stage"], r["engine"], r["batch"]) for r in rows}
    # the baseline, not asked for, only on torch-fp32 (its speed is the ratios' denominator)
    assert got == {("magnitude-50", e, b) for e in ("torch-fp32", "wb-int8") for b in ("1", "8")} | {
        ("teacher", "torch-fp32", b) for b in ("1", "8")}
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert (r["threads"], r["seq_len"], r["runs"], r["seed"], r["baseline"]) == ("1", "16", "5", "0", "teacher")
        assert float(r["samples_per_s"]) > 0 and r["isa"] and float(r["load_avg_1m"]) >= 0
        assert r["model_path"].endswith(f"seed-0/artifacts/{r['stage']}/model")
        assert float(r["vs_baseline_torch_fp32"]) > 0
        # right logits on every engine, the shrunk stage included
        assert float(r["max_abs_err_vs_torch_fp32"]) < 0.05 and float(r["argmax_agree_vs_torch_fp32"]) == 1.0
        if (r["stage"], r["engine"]) == ("teacher", "torch-fp32"):
            assert float(r["vs_baseline_torch_fp32"]) == 1.0


@pytest.mark.parametrize("sequential", [False, True])
def test_bench_run_engines_of_a_stage_take_turns(finished_run, tmp_path, monkeypatch, sequential):
    """`--run` times the engines of one stage and thread count in turns (one interleaved group
    per stage), unless --sequential; both give a row per engine and batch."""
    from workbench.bench import interleave

    groups = []
    real = interleave.run_group

    def spy(specs, *args, **kwargs):
        groups.append([(s["model"], s["engine"]) for s in specs])
        return real(specs, *args, **kwargs)

    monkeypatch.setattr(interleave, "run_group", spy)
    stages = ("magnitude-50",) if sequential else ("magnitude-50", "teacher")  # (an engine process each: ~7 s)
    argv = ["--run", str(finished_run), "--engines", "torch-fp32,wb-int8", "--stages", ",".join(stages),
            "--threads", "1", "--batch", "1", "--runs", "1", "--warmup", "0",
            "--out", str(tmp_path)] + (["--sequential"] if sequential else ["--seq-len", "8"])
    assert cli.run(_args(argv)) == 0
    assert groups == ([] if sequential else [[("magnitude-50", "torch-fp32"), ("magnitude-50", "wb-int8")],
                                             [("teacher", "torch-fp32"), ("teacher", "wb-int8")]])
    with open(tmp_path / "speed.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["stage"], r["engine"], r["status"]) for r in rows] == [
        (s, e, "ok") for s in stages for e in ("torch-fp32", "wb-int8")]
    # without --seq-len, the length the run timed its stages at (its eval.seq_len, 16), not 128
    assert {r["seq_len"] for r in rows} == {"16" if sequential else "8"}


def test_bench_run_bad_input_fails_before_work(finished_run, tmp_path, capsys):
    base = ["--threads", "1", "--batch", "1", "--runs", "1", "--out", str(tmp_path)]
    for argv, says in (
            (["--run", str(tmp_path / "nope")], "nope"),
            (["--run", str(finished_run), "--stages", "teacher,int8,kwon"], "no saved model for stage(s) int8, kwon"),
            (["--run", str(finished_run), "--seed", "3"], "no seed-3/"),
            (["--run", str(finished_run), "--baseline", "nope"], "--baseline 'nope'"),
            (["--run", str(finished_run), "--baseline", "teacher", "--engines", "wb-int8"], "add torch-fp32"),
            (["--run", str(finished_run), "--models", "tiny-distilbert"], "exclude each other"),
            (["--stages", "teacher"], "go with --run"),
            # the run's model has 64 positions: 128 tokens failed in every engine's process
            (["--run", str(finished_run), "--seq-len", "128"],
             "--seq-len 128 is longer than model 'teacher' holds (64 tokens"),
            (["--models", f"t={finished_run / 'seed-0' / 'artifacts' / 'teacher' / 'model'}", "--no-gemm"],
             "--seq-len 128 is longer than model 't' holds (64 tokens")):
        assert cli.run(_args(argv + base)) == 2
        err = capsys.readouterr().err
        assert says in err, (argv, err)
    assert not (tmp_path / "speed.csv").exists()


def test_ort_runs_shrunk_models_right(tmp_path):
    """ONNX Runtime and torch int8 on a structurally shrunk model (uneven heads, a layer without
    attention, a layer without FFN): per-layer head counts on the fused Attention nodes,
    zero-width MatMuls / Linears kept out of int8 -- the logits match torch fp32."""
    import numpy as np
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from workbench.bench.engines import ENGINES, ORT_INT8_VARIANTS, OrtFp32, OrtInt8, TorchInt8X86
    from workbench.bench.models import make_inputs
    from workbench.prune.structure import shrink

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, initializer_range=0.2)).eval()
    hm, nm = torch.ones(3, 4), torch.ones(3, 64)
    hm[0], hm[1, 1:], nm[1], nm[2, 9:] = 0, 0, 0, 0  # layer 0: no attention; 1: one head, no FFN; 2: 9 neurons
    shrink(model, hm, nm)
    inputs = make_inputs(model, 2, 12)
    with torch.no_grad():
        ref = model(**inputs).logits.numpy()
    # a wrong graph errs by about the logits themselves, int8 by a few per cent (on AVX2-only
    # CPUs only with 7-bit weights: ORT's vpmaddubsw kernel saturates with 8-bit ones, up to 33 %)
    int8_tol = 0.05 * np.abs(ref).max()
    notes = {}
    for cls, tol in ((TorchInt8X86, int8_tol), (OrtFp32, 1e-4), (OrtInt8, int8_tol), (ENGINES["ort-int8-opt-pt"], int8_tol)):
        eng = cls()
        eng.shape = (2, 12)  # as the worker does: the bench shape
        eng.setup(model, 1, tmp_path, "stage:shrunk")
        for variant in eng.variants or ("",):  # ORT int8: every variant the bench may report
            if variant:
                eng.use(variant)
            out = eng.run(eng.feed(inputs))
            assert np.abs(out - ref).max() < tol, (cls.name, variant, np.abs(out - ref).max(), eng.notes)
            notes[cls.name + (f" {variant}" if variant else "")] = eng.variant_notes.get(variant, eng.notes)
    assert len(notes) == 3 + len(ORT_INT8_VARIANTS), notes  # every ORT int8 variant ran here
    # every variant leaves the zero-width MatMuls fp32; the ORT-optimized graph also gets its
    # pruned Attention nodes' head counts per layer
    assert all("zero-width MatMuls left fp32" in n for k, n in notes.items() if k.startswith("ort-int8 "))
    assert "num_heads set per layer" in notes["ort-int8-opt-pt"]


def test_gemm_cells_take_turns_across_kernels_and_thread_counts(monkeypatch):
    """The GEMM microbenchmark times its cells (kernel x thread count) in rounds, one timed call
    per cell per round in a rotated order, so a slower minute of a shared machine lands on all of
    them alike; before each timed call, `prepare` and one untimed call of the same cell (threads
    awake, as back to back), none for a capped cell, which stops at its cap; vs_dense is the
    median of same-round time ratios against the dense cell of its thread count."""
    from workbench.bench import gemm, gemm_turns

    log: list[str] = []
    clock = iter(range(10_000))

    def tick() -> float:
        log.append("|")   # the clock read on each side of a timed call
        return float(next(clock))
    monkeypatch.setattr(gemm_turns.time, "perf_counter", tick)

    def cell(name, threads, max_runs=None, steps=1):
        def call():
            log.append(f"{name}@{threads}")
            for _ in range(steps - 1):  # a slower kernel: the fake clock advances more
                next(clock)
        return gemm._Cell(name, "isa", threads, call, 1.0, "", max_runs=max_runs,
                          prepare=lambda: log.append(f"prep {name}@{threads}"))

    cells = [cell("wb-int8-dense", 1, steps=4), cell("wb-int8-sparse90", 1), cell("wb-int8-dense", 2, steps=2),
             cell("torch-int8", 2, max_runs=1)]
    gemm._time_in_turns(cells, repeats=3, warmup=1)
    first_clock = log.index("|")
    assert log[:first_clock] == ["wb-int8-dense@1", "wb-int8-sparse90@1", "wb-int8-dense@2",   # warm-up, not
                                 "prep wb-int8-dense@1", "wb-int8-dense@1"]                    # the capped cell
    def is_timed(i: int) -> bool:
        return log[i - 1] == "|" and log[i + 1] == "|" and not log[i].startswith("prep")
    timed = [log[i] for i in range(1, len(log) - 1) if is_timed(i)]
    assert timed == ["wb-int8-dense@1", "wb-int8-sparse90@1", "wb-int8-dense@2", "torch-int8@2",   # round 0
                     "wb-int8-sparse90@1", "wb-int8-dense@2", "wb-int8-dense@1",                   # round 1
                     "wb-int8-dense@2", "wb-int8-dense@1", "wb-int8-sparse90@1"], timed           # round 2
    for i in range(1, len(log) - 1):
        if is_timed(i):   # after prepare (+ one untimed call)
            before = log[i - 3:i - 1] if log[i] != "torch-int8@2" else log[i - 2:i - 1]
            want = ["prep " + log[i], log[i]] if log[i] != "torch-int8@2" else ["prep " + log[i]]
            assert before == want, (i, log[i - 3:i + 1])
    assert [len(c.times) for c in cells] == [3, 3, 3, 1]
    assert cells[0].times == [4.0] * 3 and cells[1].times == [1.0] * 3
    assert gemm._vs_dense(cells[1], cells[0]) == 4.0 and gemm._vs_dense(cells[0], cells[0]) == 1.0
    rows = [gemm._row(c, 8, 64, 32, 3.0, gemm._vs_dense(c, cells[0])) for c in cells[:2]]
    assert [r["vs_dense"] for r in rows] == [1.0, 4.0] and set(gemm.FIELDS) == set(rows[0])


def test_gemm_peak_ignores_implausible_clock(monkeypatch):
    """The peak TOP/s estimate must not use an impossible measured clock (an add chain read
    8.5 GHz on Zen 5): the nominal clock is used instead."""
    cpu = pytest.importorskip("workbench_ext.cpu")
    from workbench.bench import peak
    monkeypatch.setattr(cpu, "measure_clock_ghz", lambda *a, **k: 8.5)
    monkeypatch.setattr(peak, "nominal_clock_ghz", lambda: (2.6, "test"))
    ghz, note = peak.cpu_clock_ghz()
    assert ghz == 2.6
    monkeypatch.setattr(cpu, "measure_clock_ghz", lambda *a, **k: 3.9)
    assert peak.cpu_clock_ghz()[0] == 3.9


@pytest.mark.parametrize("per_ns, ops", [(3.5, 128.0), (7.3, 256.0), (0.0, 256.0)])
def test_gemm_peak_uses_the_measured_issue_rate(monkeypatch, per_ns, ops):
    """Zen 4 issues one zmm vpdpbusd per cycle (peak 128 int8 ops/cycle), Intel server cores
    two (256): the peak follows the rate measured at the measured clock (rounded to a power of
    two); with no measurement the theoretical table is used and the note says so."""
    cpu = pytest.importorskip("workbench_ext.cpu")
    from workbench.bench import peak
    monkeypatch.setattr(cpu, "measure_clock_ghz", lambda *a, **k: 3.6)
    monkeypatch.setattr(cpu, "measure_issue_rate", lambda isa, kind="int8", **k: (per_ns, "vpdpbusd zmm", 64))
    peak.per_cycle_peak.cache_clear()
    try:
        got, how = peak.per_cycle_peak("avx512_vnni")
    finally:
        peak.per_cycle_peak.cache_clear()
    assert got == ops and ("measured" in how) == (per_ns > 0)
    monkeypatch.undo()
    real = cpu.measure_issue_rate(cpu.available_isas()[-1])  # the portable pmaddwd: every x86-64
    assert real[0] > 0 and real[2] == 8


def test_engine_processes_get_the_openmp_waiting_policy_unless_exported(monkeypatch):
    """The measurement processes spin briefly, then sleep (torch shares the OpenMP runtime and
    starts it before workbench_ext could set anything, so it must be in their environment)."""
    from workbench.bench.processes import child_env
    from workbench_ext import OPENMP_DEFAULTS

    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    env = child_env(2)
    assert env["GOMP_SPINCOUNT"] == OPENMP_DEFAULTS["GOMP_SPINCOUNT"] and env["OMP_NUM_THREADS"] == "2"
    monkeypatch.setenv("GOMP_SPINCOUNT", "0")
    assert child_env(1)["GOMP_SPINCOUNT"] == "0"


def test_tile_engines_prune_whole_amx_tiles(tiny_bert):
    """`wb-int8-tileNN` prunes the encoder Linears in 16x64 blocks (one AMX weight tile each):
    NN % of those blocks are zero; the 1x4 engines leave almost no tile empty."""
    import copy

    import numpy as np
    import torch

    from workbench.bench.engines import ENGINES
    from workbench.bench.models import prune
    from workbench.runtime.kernels import tile_sparsity

    eng = ENGINES["wb-int8-tile90"]
    assert (eng.sparsity, eng.block) == (0.9, (16, 64)) and ENGINES["wb-int8-sp90"].block == (1, 4)
    tiled = prune(copy.deepcopy(tiny_bert), eng.sparsity, eng.block)
    fine = prune(copy.deepcopy(tiny_bert), 0.9, (1, 4))
    lin = lambda m: [mod.weight.detach().numpy() for mod in m.bert.encoder.modules()  # noqa: E731
                     if isinstance(mod, torch.nn.Linear)]
    assert all(abs(tile_sparsity(w) - 0.9) < 0.13 for w in lin(tiled)), [tile_sparsity(w) for w in lin(tiled)]
    assert all(tile_sparsity(w) < 0.2 for w in lin(fine))
    assert np.mean([tile_sparsity(w) for w in lin(tiled)]) > 0.85


def test_default_engines_add_the_tile_bf16_attention_and_per_channel_engines_only_where_they_run(monkeypatch):
    from workbench.bench import engines
    from workbench.runtime import kernels

    monkeypatch.setattr(kernels, "has_tile_sparse", lambda: False)
    monkeypatch.setattr(kernels, "attention_bf16_path", lambda: None)
    monkeypatch.setattr(kernels, "attention_int8_runs", lambda: False)
    monkeypatch.setattr(kernels, "active_isa", lambda: "avx2")   # weights pair-bounded by default
    assert engines.default_engines() == engines.DEFAULT_ENGINES + ("wb-int8-pc", "wb-int8-sp90-pc")
    assert engines.ENGINES["wb-int8-sp90-pc"].int8_weights == "per_channel"
    assert engines.ENGINES["wb-int8-sp90-pc"].sparsity == 0.9
    monkeypatch.setattr(kernels, "active_isa", lambda: "avx512_vnni")
    assert engines.default_engines() == engines.DEFAULT_ENGINES
    monkeypatch.setattr(kernels, "has_tile_sparse", lambda: True)
    assert engines.default_engines() == engines.DEFAULT_ENGINES + ("wb-int8-tile90",)
    monkeypatch.setattr(kernels, "active_isa", lambda: "amx")
    assert engines.default_engines() == engines.DEFAULT_ENGINES + ("wb-int8-tile90", "wb-int8-onednn")
    assert engines.ENGINES["wb-int8-onednn"].kernel_choice == "library"
    monkeypatch.setattr(kernels, "attention_bf16_path", lambda: "avx512_bf16")
    assert engines.default_engines() == engines.DEFAULT_ENGINES + (
        "wb-int8-tile90", "wb-int8-onednn", "wb-int8-bf16attn", "wb-int8-sp90-bf16attn")
    assert engines.ENGINES["wb-int8-sp90-bf16attn"].sparsity == 0.9
    assert engines.ENGINES["wb-int8-sp90-bf16attn"].attention == "bf16"
    monkeypatch.setattr(kernels, "attention_int8_runs", lambda: True)
    assert engines.default_engines()[-2:] == ("wb-int8-i8attn", "wb-int8-sp90-i8attn")
    assert engines.ENGINES["wb-int8-sp90-i8attn"].sparsity == 0.9
    assert engines.ENGINES["wb-int8-sp90-i8attn"].attention == "int8"


def test_a_crashed_engine_process_says_where_it_died(tmp_path):
    """A kernel crash (SIGSEGV) in an engine's process: the failure row names the signal and the
    innermost Python frames faulthandler left in its log, not just 'code -11'."""
    import subprocess
    import sys

    from workbench.bench.processes import exit_reason

    log = tmp_path / "engine.log"
    crash = ("import faulthandler, ctypes\n"
             "faulthandler.enable()\n"
             "def run_kernel():\n"
             "    ctypes.string_at(0)\n"
             "run_kernel()\n")
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-c", crash], stderr=f, timeout=60)
    msg = exit_reason(proc.returncode, log)
    assert "code -11 (SIGSEGV)" in msg and "Segmentation fault" in msg, msg
    assert "in string_at <" in msg and "in run_kernel" in msg, msg
    (tmp_path / "quiet.log").write_text("loading\nValueError: bad shape\n")
    assert exit_reason(1, tmp_path / "quiet.log") == "engine process exited with code 1: ValueError: bad shape"
    assert exit_reason(2, tmp_path / "missing.log") == "engine process exited with code 2"


class _CountingPool:
    """Stands in for workbench_ext.pool: every stats() call after the first finds `caller` more
    chunks run by the caller and `workers` more by the workers."""

    def __init__(self, caller, workers):
        self.step, self.n = (caller, workers), 0

    def stats(self):
        c, w = (self.n * x for x in self.step)
        self.n += 1
        return {"chunks_by_caller": c, "chunks_by_workers": w}


@pytest.mark.parametrize("caller,workers,share", [(3, 1, 0.25), (2, 2, 0.5), (4, 0, 0.0), (0, 0, None)])
def test_workbench_engine_reports_the_workers_share_of_its_last_run(caller, workers, share):
    from workbench.bench.engines import Workbench

    eng = Workbench()
    assert eng.worker_share() is None                 # before any run
    eng.engine = lambda ids, mask: "logits"
    eng._pool = _CountingPool(caller, workers)
    assert eng.run(("ids", "mask")) == "logits"
    assert eng.worker_share() == share                # no parallel chunks: None, not 0
    eng._pool = None                                  # no compiled kernels: nothing to report
    assert eng.run(("ids", "mask")) == "logits"


def test_rows_carry_each_timed_runs_worker_share(tmp_path, monkeypatch):
    """Interleaved and sequential: `worker_share_runs` lists the share of every timed run in run
    order (the untimed calls' shares are not reported); engines without one leave it out."""
    import io
    import json

    import numpy as np
    import torch

    from workbench.bench import worker
    from workbench.bench.bench_engine import BenchEngine
    from workbench.bench.spread import SHARES_FIELD

    class Fake(BenchEngine):
        name = "fake"

        def __init__(self, shares):
            self.shares, self.calls = shares, 0

        def run(self, feed):
            self.calls += 1
            return np.zeros((1, 2), np.float32)

        def worker_share(self):
            return None if self.shares is None else self.shares[self.calls % len(self.shares)]

    Prepared = worker._Prepared

    def prepared(eng):
        prep = Prepared.__new__(Prepared)
        prep.base = {"model": "m", "engine": eng.name, "threads": 2, "seq_len": 8, "runs": 3}
        prep.batches, prep.eng, prep.error, prep.setup_s, prep._fail = [1], eng, None, 0.0, False
        prep.inputs = {1: {"input_ids": torch.ones(1, 8, dtype=torch.long)}}
        prep.refs = {1: np.zeros((1, 2), np.float32)}
        return prep

    monkeypatch.setattr(worker, "QUIET_S", 0.0)
    monkeypatch.setattr(worker, "WARM_S", 0.0)   # one untimed call per turn: the counts below
    for shares, want in (([0.1, 0.2, 0.3, 0.4], "0.30;0.10;0.30"), (None, None)):
        eng = Fake(shares)
        monkeypatch.setattr(worker, "_Prepared", lambda spec, eng=eng: prepared(eng))
        # interleaved: per turn an untimed call (calls 1, 3, 5) and a timed one (2, 4, 6)
        worker.serve({}, tmp_path / "rows.json", iter(["warm 1 0", "time 1", "time 1", "time 1", "done"]), io.StringIO())
        row = json.loads((tmp_path / "rows.json").read_text())[0]
        assert row["status"] == "ok" and row.get(SHARES_FIELD) == want, row
        # sequential: warm-up calls (1), then timed calls 2, 3, 4
        eng.calls = 0
        rows = worker.run_spec({"runs": 3, "warmup": 1})
        assert rows[0].get(SHARES_FIELD) == (None if shares is None else "0.30;0.40;0.10"), rows[0]


def test_a_turn_warms_up_for_a_fixed_time_not_a_fixed_number_of_calls(tmp_path, monkeypatch):
    """Within a turn, untimed calls go on for `WARM_S` before the timed one, so a fast engine is
    as warm as a slow one when timed (one untimed call left our 2-3 ms engines 6-10 % slow, ORT's
    11 ms 1 %: results/bench/zen5-warm); an engine slower than that makes one untimed call."""
    import io
    import json
    import time

    import numpy as np
    import torch

    from workbench.bench import worker
    from workbench.bench.bench_engine import BenchEngine

    class Timed(BenchEngine):   # each call sleeps `seconds`; records when it started
        name = "timed"

        def __init__(self, seconds):
            super().__init__()
            self.seconds, self.starts = seconds, []

        def run(self, feed):
            self.starts.append(time.perf_counter())
            time.sleep(self.seconds)
            return np.zeros((1, 2), np.float32)

    Prepared = worker._Prepared

    def turn_calls(seconds):
        eng = Timed(seconds)
        prep = Prepared.__new__(Prepared)
        prep.base = {"model": "m", "engine": "timed", "threads": 1, "seq_len": 8, "runs": 1}
        prep.batches, prep.eng, prep.error, prep.setup_s, prep._fail = [1], eng, None, 0.0, False
        prep.inputs = {1: {"input_ids": torch.ones(1, 8, dtype=torch.long)}}
        prep.refs = {1: np.zeros((1, 2), np.float32)}
        monkeypatch.setattr(worker, "_Prepared", lambda spec: prep)
        worker.serve({}, tmp_path / "rows.json", iter(["time 1", "done"]), io.StringIO())
        assert json.loads((tmp_path / "rows.json").read_text())[0]["status"] == "ok"
        return eng.starts

    monkeypatch.setattr(worker, "WARM_S", 0.05)
    fast = turn_calls(0.004)   # ~12 untimed calls, then the timed one starts >= 50 ms in
    assert len(fast) >= 3 and fast[-1] - fast[0] >= 0.05, fast   # >= 2 untimed even if sleeps overrun
    assert fast[-2] - fast[0] < 0.05 + 0.03   # and no untimed call starts after WARM_S is up
    assert len(turn_calls(0.06)) == 2   # slower than WARM_S: one untimed call, one timed


def test_rows_carry_the_first_call_after_each_pause(tmp_path, monkeypatch):
    """Interleaved: `after_pause_ms` is the median of each turn's untimed first call (the one
    after the pause), not of the timed second call; sequential runs leave it empty. The README
    section gives the baseline's over it and its own over the warm median."""
    import io
    import json
    import time

    import numpy as np
    import torch

    from workbench.bench import worker
    from workbench.bench.after_pause import FIELD, after_pause_section
    from workbench.bench.bench_engine import BenchEngine

    class Cold(BenchEngine):  # odd calls (the first of a turn) take 30 ms, even ones 5 ms
        name = "cold"
        calls = 0

        def run(self, feed):
            self.calls += 1
            time.sleep(0.030 if self.calls % 2 else 0.005)
            return np.zeros((1, 2), np.float32)

    prep = worker._Prepared.__new__(worker._Prepared)
    prep.base = {"model": "m", "engine": "cold", "threads": 1, "seq_len": 8, "runs": 3}
    prep.batches, prep.eng, prep.error, prep.setup_s, prep._fail = [1], Cold(), None, 0.0, False
    prep.inputs = {1: {"input_ids": torch.ones(1, 8, dtype=torch.long)}}
    prep.refs = {1: np.zeros((1, 2), np.float32)}
    monkeypatch.setattr(worker, "_Prepared", lambda spec: prep)
    worker.serve({}, tmp_path / "rows.json", iter(["time 1", "time 1", "time 1", "done"]), io.StringIO())
    row = json.loads((tmp_path / "rows.json").read_text())[0]
    assert row["status"] == "ok" and 28 <= row[FIELD] < 60 and row["latency_ms_median"] < 25, row
    # sequential: warm-ups and timed runs back to back, no pauses, so no after-pause time
    assert worker.run_spec({"runs": 3, "warmup": 1})[0][FIELD] == ""
    rows = [{**row, "engine": "ort-int8", FIELD: 20.0, "latency_ms_median": 10.0},
            {**row, "engine": "wb-int8", FIELD: 8.0, "latency_ms_median": 4.0}]
    text = "\n".join(after_pause_section(rows, ["ort-int8", "wb-int8"], "ort-int8", worker.QUIET_S))
    assert "| **wb-int8** | 8.00 (2.50x, 2.00x warm) |" in text and "| ort-int8 | 20.00 (2.00x warm) |" in text


def test_bench_engine_sets_up_an_engine_as_the_worker_does(monkeypatch):
    """`in_process.bench_engine` (the results scripts' in-process A/B) gives the bench's engine
    with its model pruned to the engine's sparsity, kernels chosen at the batch asked for, and a
    feed it runs on."""
    import numpy as np

    from workbench.bench import models
    from workbench.bench.in_process import bench_engine

    pruned = []
    real_prune = models.prune
    monkeypatch.setattr(models, "prune", lambda net, sparsity, block: (pruned.append((sparsity, block)),
                                                                       real_prune(net, sparsity, block)))
    eng, feed = bench_engine("wb-int8-sp90", batch=2, threads=1, seq_len=16, model="tiny-distilbert", warm_calls=1)
    assert pruned == [(0.9, eng.block)] and eng.shape == (2, 16) and eng.batches == (2,)
    logits = np.asarray(eng.run(feed))
    assert logits.shape[0] == 2 and np.isfinite(logits).all()
    bench_engine("wb-int8", batch=1, threads=1, seq_len=16, model="tiny-distilbert", warm_calls=0)
    assert len(pruned) == 1   # a dense engine's model is left whole


def test_the_gemm_table_follows_the_engine_table_and_a_failure_keeps_it(tmp_path, monkeypatch, capsys):
    from workbench.bench import gemm

    row = {"kernel": "wb-int8-dense", "isa": "avx2", "m": 8, "k": 64, "n": 32, "threads": 2, "median_ms": 0.5,
           "gops": 1.0, "gops_best": 1.1, "vs_dense": 1.0, "peak_gops": 10.0, "pct_of_peak": 10.0, "peak_note": "n"}
    seen = {}
    monkeypatch.setattr(gemm, "run_gemm_bench", lambda **kw: seen.update(kw) or [row])
    (tmp_path / "README.md").write_text("# engines\n")
    args = _args(["--quick", "--out", str(tmp_path)])
    cli._run_gemm(args, {"threads": [2]})
    assert seen["out_dir"] == tmp_path and seen["quick"] and seen["threads"] == [2]
    text = (tmp_path / "README.md").read_text()
    assert text.startswith("# engines\n\n## GEMM microbenchmark") and "wb-int8-dense" in text

    def broken(**kw):
        raise RuntimeError("no kernels")

    monkeypatch.setattr(gemm, "run_gemm_bench", broken)
    cli._run_gemm(args, {"threads": [2]})
    assert "GEMM microbenchmark failed: RuntimeError: no kernels" in capsys.readouterr().err
    assert (tmp_path / "README.md").read_text() == text


def test_machine_line_names_the_cpuid_family_and_model():
    # KVM guests often see only "AMD EPYC": the family and model tell a Zen 4 from a Zen 5.
    from workbench.bench.host import cpu_name

    info = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
            "model name\t: AMD EPYC\n\nprocessor\t: 1\ncpu family\t: 26\nmodel\t\t: 2\n")
    assert cpu_name(info) == "AMD EPYC (CPUID family 25, model 17)"
    assert cpu_name("model name\t: Intel(R) Xeon(R) Processor\n") == "Intel(R) Xeon(R) Processor"
