"""Like-for-like peers: each front trial's own model run on the peer engines.

A sweep's Pareto plot compares its trials with peer engines (torch fp32, torch dynamic int8,
ONNX Runtime int8 by default; the sweep file's `peers:`). A benchmark of some other model says
nothing about *these* models, so each front trial's model is run on each peer engine, with the
bench's engines (`workbench.bench.engines`), timing (`workbench.bench.worker.run_spec`) and
thread environment, one fresh process per engine that runs the front trials in turn
(`python -m workbench.sweep.peers SPEC RESULT`), timed like the trial's own throughput (batch
1, the recipe's seq_len and speed iterations, median) and scored on the same validation
examples as the trial.

Which model: the trial's last plain (saveable, fp32) Hugging Face model, following `from:` back
from its final stage: the final model itself when it is fp32, else the one its final engine
(torch int8, the workbench runtime) was built from. A trial keeps that stage's saved model
(`trials/<n>/artifacts/<stage>/`) until the front is known; then the models of trials off the
front are deleted (unless keep_artifacts). Results: `trials/<n>/peers.json` (reused when the
sweep is continued or re-reported) and `peers.csv` (all front trials).
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from workbench.results import atomic_write_text, write_csv

PEER_COLUMNS = ["trial", "stage", "params", "engine", "status", "val_accuracy", "val_macro_f1", "val_examples",
                "samples_per_s", "samples_per_s_min", "samples_per_s_max", "latency_ms_median", "threads",
                "seq_len", "batch", "runs", "argmax_agree_vs_torch_fp32", "max_abs_err_vs_torch_fp32", "notes",
                "error"]


# ------------------------------------------------------------------------------ in the trial
def peer_source(run: Any) -> dict[str, Any] | None:
    """{stage, path, params} of the model the peers run for a finished `PipelineRun`: its last
    saved (plain fp32) stage along the `from:` chain of the final stage; None when there is none."""
    from workbench.pipeline.store import saveable

    index: int | None = len(run.spec.stages) - 1
    while index is not None:
        name = run.spec.stages[index].name
        if saveable(run.models[name]):
            m = next(m for m in run.metrics if m["stage"] == name)
            folder = Path(m["reused_from"]) if m.get("reused_from") else run.store.artifact(name)
            if not (folder / "model").is_dir():
                return None
            return {"stage": name, "path": str(folder / "model"), "params": m.get("params")}
        index = run._source(index)
    return None


def drop_artifacts(run_dir: Path, keep: str | None = None) -> None:
    """Delete a trial's saved stages except the stage `keep` (the peers' model)."""
    folder = run_dir / "artifacts"
    if keep is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for sub in folder.glob("*"):
        if sub.name != keep:
            shutil.rmtree(sub, ignore_errors=True)


# ------------------------------------------------------------------------------ after the sweep
def measure_front_peers(front: list[Any], sweep: Any, folder: Path, quick: bool, all_trials: list[Any],
                        timeout: float = 900.0) -> list[dict[str, Any]]:
    """Run every front trial's model on `sweep.peers` (one process per engine, for all the trials
    not measured yet), write `peers.csv`, then delete the kept models of trials off the front
    (unless keep_artifacts). Returns the peer rows, front trial by front trial."""
    rows: dict[int, list[dict[str, Any]]] = {}
    todo: list[tuple[Any, dict[str, Any]]] = []
    for t in front if sweep.peers else []:
        cache = folder / "trials" / str(t.number) / "peers.json"
        stored = json.loads(cache.read_text()) if cache.is_file() else {}
        if stored.get("engines") == list(sweep.peers):
            rows[t.number] = stored["rows"]
            continue
        item = _trial_item(t, quick)
        if item is None:
            why = ("the trial kept no fp32 model (a trial from before peers were measured, or its artifacts were "
                   "deleted); re-run the sweep with --fresh to measure peers")
            rows[t.number] = [{"trial": t.number, "engine": e, "status": "missing", "error": why} for e in sweep.peers]
        else:
            todo.append((t, item))
    if todo:
        measured = _run_engines([item for _, item in todo], sweep.peers, timeout)
        for t, _ in todo:
            rows[t.number] = measured[t.number]
            if all(r.get("status") == "ok" for r in rows[t.number]):
                atomic_write_text(folder / "trials" / str(t.number) / "peers.json",
                                  json.dumps({"engines": list(sweep.peers), "rows": rows[t.number]}, indent=1))
    out = [r for t in front for r in rows.get(t.number, [])]
    if sweep.peers:
        write_csv(folder / "peers.csv", out, PEER_COLUMNS)
    else:
        (folder / "peers.csv").unlink(missing_ok=True)  # not a stale table from an earlier setting
    if not sweep.keep_artifacts:
        on_front = {t.number for t in front}
        for t in all_trials:  # a trial's own folder only, never the shared stage cache
            if t.number not in on_front:
                drop_artifacts(folder / "trials" / str(t.number))
    return out


def _trial_item(trial: Any, quick: bool) -> dict[str, Any] | None:
    """What an engine process needs to time and score one trial's model like the trial (batch 1,
    its seq_len and speed iterations, its validation examples); None when the model is gone."""
    src = trial.user_attrs.get("peer_model")
    if not src or not Path(src["path"]).is_dir():
        return None
    recipe = trial.user_attrs.get("recipe") or {}
    ev, q = recipe.get("eval") or {}, recipe.get("quick") or {}
    last = (trial.user_attrs.get("stages") or [{}])[-1]
    return {"trial": trial.number, "stage": src["stage"], "model": f"sweep-trial-{trial.number}",
            "model_path": src["path"], "batches": [1], "threads": int(last.get("threads") or 1),
            "seq_len": int(ev.get("seq_len", 128)),
            "runs": int(q.get("speed_iters", 3) if quick else ev.get("speed_iters", 20)),
            "warmup": 1 if quick else 3, "task": recipe.get("task"), "split_seed": int(recipe.get("seed", 0)),
            "val_examples": (trial.user_attrs.get("val") or {}).get("examples"),
            "eval_batch_size": int(ev.get("batch_size", 64))}


def _run_engines(items: list[dict[str, Any]], engines: list[str], timeout: float) -> dict[int, list[dict[str, Any]]]:
    """{trial: rows}: each engine in its own fresh process (per thread count), which times and
    scores every trial's model in turn."""
    out: dict[int, list[dict[str, Any]]] = {it["trial"]: [] for it in items}
    with tempfile.TemporaryDirectory(prefix="wb-peers-") as tmp:
        cache = str(Path(tmp) / "cache")  # the ONNX exports, shared by the ORT engines
        for engine in engines:
            for threads in sorted({it["threads"] for it in items}):
                batch = [{**it, "engine": engine, "cache_dir": cache} for it in items if it["threads"] == threads]
                print(f"[sweep] peers: {engine} ({threads} thread(s)) on trial(s) "
                      + ", ".join(str(it["trial"]) for it in batch), flush=True)
                spec = {"engine": engine, "threads": threads, "items": batch}
                for r in run_child(spec, Path(tmp), timeout * len(batch)):
                    out[r["trial"]].append(r)
    return out


def run_child(spec: dict[str, Any], work: Path, timeout: float) -> list[dict[str, Any]]:
    """One engine process with the bench's thread environment for `spec["items"]` (one per trial);
    its rows, or a failed row per trial saying why."""
    from workbench.bench.processes import run_worker

    rows = run_worker("workbench.sweep.peers", spec, work, f"{spec['engine']}-t{spec['threads']}", spec["threads"],
                      timeout)
    if not isinstance(rows, str):
        return rows
    why = rows
    return [{"trial": it["trial"], "stage": it["stage"], "engine": spec["engine"], "status": "failed", "error": why,
             "threads": spec["threads"], "seq_len": it["seq_len"], "batch": 1} for it in spec["items"]]


def read_peer_rows(path: Path) -> list[dict[str, Any]]:
    """peers.csv back as rows with numbers (empty cells: None); [] when the file is absent."""
    from workbench.results import read_csv

    def value(v: str) -> Any:
        for cast in (int, float):
            try:
                return cast(v)
            except ValueError:
                pass
        return v if v != "" else None

    return [{k: value(v) for k, v in r.items()} for r in read_csv(path)] if Path(path).is_file() else []


# ------------------------------------------------------------------------------ the engine process
class _EngineAsModel:
    """A bench engine behind the `model(**inputs).logits` interface `workbench.evaluate` scores."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def eval(self) -> "_EngineAsModel":
        return self

    def __call__(self, input_ids: Any, attention_mask: Any, **_: Any) -> Any:
        import numpy as np
        import torch

        feed = self.engine.feed({"input_ids": input_ids.long(), "attention_mask": attention_mask.long()})
        out = self.engine.run(feed)
        return SimpleNamespace(logits=torch.as_tensor(np.asarray(out, dtype=np.float32)))


def _validation_scores(spec: dict[str, Any]) -> dict[str, Any]:
    """The engine's accuracy on the trial's validation examples, and the model's parameter count."""
    from transformers import AutoTokenizer

    from workbench.bench.engines import ENGINES
    from workbench.data import Collator, load_task, tokenize_task
    from workbench.evaluate import accuracy_metrics, storage_stats
    from workbench.models.edits import load_edited_model

    model = load_edited_model(spec["model_path"]).eval()
    out: dict[str, Any] = {"params": int(storage_stats(model, compress=False)["params"])}  # (zlib: 2 s, unused)
    if not spec.get("task"):
        return out
    tokenizer = AutoTokenizer.from_pretrained(spec["model_path"], local_files_only=True)
    task = load_task(spec["task"], seed=spec["split_seed"])
    data = tokenize_task(task, tokenizer)["validation"]
    n = spec.get("val_examples")
    data = data.select(range(min(len(data), int(n)))) if n else data
    engine = ENGINES[spec["engine"]]()
    engine.setup(model, int(spec["threads"]), Path(spec["cache_dir"]), spec["model"])
    m = accuracy_metrics(_EngineAsModel(engine), data, Collator(tokenizer), task.num_labels, spec["eval_batch_size"])
    return {**out, "val_accuracy": m["accuracy"], "val_macro_f1": m["macro_f1"], "val_examples": len(data)}


def _one_model(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Time one trial's model with the bench worker (registered as a bench model by name), then
    score it on the validation examples."""
    import traceback

    from workbench.bench import models as bench_models
    from workbench.bench.worker import run_spec
    from workbench.models.edits import load_edited_model

    # the worker builds models by name; a worker that loads spec["model_path"] itself ignores this
    bench_models.MODELS[spec["model"]] = lambda: load_edited_model(spec["model_path"]).eval()
    rows = run_spec(spec)
    if all(r.get("status") == "ok" for r in rows):
        try:
            scores = _validation_scores(spec)
        except Exception as exc:
            traceback.print_exc()
            scores = {"status": "failed", "error": f"validation: {type(exc).__name__}: {exc}"[:400]}
        rows = [{**r, **scores} for r in rows]
    return [{**r, "trial": spec["trial"], "stage": spec["stage"], "engine": spec["engine"]} for r in rows]


def child_main(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The engine process: every trial's model in turn (one engine, one thread count)."""
    return [r for item in spec["items"] for r in _one_model(item)]


if __name__ == "__main__":
    spec_path, result_path = sys.argv[1:3]
    atomic_write_text(Path(result_path), json.dumps(child_main(json.loads(Path(spec_path).read_text()))))
