"""Every notebook in notebooks/ runs top to bottom in quick mode (papermill, kernel = this Python).

The notebooks share one quick teacher through the stage cache: the fixture trains it first (a
teacher-only pipeline), then every notebook runs, two at a time (see `executed`).
Results go to a temporary folder; the committed notebooks keep the outputs of a real run.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
KERNEL = "workbench-test-python"
WEIGHT_FILES = {".safetensors", ".bin", ".onnx", ".pt", ".npz"}
# seconds each takes on one thread, two at a time on 2 cores (measured): the longest start first
MEASURED_S = {"06_sweep_and_pareto": 115, "11_teachers_and_data": 104, "08_structural_pruning": 88,
              "09_dynamic_inference": 74, "07_layerwise_distillation": 64, "10_quantization": 53,
              "02_distillation": 44, "03_pruning": 42, "01_quickstart": 39, "04_quantization_and_runtime": 34,
              "05_kernels_and_benchmark": 29}
NO_TEACHER = ("05_kernels_and_benchmark",)  # runs while the teacher trains: no tour.recipe in it
WARM_TEACHER = """
import sys, tour
from workbench.pipeline import PipelineRun, PipelineSpec
spec = PipelineSpec.from_dict(tour.recipe("warm-teacher", [], True))
PipelineRun(spec, quick=True, results_root=sys.argv[1], run_name="quick-warm-teacher").run()
"""


@pytest.fixture(scope="module")
def kernels(tmp_path_factory) -> dict[str, str]:
    """Kernelspecs that run ipykernel with this interpreter (the .venv), whatever PATH says:
    "solo" with the default threads, "paired" with one thread, for two notebooks at a time."""
    root = tmp_path_factory.mktemp("jupyter")
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WORKBENCH_PROGRESS": "0",
           "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error", "MPLBACKEND": "Agg"}
    names = {"solo": KERNEL, "paired": KERNEL + "-1thread"}
    for role, name in names.items():
        spec = root / "kernels" / name
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"workbench (tests, {role})", "language": "python",
            "env": {**env, **({"OMP_NUM_THREADS": "1"} if role == "paired" else {})}}))
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(root)] + ([old] if old else []))
    yield names
    if old is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = old


def _execute(path: Path, root: Path, kernel: str) -> tuple[Path, subprocess.CompletedProcess]:
    """Runs one notebook in quick mode into root/<name>/; the executed copy and the process."""
    out_dir = root / path.stem
    out_dir.mkdir()
    out = out_dir / path.name
    cmd = [sys.executable, "-m", "papermill", str(path), str(out), "-p", "quick", "True",
           "-p", "results_root", str(out_dir / "results"), "-k", kernel, "--cwd", str(path.parent),
           "--no-progress-bar", "--execution-timeout", "600"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 0:  # the test reads only the executed notebook: drop its runs' weights
        for f in (out_dir / "results").rglob("*"):  # (~3.5 GB for all notebooks, a full disk once)
            if f.suffix in WEIGHT_FILES and f.is_file():
                f.unlink()
    return out, proc


def _warm_teacher(root: Path) -> subprocess.CompletedProcess:
    """Trains the notebooks' shared quick teacher into the stage cache (`tour.recipe` with no
    stages after it: the same stage key as every notebook's teacher), on one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORKBENCH_PROGRESS": "0", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.run([sys.executable, "-c", WARM_TEACHER, str(root / "warm-teacher")], cwd=REPO / "notebooks",
                          env=env, capture_output=True, text=True)
    if proc.returncode == 0:  # the teacher is in the stage cache; its run folder is not needed
        shutil.rmtree(root / "warm-teacher", ignore_errors=True)
    return proc


@pytest.fixture(scope="module")
def executed(request, kernels, tmp_path_factory) -> dict[str, Future]:
    """Runs the selected notebooks, each in its own papermill process, two at a time on one thread
    each -- 1.7x faster than one after another on 2 cores, where a notebook keeps ~1.4 busy. First
    the shared quick teacher is trained into the stage cache (beside it, a notebook that needs no
    teacher), so no two notebooks train it at once; then the longest notebooks start first, so the
    two lanes finish together."""
    selected = [item.callspec.params["path"] for item in request.session.items
                if item.originalname == "test_notebook_runs_in_quick_mode"]
    root = tmp_path_factory.mktemp("notebooks")
    pool = ThreadPoolExecutor(max_workers=2)
    futures: dict[str, Future] = {}
    if selected:
        free = [p for p in selected if p.stem in NO_TEACHER]
        rest = [p for p in selected if p.stem not in NO_TEACHER]
        warm = pool.submit(_warm_teacher, root) if rest else None
        for path in free:
            futures[path.stem] = pool.submit(_execute, path, root, kernels["paired"])

        def after_warm(path: Path) -> tuple[Path, subprocess.CompletedProcess]:
            proc = warm.result()
            assert proc.returncode == 0, "training the notebooks' teacher failed:\n" + proc.stderr[-3000:]
            return _execute(path, root, kernels["paired"])

        for path in sorted(rest, key=lambda p: -MEASURED_S.get(p.stem, 300)):  # a new one: first
            futures[path.stem] = pool.submit(after_warm, path)
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


def test_notebooks_exist_with_parameters_cell():
    names = [p.stem for p in NOTEBOOKS]
    assert names == ["01_quickstart", "02_distillation", "03_pruning", "04_quantization_and_runtime",
                     "05_kernels_and_benchmark", "06_sweep_and_pareto", "07_layerwise_distillation",
                     "08_structural_pruning", "09_dynamic_inference", "10_quantization", "11_teachers_and_data"]
    for p in NOTEBOOKS:
        nb = json.loads(p.read_text())
        tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1 and "quick = True" in "".join(tagged[0]["source"]), p.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_quick_mode(path, executed):
    out, proc = executed[path.stem].result()
    assert proc.returncode == 0, proc.stderr[-3000:]
    nb = json.loads(out.read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    images = [o for c in nb["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, f"{path.name} shows no plot"
