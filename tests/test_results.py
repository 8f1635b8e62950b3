"""workbench.results: the one CSV writer (atomic, column order), the one stage-table formatter;
and the report <-> sweep runner import cycle stays broken."""
from __future__ import annotations

import ast
import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from workbench.results import atomic_dir, atomic_file, format_stage_table, write_csv, write_json

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "workbench"


# ------------------------------------------------------------------------------ write_csv
def _read(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_write_csv_keeps_column_order_and_formats(tmp_path):
    path = tmp_path / "out" / "t.csv"
    rows = [{"b": 1, "a": 0.123456789, "extra": "dropped"}, {"a": 2.0}]
    write_csv(path, rows, ["a", "b"])
    assert _read(path) == [["a", "b"], ["0.123457", "1"], ["2", ""]]
    assert path.read_bytes().count(b"\r") == 0
    # default columns: every key, in order of first appearance
    write_csv(path, [{"z": 1}, {"y": 2, "z": 3}, {"x": None}])
    assert _read(path) == [["z", "y", "x"], ["1", "", ""], ["3", "2", ""], ["", "", ""]]
    # float_format=None writes floats as Python prints them (the GEMM table's rounded values)
    write_csv(path, [{"ms": 0.0, "gops": 124.43}], float_format=None)
    assert _read(path) == [["ms", "gops"], ["0.0", "124.43"]]


def test_write_csv_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "t.csv"
    write_csv(path, [{"a": 1}])
    before = path.read_bytes()

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)  # the temp file is written, the rename never happens
    with pytest.raises(OSError, match="disk full"):
        write_csv(path, [{"a": 2}] * 1000)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]  # no temp file left behind


def test_atomic_dir_writers_of_one_folder_never_collide(tmp_path):
    """Two processes caching the same entry at once (sweep workers, a notebook beside a test):
    neither writes into nor deletes the other's half, and what lands is always a whole copy."""
    target = tmp_path / "cache" / "entry"
    with atomic_dir(target) as first:
        (first / "part").write_text("first")
        with atomic_dir(target) as second:  # another writer starts and finishes meanwhile
            (second / "part").write_text("second")
        assert (target / "part").read_text() == "second"
        assert (first / "part").read_text() == "first"  # our half is untouched
    assert (target / "part").read_text() == "first"  # the later finisher replaces
    assert [p.name for p in target.parent.iterdir()] == ["entry"]  # nothing left beside it

    with pytest.raises(RuntimeError, match="half"):  # a failed writer leaves the old copy alone
        with atomic_dir(target) as t:
            (t / "part").write_text("half")
            raise RuntimeError("half written")
    assert (target / "part").read_text() == "first"
    assert [p.name for p in target.parent.iterdir()] == ["entry"]


def test_atomic_dir_keeps_a_copy_that_lands_while_ours_moves_in(tmp_path, monkeypatch):
    target = tmp_path / "entry"
    real_rename = os.rename

    def other_writer_lands_first(src, dst):
        if Path(dst) == target and not target.exists():
            target.mkdir()
            (target / "part").write_text("other")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", other_writer_lands_first)
    with atomic_dir(target) as ours:
        (ours / "part").write_text("ours")
    assert (target / "part").read_text() == "other"
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_killed_writers_leftovers_are_removed_and_live_ones_kept(tmp_path):
    """A writer killed mid-save leaves its private copy beside the entry; the next writer of that
    entry removes it when its process is gone, and leaves a live writer's and another host's."""
    target = tmp_path / "entry"
    host = socket.gethostname().split(".")[0]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid is free now (reuse within this test would only keep the leftover)
    leftovers = {
        "dead_dir": tmp_path / f".entry.{host}-{dead.pid}.abc123.tmp",
        "dead_aside": tmp_path / f".entry.{host}-{dead.pid}.abc123.tmp.old",
        "live": tmp_path / f".entry.{host}-{os.getpid()}.def456.tmp",
        "other_host": tmp_path / f".entry.{host}x-{dead.pid}.ghi789.tmp",
        "other_entry": tmp_path / f".entry2.{host}-{dead.pid}.jkl012.tmp",
    }
    for path in leftovers.values():
        path.mkdir()
        (path / "part").write_text("half")
    with atomic_dir(target) as t:
        (t / "part").write_text("whole")
    left = {p.name for p in tmp_path.iterdir()}
    assert leftovers["dead_dir"].name not in left and leftovers["dead_aside"].name not in left
    for key in ("live", "other_host", "other_entry"):
        assert leftovers[key].name in left, key
    assert (target / "part").read_text() == "whole"

    dead_file = tmp_path / f".result.json.{host}-{dead.pid}.xyz.tmp"
    dead_file.write_text("{")
    write_json(tmp_path / "result.json", {"ok": 1})  # files too: atomic_write_* go through atomic_file
    assert not dead_file.exists()
    assert json.loads((tmp_path / "result.json").read_text()) == {"ok": 1}


def test_atomic_file_leaves_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "last.pt"
    with atomic_file(path) as tmp:
        torch.save({"step": 1}, tmp)
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_file(path) as tmp:
            torch.save({"step": 2}, tmp)
            raise RuntimeError("killed mid-save")
    assert torch.load(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_every_csv_goes_through_results_write_csv():
    """No other module of the package writes CSV itself (csv.writer / csv.DictWriter)."""
    offenders = []
    for py in PKG.rglob("*.py"):
        if py == PKG / "results.py":
            continue
        for node in ast.walk(ast.parse(py.read_text(), str(py))):
            if isinstance(node, ast.Attribute) and node.attr in ("writer", "DictWriter") \
                    and isinstance(node.value, ast.Name) and node.value.id == "csv":
                offenders.append(f"{py.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders


# ------------------------------------------------------------------------------ format_stage_table
STAGES = [
    {"stage": "teacher", "engine": "torch-fp32", "accuracy": 0.8569, "macro_f1": 0.85671, "params": 22713216,
     "nonzero_params": 22713216, "disk_mb": 86.71, "throughput_b1": 23.43, "throughput_b8": 39.7},
    {"stage": "runtime", "engine": "workbench-int8-sparse", "accuracy": "0.8260 ± 0.0040", "macro_f1": None,
     "params": 17388000, "nonzero_params": 12900000, "disk_mb": 28.4, "throughput_b1": 160.12},
]


def test_format_stage_table_text():
    assert format_stage_table(STAGES).splitlines() == [
        "stage    engine                 accuracy         macro_f1  params      nonzero_params  disk_mb  "
        "throughput_b1  throughput_b8",
        "teacher  torch-fp32             0.8569           0.8567    22,713,216  22,713,216      86.7     "
        "23.4           39.7",
        "runtime  workbench-int8-sparse  0.8260 ± 0.0040  -         17,388,000  12,900,000      28.4     "
        "160.1          -",
    ]


def test_format_stage_table_markdown_and_columns():
    cols = ["stage", "accuracy", ("sparsity", "{:.1%}"), ("throughput_b1", "{:.0f}", "samples/s b1")]
    rows = [{**STAGES[0], "sparsity": 0.0}, {**STAGES[1], "sparsity": 0.2588}]
    assert format_stage_table(rows, cols, fmt="markdown") == "\n".join([
        "| stage | accuracy | sparsity | samples/s b1 |",
        "|---|---|---|---|",
        "| teacher | 0.8569 | 0.0% | 23 |",
        "| runtime | 0.8260 ± 0.0040 | 25.9% | 160 |",
    ])
    # a (mean, std) pair is a spread; a "|" inside a cell does not break the markdown table
    assert format_stage_table([{"stage": "a|b", "accuracy": (0.8, 0.01)}], ["stage", "accuracy"], fmt="markdown") \
        .splitlines()[-1] == "| a\\|b | 0.8000 ± 0.0100 |"
    assert format_stage_table([], ["stage"]) == "stage"
    with pytest.raises(ValueError, match="fmt"):
        format_stage_table(rows, fmt="html")


# ------------------------------------------------------------------------------ import cycle
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """module -> workbench modules it imports anywhere (module level or inside functions).
    Importing a.b.c also runs the __init__ of a.b (when the importer is not inside it)."""
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
                targets.add(base)
                targets.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in files)
        edges = set()
        for t in targets:
            parts = t.split(".")
            for i in range(1, len(parts) + 1):
                name = ".".join(parts[:i])
                if name in files and name != mod and not (mod + ".").startswith(name + "."):
                    edges.add(name)
        graph[mod] = edges
    return graph


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    stack, seen = [[start]], {start}
    while stack:
        path = stack.pop()
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt == goal:
                return path + [nxt]
            if nxt not in seen:
                seen.add(nxt)
                stack.append(path + [nxt])
    return None


def test_report_and_sweep_runner_do_not_import_each_other():
    graph = _import_graph()
    assert "workbench.sweep.runner" not in graph["workbench.report"]
    assert "workbench.report" not in graph["workbench.sweep.runner"]
    for mod in ("workbench.report", "workbench.sweep.runner", "workbench.sweep.report", "workbench.sweep.study"):
        cycle = _reaches(graph, mod, mod)
        assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("order", [("workbench.sweep.runner", "workbench.report"),
                                   ("workbench.report", "workbench.sweep.runner")])
def test_report_and_sweep_runner_import_in_either_order(order):
    code = "; ".join(f"import {m}" for m in order) + "; print('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_report_of_a_missing_target_names_each_folder_it_looked_in_once(tmp_path):
    from workbench.config import ConfigError
    from workbench.report import resolve_target

    with pytest.raises(ConfigError) as err:
        resolve_target(str(tmp_path))   # absolute: the three candidate folders are one
    msg = str(err.value)
    assert f"'{tmp_path}'" in msg and msg.count(str(tmp_path)) == 2, msg
