"""Runs the tour's notebooks in the background of the test session (used by conftest.py and
tests/test_notebooks.py; not a test module).

The rest of the suite keeps about one of the two CI cores busy (1.17 on average, measured): most
tests are single-threaded Python, or wait on a subprocess. So the notebooks start with the
session, one at a time on one thread (lane 1) at the lowest CPU priority, so they take only the
time the suite leaves idle; their tests run last (conftest moves them), and when the first of
those starts every other test has finished and a second lane joins. Meanwhile the test process
runs torch on one thread (conftest.py says why). Measured on a clean clone, 2-core EPYC, the
whole suite: 1125 s with the notebooks beside it at the same priority and two torch threads,
1037 s at the lowest priority, 784 s with one torch thread too. The suite without the notebooks
took 787 s the same hour; run after it, two at a time, they had taken another 335 s in CI.

First the shared quick teacher is trained into the stage cache, so no two notebooks train it at
once; then the longest notebooks go first.

Each notebook runs in its own papermill process with an environment copied when the session
starts, so tests that change os.environ meanwhile (a temporary WORKBENCH_CACHE, say) do not leak
into it. Results go to a temporary folder; the committed notebooks keep the outputs of a real run.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
KERNEL = "workbench-test-python-1thread"
WEIGHT_FILES = {".safetensors", ".bin", ".onnx", ".pt", ".npz"}
# seconds each took on one thread, two at a time on 2 cores (measured in session 25): the longest go first
MEASURED_S = {"06_sweep_and_pareto": 115, "11_teachers_and_data": 104, "08_structural_pruning": 88,
              "09_dynamic_inference": 74, "07_layerwise_distillation": 64, "10_quantization": 53,
              "02_distillation": 44, "03_pruning": 42, "01_quickstart": 39, "04_quantization_and_runtime": 34,
              "05_kernels_and_benchmark": 29}
NO_TEACHER = ("05_kernels_and_benchmark",)  # needs no tour.recipe teacher: may run before it is trained
QUIET = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WORKBENCH_PROGRESS": "0", "OMP_NUM_THREADS": "1",
         "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error", "MPLBACKEND": "Agg"}
WARM_TEACHER = """
import sys, tour
from workbench.pipeline import PipelineRun, PipelineSpec
spec = PipelineSpec.from_dict(tour.recipe("warm-teacher", [], True))
PipelineRun(spec, quick=True, results_root=sys.argv[1], run_name="quick-warm-teacher").run()
"""

NICE = shutil.which("nice") is not None
Job = Callable[[], object]


class NotebookLanes:
    """`start()` the selected notebooks in the background; `result(stem)` waits for one (and, the
    first time, opens the second lane); `stop()` kills what still runs."""

    def __init__(self, selected: list[Path], root: Path) -> None:
        self.root = root
        self.env = {**os.environ, **QUIET}
        self.env["JUPYTER_PATH"] = os.pathsep.join([str(self._write_kernelspec(root))]
                                                   + ([os.environ["JUPYTER_PATH"]] if "JUPYTER_PATH" in os.environ else []))
        self.futures: dict[str, Future] = {}
        self._jobs: queue.Queue[tuple[Future, Job] | None] = queue.Queue()
        self._second_lane = threading.Event()
        self._stopped = threading.Event()
        self._live: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        free = [p for p in selected if p.stem in NO_TEACHER]
        rest = sorted((p for p in selected if p.stem not in NO_TEACHER), key=lambda p: -MEASURED_S.get(p.stem, 300))
        warm = self._queue(self._warm_teacher) if rest else None
        for path in rest + free:  # the one that needs no teacher last: it is short

            def job(path: Path = path) -> tuple[Path, subprocess.CompletedProcess]:
                if path.stem not in NO_TEACHER:
                    proc = warm.result()
                    assert proc.returncode == 0, "training the notebooks' teacher failed:\n" + proc.stderr[-3000:]
                return self._execute(path)

            self.futures[path.stem] = self._queue(job)
        self._lanes = [threading.Thread(target=self._lane, args=(i,), daemon=True, name=f"notebook-lane-{i}")
                       for i in (1, 2)]

    def start(self) -> "NotebookLanes":
        for lane in self._lanes:
            lane.start()
        return self

    def result(self, stem: str) -> tuple[Path, subprocess.CompletedProcess]:
        """The executed notebook and its papermill process. The notebook tests run last, so once
        one waits here no other test needs the second core."""
        self._second_lane.set()
        return self.futures[stem].result()

    def stop(self) -> None:
        self._stopped.set()
        self._second_lane.set()
        for _ in self._lanes:
            self._jobs.put(None)
        with self._lock:
            for proc in self._live:
                proc.kill()
        for lane in self._lanes:
            lane.join()
        for fut in self.futures.values():
            fut.cancel()

    # ---- inside the lanes --------------------------------------------------------------------
    def _queue(self, job: Job) -> Future:
        fut: Future = Future()
        self._jobs.put((fut, job))
        return fut

    def _lane(self, number: int) -> None:
        if number > 1:
            self._second_lane.wait()
        while not self._stopped.is_set():
            item = self._jobs.get()
            if item is None:
                return
            fut, job = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(job())
            except BaseException as e:  # noqa: BLE001 -- handed to the waiting test
                fut.set_exception(e)

    def _run(self, cmd: list[str], **kw) -> subprocess.CompletedProcess:
        """`subprocess.run` at the lowest CPU priority (the notebooks take the time the suite
        leaves idle), killed by `stop()` (a session that ends early does not wait)."""
        cmd = (["nice", "-n", "19"] if NICE else []) + cmd
        # a working directory of its own: the lanes start processes while tests run in the main
        # thread, and a test that chdirs into its tmp_path (deleted when it passes) would otherwise
        # hand that folder to the process (papermill failed at os.getcwd() once, in a clean-clone CI)
        kw.setdefault("cwd", REPO / "notebooks")
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env,
                              **kw) as proc:
            with self._lock:
                if self._stopped.is_set():
                    proc.kill()
                self._live.add(proc)
            try:
                out, err = proc.communicate()
            finally:
                with self._lock:
                    self._live.discard(proc)
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    def _warm_teacher(self) -> subprocess.CompletedProcess:
        """Trains the notebooks' shared quick teacher into the stage cache (`tour.recipe` with no
        stages after it: the same stage key as every notebook's teacher)."""
        proc = self._run([sys.executable, "-c", WARM_TEACHER, str(self.root / "warm-teacher")], cwd=REPO / "notebooks")
        if proc.returncode == 0:  # the teacher is in the stage cache; its run folder is not needed
            shutil.rmtree(self.root / "warm-teacher", ignore_errors=True)
        return proc

    def _execute(self, path: Path) -> tuple[Path, subprocess.CompletedProcess]:
        """Runs one notebook in quick mode into root/<name>/; the executed copy and the process."""
        out_dir = self.root / path.stem
        out_dir.mkdir()
        out = out_dir / path.name
        proc = self._run([sys.executable, "-m", "papermill", str(path), str(out), "-p", "quick", "True",
                          "-p", "results_root", str(out_dir / "results"), "-k", KERNEL, "--cwd", str(path.parent),
                          "--no-progress-bar", "--execution-timeout", "600"])
        if proc.returncode == 0:  # the test reads only the executed notebook: drop its runs' weights
            for f in (out_dir / "results").rglob("*"):  # (~3.5 GB for all notebooks, a full disk once)
                if f.suffix in WEIGHT_FILES and f.is_file():
                    f.unlink()
        return out, proc

    @staticmethod
    def _write_kernelspec(root: Path) -> Path:
        """A kernelspec running ipykernel with this interpreter (the .venv), whatever PATH says."""
        spec = root / "jupyter" / "kernels" / KERNEL
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "workbench (tests, one thread)", "language": "python"}))
        return root / "jupyter"
