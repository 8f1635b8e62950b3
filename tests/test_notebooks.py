"""Every notebook in notebooks/ runs top to bottom in quick mode (papermill, kernel = this Python).

The notebooks run in the background from the start of the test session (tests/notebook_lanes.py,
started by conftest.py); their tests run last and read what each run left.
"""
from __future__ import annotations

import json

import pytest
from notebook_lanes import NOTEBOOKS


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
def test_notebook_runs_in_quick_mode(path, notebook_lanes):
    out, proc = notebook_lanes.result(path.stem)
    assert proc.returncode == 0, proc.stderr[-3000:]
    nb = json.loads(out.read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    images = [o for c in nb["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, f"{path.name} shows no plot"
