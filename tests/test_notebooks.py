"""Every notebook in notebooks/ runs top to bottom in quick mode (papermill, kernel = this Python).

The notebooks share one quick teacher through the stage cache, so only the first one trains it.
Results go to a temporary folder; the committed notebooks keep the outputs of a real run.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
KERNEL = "workbench-test-python"


@pytest.fixture(scope="module")
def kernel(tmp_path_factory) -> str:
    """A kernelspec that runs ipykernel with this interpreter (the .venv), whatever PATH says."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "workbench (tests)", "language": "python",
        "env": {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WORKBENCH_PROGRESS": "0",
                "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error", "MPLBACKEND": "Agg"}}))
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(root)] + ([old] if old else []))
    yield KERNEL
    if old is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = old


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
def test_notebook_runs_in_quick_mode(path, kernel, tmp_path):
    import papermill

    out = tmp_path / path.name
    papermill.execute_notebook(str(path), str(out), parameters={"quick": True, "results_root": str(tmp_path / "results")},
                               kernel_name=kernel, cwd=str(path.parent), progress_bar=False, log_output=False,
                               execution_timeout=600)
    nb = json.loads(out.read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    images = [o for c in nb["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, f"{path.name} shows no plot"
