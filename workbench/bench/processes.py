"""The bench's engine processes: their environment (threads, OpenMP waiting policy, offline hub),
one worker process per engine (`run_worker`), and timing a group of engines one after another or
in turns (`time_engines`). Used by `workbench bench`, `--run`, the pipeline's speed worker and the
sweep's peers, so every measured process starts alike."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from workbench.bench.engines import ENGINES
from workbench.bench.models import safe_name

REPO_ROOT = Path(__file__).resolve().parents[2]


def exit_reason(returncode: int | None, log: Path) -> str:
    """Why an engine process ended without a result: its exit code (a signal by name) and the
    last line of its log, or, after a crash, the two innermost Python frames faulthandler
    printed (where in the engine the process died: a compiled kernel has no frame of its own,
    so the innermost is the Python code that called it)."""
    code = f"{returncode}"
    if returncode is not None and returncode < 0:
        try:
            code += f" ({signal.Signals(-returncode).name})"
        except ValueError:
            pass
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.exists() else []
    fatal = next((i for i, ln in enumerate(lines) if ln.startswith("Fatal Python error")), None)
    if fatal is not None:
        frames = [ln.strip() for ln in lines[fatal:] if ln.strip().startswith("File ")][:2]
        detail = lines[fatal].strip() + (f", in {' < '.join(frames)}" if frames else "")
    else:
        detail = lines[-1] if lines else ""
    return f"engine process exited with code {code}" + (f": {detail[:300]}" if detail else "")


def child_env(threads: int) -> dict[str, str]:
    """Every engine's process: the thread count, torch's OpenMP waiting policy
    (`workbench_ext.OPENMP_DEFAULTS`, unless exported: torch starts the runtime before anything
    could set it, so it must be in the environment), offline hub."""
    from workbench_ext import openmp_defaults

    env = openmp_defaults(dict(os.environ))
    n = str(threads)
    env.update({
        "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
        "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
        "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p]),
    })
    return env


def run_worker(module: str, spec: dict[str, Any], work: Path, tag: str, threads: int,
               timeout: float) -> list[dict[str, Any]] | str:
    """Run `python -m module spec.json result.json` in a fresh process with the bench's thread
    environment; its result rows, or why there are none (the log's last line, a timeout...)."""
    spec_f, res_f, log_f = work / f"{tag}.json", work / f"{tag}.result.json", work / f"{tag}.log"
    spec_f.write_text(json.dumps(spec))
    try:
        with open(log_f, "w") as log:
            proc = subprocess.run([sys.executable, "-m", module, str(spec_f), str(res_f)],
                                  stdout=log, stderr=subprocess.STDOUT, env=child_env(threads),
                                  cwd=str(REPO_ROOT), timeout=timeout)
        if res_f.exists():
            return json.loads(res_f.read_text())
        return exit_reason(proc.returncode, log_f)
    except subprocess.TimeoutExpired:
        return f"engine process timed out after {timeout:.0f} s"
    except OSError as exc:
        return f"could not start engine process: {exc}"


def _engine_tag(spec: dict[str, Any]) -> str:
    return f"{safe_name(spec['model'])}__{spec['engine']}__t{spec['threads']}"


def _run_child(spec: dict[str, Any], work: Path, timeout: float) -> list[dict[str, Any]]:
    """One engine process (`workbench.bench.worker`) for `spec`; its rows, or failed rows saying why."""
    return _rows_or_failed(spec, run_worker("workbench.bench.worker", spec, work, _engine_tag(spec), spec["threads"], timeout))


def time_engines(specs: list[dict[str, Any]], work: Path, timeout: float, interleaved: bool,
                 progress: Callable[[str], None] = lambda text: None
                 ) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(spec, its rows) for each spec, failed rows saying why where an engine has none. Interleaved:
    the engines take turns, one timed run each (`workbench.bench.interleave`; the specs share model,
    threads, batches and runs), and all rows come at the end; otherwise one engine after another,
    each one's rows as soon as it is done (a caller that writes them keeps them through a kill)."""
    if interleaved and len(specs) > 1:
        from workbench.bench import interleave

        results = interleave.run_group(specs, work, [_engine_tag(x) for x in specs], child_env(int(specs[0]["threads"])),
                                       str(REPO_ROOT), timeout, progress)
        yield from ((x, _rows_or_failed(x, got)) for x, got in zip(specs, results))
        return
    for x in specs:
        progress(x["engine"])
        yield x, _run_child(x, work, timeout)


def _rows_or_failed(spec: dict[str, Any], rows: list[dict[str, Any]] | str) -> list[dict[str, Any]]:
    if not isinstance(rows, str):
        return rows
    base = {"model": spec["model"], "engine": spec["engine"], "threads": spec["threads"],
            "seq_len": spec["seq_len"], "runs": spec["runs"], "sparsity": ENGINES[spec["engine"]].sparsity}
    return [{**base, "batch": b, "status": "failed", "error": rows} for b in spec["batches"]]
