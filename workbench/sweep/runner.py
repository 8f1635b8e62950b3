"""Running a sweep: Optuna study on RDB storage, worker processes, crash recovery, exports.

Layout (`results/sweeps/<name>/`):

    study.db            the Optuna study (default SQLite storage; any SQLAlchemy URL works)
    sweep.yaml          the sweep as resolved (storage password masked)
    trials/<number>/    each trial's pipeline run (metrics.json, stages.csv, recipe.yaml, png)
    trials.csv          one row per trial: state, val_accuracy (validation: the objective), test_accuracy
                        (test: reported only), throughput, params, last-stage size
    best/               the Pareto front (2 objectives) or top-k trials as runnable recipes
    peers.csv           each front trial's model on the peer engines (workbench.sweep.peers)
    report/             plots + README.md (workbench.sweep.report; also `workbench report`)

Robustness: every trial records its worker (host, pid, process start time) and sends Optuna
heartbeats. A RUNNING trial whose heartbeat is older than `grace_period`, or whose worker on
this host is gone, is marked FAIL and re-queued once with the same parameters (it resumes from
the dead trial's checkpoints). The total number of trials is shared by all workers: a worker
starts a trial only while finished + running trials < total.

Here: a trial (`Objective`), a worker's loop (`work`) and the command (`run_sweep`). The study
and its storage are in `workbench.sweep.storage`, dead-worker detection in
`workbench.sweep.liveness`, trials.csv and best/ in `workbench.sweep.exports`.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from workbench.config import ConfigError
from workbench.paths import results_dir
from workbench.results import atomic_write_text, write_yaml
from workbench.sweep.exports import export
from workbench.sweep.liveness import reap_dead_trials, worker_identity
from workbench.sweep.peers import drop_artifacts, measure_front_peers, peer_source
from workbench.sweep.spec import SELECTION_SPLIT, SweepSpec, mask_url
from workbench.sweep.storage import make_storage, open_study, storage_url, sweep_dir
from workbench.sweep.study import STORAGE_ENV, best_trials, trial_rows, with_driver  # noqa: F401  (re-exported)
from workbench.optuna_import import optuna_module as _optuna

POLL_SECONDS = 2.0


def _counts(study: Any) -> dict[str, int]:
    from optuna.trial import TrialState

    c = {s.name: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        c[t.state.name] += 1
    return c


# ------------------------------------------------------------------------------ one trial
class _Surplus(Exception):
    """The study already has its total number of trials (another worker got there first)."""


class Objective:
    def __init__(self, sweep: SweepSpec, root: Path | None, quick: bool) -> None:
        self.sweep, self.root, self.quick = sweep, root, quick
        self.trials_dir = sweep_dir(sweep, root) / "trials"

    def __call__(self, trial: Any) -> Any:
        optuna = _optuna()
        from optuna.trial import TrialState

        from workbench.pipeline import PipelineRun

        sweep = self.sweep
        earlier = [t for t in trial.study.get_trials(deepcopy=False, states=(
            TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)) if t.number < trial.number]
        if len(earlier) >= sweep.trials:
            trial.set_user_attr("fail_reason", "surplus: the study already had its total of trials")
            raise _Surplus()
        trial.set_user_attr("worker", worker_identity())
        values = {p.path: p.suggest(trial) for p in sweep.params}
        spec = sweep.build(values, name=f"{sweep.name}-trial{trial.number}")
        trial.set_user_attr("recipe", spec.to_dict())
        delay = float(os.environ.get("WORKBENCH_SWEEP_TRIAL_DELAY", "0") or 0)
        if delay > 0:  # tests: a trial slow enough to be killed mid-way
            time.sleep(delay)
        run_dir = self.trials_dir / str(trial.number)
        retry_of = trial.study._storage.get_trial_system_attrs(trial._trial_id).get("failed_trial")
        if retry_of is not None and not run_dir.exists() and (self.trials_dir / str(retry_of)).exists():
            try:  # resume from the dead trial's finished stages and checkpoints
                (self.trials_dir / str(retry_of)).rename(run_dir)
                trial.set_user_attr("resumed_from", int(retry_of))
            except OSError:
                pass
        stage_index = {s.name: i for i, s in enumerate(spec.stages)}

        def on_eval(stage: str, epoch: int, metrics: dict[str, float]) -> None:
            if sweep.multi or "accuracy" not in metrics:
                return
            step = stage_index.get(stage, 0) * 1000 + int(epoch)
            trial.report(float(metrics["accuracy"]), step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"stage {stage} epoch {epoch}: val accuracy {metrics['accuracy']:.4f}")

        print(f"[sweep] trial {trial.number}: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in values.items()),
              flush=True)
        run = PipelineRun(spec, quick=self.quick, results_root=self.trials_dir, run_name=str(trial.number),
                          on_eval=on_eval)
        source = None
        try:
            stages = run.run()
            val = _validation_metrics(run, -1)
            source = peer_source(run) if sweep.peers else None
        finally:
            if not sweep.keep_artifacts:  # the peers' model stays until the front is known
                drop_artifacts(run.run_dir, keep=source["stage"] if source else None)
        trial.set_user_attr("stages", [_summary(s) for s in stages])
        last = stages[-1]
        trial.set_user_attr("val", val)
        trial.set_user_attr("test", {"split": spec.eval.split, "accuracy": last["accuracy"],
                                     "macro_f1": last.get("macro_f1"), "examples": len(run.eval_data)})
        trial.set_user_attr("peer_model", source)
        if "reference" not in trial.study.user_attrs:  # the teacher star of the report, on both splits
            first = stages[0]
            trial.study.set_user_attr("reference", {
                "trial": trial.number, "stage": first["stage"], "engine": first.get("engine"),
                "val_accuracy": (val if len(stages) == 1 else _validation_metrics(run, 0))["accuracy"],
                "test_accuracy": first["accuracy"], "throughput_b1": first.get("throughput_b1"),
                "threads": first.get("threads")})
        result = {"accuracy": float(val["accuracy"]), "throughput": float(last.get("throughput_b1") or 0.0)}
        trial.set_user_attr("params_count", int(last.get("params") or 0))
        trial.set_user_attr("nonzero_params", int(last.get("nonzero_params") or 0))
        trial.set_user_attr("engine", last.get("engine"))
        out = [result[o] for o in sweep.objectives]
        return out if sweep.multi else out[0]


def _validation_metrics(run: Any, index: int) -> dict[str, Any]:
    """A stage's accuracy and macro-F1 on the validation split (the examples the trainer's
    per-epoch evaluation uses): what the sweep chooses on; stages report eval.split (test)."""
    from workbench.evaluate import accuracy_metrics

    name = run.spec.stages[index].name
    data = getattr(run, "stage_data", {}).get(name)  # a stage with its own tokenizer (trim_vocab) has its own
    val, collate = (data.val, data.collate) if data is not None else (run.val_data, run.collate)
    m = accuracy_metrics(run.models[name], val, collate, run.task.num_labels, run.spec.eval.batch_size)
    return {"split": SELECTION_SPLIT, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "examples": len(val)}


def _summary(s: dict[str, Any]) -> dict[str, Any]:
    keys = ("stage", "engine", "accuracy", "macro_f1", "params", "nonzero_params", "sparsity", "disk_mb",
            "latency_ms_b1", "throughput_b1", "train_seconds", "threads", "seq_len")
    return {k: s.get(k) for k in keys}


def work(sweep: SweepSpec, url: str, *, root: Path | None = None, quick: bool = False, worker_id: int = 0,
         max_consecutive_failures: int = 3) -> int:
    """One worker: runs trials until the study holds `sweep.trials` finished trials. Returns the
    number of trials this worker finished."""
    _optuna()  # quiet optuna's logging in this worker
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    salt = 7919 * worker_id + len(open_study(sweep, url, heartbeat=False).trials)
    study = open_study(sweep, url, salt=salt)
    objective = Objective(sweep, root, quick)
    stop_at = MaxTrialsCallback(sweep.trials, states=(TrialState.COMPLETE, TrialState.PRUNED))
    done_here, failures = 0, 0
    while True:
        reap_dead_trials(study, sweep)
        c = _counts(study)
        finished = c["COMPLETE"] + c["PRUNED"]
        if finished >= sweep.trials:
            break
        if finished + c["RUNNING"] >= sweep.trials:
            time.sleep(POLL_SECONDS)  # the rest are running elsewhere; take over if one of them dies
            continue
        before = len(study.trials)
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[stop_at], gc_after_trial=True)
        mine = [t for t in study.get_trials(deepcopy=False)[before:]
                if t.user_attrs.get("worker", {}).get("pid") == os.getpid()]
        if any(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in mine):
            done_here += 1
            failures = 0
        elif any(t.state == TrialState.FAIL and not str(t.user_attrs.get("fail_reason", "")).startswith("surplus")
                 for t in mine):
            failures += 1
            if failures >= max_consecutive_failures:
                raise RuntimeError(f"sweep '{sweep.name}': {failures} trials in a row failed in worker {worker_id}; "
                                   "see the traceback above (a broken recipe or environment?)")
    return done_here


# ------------------------------------------------------------------------------ the command
def warm_shared_stages(sweep: SweepSpec, root: Path | None, quick: bool) -> None:
    """Run the leading `cache: true` stages the search space does not touch once, so parallel
    workers reuse them from the stage cache instead of all training the same teacher."""
    from workbench.pipeline import PipelineRun

    touched = {p.path.split(".")[1] for p in sweep.params if p.path.startswith("stages.")}
    spec = sweep.build({})
    prefix = []
    for st in spec.stages:
        if not st.cache or st.name in touched or any(p.path.split(".")[0] in ("model", "task", "seed", "quick")
                                                     for p in sweep.params):
            break
        prefix.append(st.name)
    if not prefix:
        return
    data = sweep.recipe_dict({})
    data["stages"] = data["stages"][: len(prefix)]
    from workbench.pipeline import PipelineSpec

    print(f"[sweep] preparing shared stage(s) {', '.join(prefix)} once for all workers", flush=True)
    run = PipelineRun(PipelineSpec.from_dict(data), quick=quick, results_root=sweep_dir(sweep, root),
                      run_name="shared")
    run.run()
    shutil.rmtree(run.run_dir / "artifacts", ignore_errors=True)


def ensure_gitignore(root: Path | None) -> None:
    path = Path(root or results_dir()) / "sweeps" / ".gitignore"
    if not path.exists():
        atomic_write_text(path, "# model weights and checkpoints of sweep trials stay out of git\n"
                                "*/trials/*/artifacts/\n*/trials/*/checkpoints/\n*/shared/\n"
                                "*.db-journal\n*.db-wal\n*.db-shm\n*/workers/\n"
                                "# the notebooks' quick sweeps\nquick-nb*/\n")


def run_sweep(sweep: SweepSpec, *, root: Path | None = None, storage: str | None = None, workers: int | None = None,
              quick: bool | None = None, fresh: bool = False, report: bool = True) -> dict[str, Any]:
    """Run (or continue) a sweep to its total number of trials; export best recipes and plots."""
    optuna = _optuna()
    quick = sweep.quick if quick is None else quick
    workers = workers or sweep.workers
    out = sweep_dir(sweep, root)
    url = storage_url(sweep, root, storage)
    if fresh:
        try:
            optuna.delete_study(study_name=sweep.name, storage=make_storage(url, sweep, heartbeat=False))
        except KeyError:
            pass
        for sub in ("trials", "best", "report", "shared"):
            shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    ensure_gitignore(root)
    write_yaml(out / "sweep.yaml", {**sweep.to_dict(), "storage": mask_url(url), "quick": quick})
    study = open_study(sweep, url, create=True, heartbeat=False)
    reaped = reap_dead_trials(open_study(sweep, url), sweep)
    if reaped:
        print(f"[sweep] trial(s) {', '.join(map(str, reaped))} of dead workers marked FAIL and re-queued", flush=True)
    c = _counts(study)
    left = sweep.trials - c["COMPLETE"] - c["PRUNED"]
    print(f"[sweep] {sweep.name}: {c['COMPLETE']} complete, {c['PRUNED']} pruned, {c['FAIL']} failed, "
          f"{c['RUNNING']} running of {sweep.trials}; storage {mask_url(url)}", flush=True)
    if left > 0:
        if workers > 1:
            warm_shared_stages(sweep, root, quick)
            _spawn_workers(sweep, url, root, quick, min(workers, left))
        else:
            work(sweep, url, root=root, quick=quick)
    study = open_study(sweep, url, heartbeat=False)
    best = export(study, sweep, out)
    measure_front_peers(best_trials(study, sweep.top_k), sweep, out, quick, study.get_trials(deepcopy=False))
    if report:
        from workbench.sweep.report import sweep_report

        sweep_report(out, study=study)
    return {"dir": out, "storage": url, "best": best, "counts": _counts(study)}


def _spawn_workers(sweep: SweepSpec, url: str, root: Path | None, quick: bool, n: int) -> None:
    if sweep.source is None:
        raise ConfigError("sweep: --workers > 1 needs a sweep file (workers re-read it)")
    env = dict(os.environ)
    env[STORAGE_ENV] = url
    threads = max(1, (os.cpu_count() or 1) // n)
    env.setdefault("OMP_NUM_THREADS", str(threads))
    logs = sweep_dir(sweep, root) / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(n):
        cmd = [sys.executable, "-m", "workbench.sweep.cli", str(sweep.source), "--worker-id", str(i),
               "--trials", str(sweep.trials), "--name", sweep.name]
        if quick:
            cmd.append("--quick")
        if root is not None:
            cmd += ["--results", str(root)]
        log = open(logs / f"worker-{i}.log", "a")
        procs.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log))
        print(f"[sweep] worker {i}: pid {procs[-1][0].pid}, log {logs / f'worker-{i}.log'}", flush=True)
    try:
        for p, log in procs:
            p.wait()
            log.close()
    except KeyboardInterrupt:
        for p, _ in procs:
            p.send_signal(signal.SIGINT)
        raise
    bad = [i for i, (p, _) in enumerate(procs) if p.returncode]
    if bad:
        print(f"[sweep] worker(s) {', '.join(map(str, bad))} exited with an error; see {logs}", file=sys.stderr)
