"""`workbench bench --run RUN --engines ort-exported`: each stage of a finished run as the file
`workbench export` writes for it, timed in ONNX Runtime in a worker process. The export runs (and
checks its logits) once per stage before the engines, is reused while current, and a stage export
refuses is a "skipped" row with the reason. Behaviour only, never speed."""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil

import pytest

from test_platform import _spec, _tiny_dir
from workbench.bench import cli


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny finished run: an fp32 stage, a saved static int8 stage, a dynamic int8 stage (rebuilt,
    never saved) and a runtime stage (which export refuses)."""
    from workbench.pipeline import PipelineRun

    tmp = tmp_path_factory.mktemp("bench_exported")
    mp = pytest.MonkeyPatch()
    mp.setenv("WORKBENCH_CACHE", str(tmp / "cache"))
    spec = _spec(tmp, [
        {"name": "t", "recipes": ["finetune"], "train": {"epochs": 1, "batch_size": 16, "max_steps": 4, "lr": 1e-3}},
        {"name": "t.static", "from": "t", "recipes": [{"static_int8": {"num_examples": 32, "observer": "mse"}}]},
        {"name": "t.dynamic", "from": "t", "recipes": ["dynamic_int8"]},
        {"name": "t.runtime", "from": "t", "recipes": [{"workbench_runtime": {"quantize": True}}]},
    ], str(_tiny_dir(tmp, "tiny")))
    runner = PipelineRun(spec, results_root=tmp / "r")
    runner.run()
    yield runner.run_dir
    mp.undo()


def _args(argv):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_bench_run_ort_exported_benches_each_stage_export(run, capsys):
    from workbench.bench.runs import SPEED_COLUMNS, stage_models

    assert list(stage_models(run)) == ["t", "t.static"]  # dynamic and runtime stages are rebuilt
    rc = cli.run(_args(["--run", str(run), "--engines", "ort-exported", "--threads", "1", "--batch", "1,2",
                        "--runs", "2", "--warmup", "0", "--seq-len", "12"]))
    assert rc == 0
    with open(run / "speed.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = {(r["stage"], r["batch"]): r for r in reader}
        assert reader.fieldnames == SPEED_COLUMNS
    assert set(rows) == {(s, b) for s in ("t", "t.static", "t.dynamic", "t.runtime") for b in ("1", "2")}
    for stage in ("t", "t.static", "t.dynamic"):
        side = json.loads((run / "export" / f"{stage}.onnx.check.json").read_text())
        assert side["kind"] == {"t": "fp32", "t.static": "static_int8", "t.dynamic": "dynamic_int8"}[stage]
        assert 0 <= side["max_abs_diff"] <= side["bound"]  # export's own check, on its probe texts
        for b in ("1", "2"):
            r = rows[(stage, b)]
            assert (r["engine"], r["status"], r["error"]) == ("ort-exported", "ok", ""), r
            assert r["model_path"] == str(run / "export" / f"{stage}.onnx")
            assert float(r["samples_per_s"]) > 0 and f"max |Δlogit| {side['max_abs_diff']:.3g}" in r["notes"]
            # the worker's own comparison on the bench inputs: the saved model for t and t.static
            # (the static stage in torch), the fp32 source t for the rebuilt dynamic stage
            err = float(r["max_abs_err_vs_torch_fp32"])
            assert err < {"t": 1e-4, "t.static": side["bound"], "t.dynamic": 0.1}[stage], (stage, err)
    assert "QDQ int8" in rows[("t.static", "1")]["notes"] and "quantize_dynamic" in rows[("t.dynamic", "1")]["notes"]
    for b in ("1", "2"):
        r = rows[("t.runtime", b)]
        assert r["status"] == "skipped" and "cannot be exported" in r["error"] and not r["samples_per_s"], r
    assert not (run / "export" / "t.runtime.onnx").exists()
    assert "skipped: stage 't.runtime' cannot be exported" in capsys.readouterr().err


def test_export_is_reused_while_current_and_checked_when_made(run, monkeypatch):
    from workbench.bench import exported as ex
    from workbench.bench.runs import stage_models

    refs = ex.reference_models(run, stage_models(run))
    assert refs == {"t": run / "artifacts" / "t" / "model", "t.static": run / "artifacts" / "t.static" / "model",
                    "t.dynamic": run / "artifacts" / "t" / "model", "t.runtime": run / "artifacts" / "t" / "model"}
    shutil.rmtree(run / "export", ignore_errors=True)
    first = ex.export_stages(run, ["t", "t.static"], refs, log=lambda _: None)
    assert all(e.status == "ok" and not e.reused for e in first.values())
    again = ex.export_stages(run, ["t", "t.static"], refs, log=lambda _: None)
    assert all(e.reused and e.notes.endswith("; reused") for e in again.values())
    # the static stage's saved model changes: its file is no longer current, t's still is
    weights = next(p for p in refs["t.static"].iterdir() if p.suffix == ".safetensors")
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    # ... and an export whose logits fail the check is refused: no file, a skipped stage
    monkeypatch.setattr("workbench.export.qdq_bound", lambda ref: -1.0)
    third = ex.export_stages(run, ["t", "t.static"], refs, log=lambda _: None)
    assert third["t"].reused and third["t"].status == "ok"
    assert third["t.static"].status == "skipped" and "do not match" in third["t.static"].reason
    assert not list((run / "export").glob(".t.static*"))
    monkeypatch.undo()
    fourth = ex.export_stages(run, ["t.static"], refs, log=lambda _: None)
    assert fourth["t.static"].status == "ok" and not fourth["t.static"].reused


def test_engine_outside_bench_run_and_bad_stage(run, tmp_path):
    from workbench.bench.exported import exported_file
    from workbench.config import ConfigError

    with pytest.raises(ConfigError, match="use it with `workbench bench --run RUN`"):
        exported_file(tmp_path, "minilm")
    base = ["--threads", "1", "--batch", "1", "--runs", "1", "--out", str(tmp_path)]
    # rebuilt stages are listed with ort-exported only; an unknown stage fails before any work
    assert cli.run(_args(["--run", str(run), "--stages", "t.dynamic"] + base)) == 2
    assert cli.run(_args(["--run", str(run), "--engines", "ort-exported", "--stages", "t.nope"] + base)) == 2
    assert not (tmp_path / "speed.csv").exists()
