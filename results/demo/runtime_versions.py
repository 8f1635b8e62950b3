"""The demo's runtime stage under several versions of the code, on the demo's own pruned student.

    python results/demo/runtime_versions.py results/demo/artifacts/pruned/model \
        before=/tmp/v-4711f92 dec02=/tmp/v-18bcaa4 now=.  [--rounds 3] [--pause 0.1] > results/demo/runtime_versions.txt

Each NAME=CLONE is a checkout with its own built `workbench_ext` (`python setup.py build_ext
--inplace` there). The versions take turns, one process each per round, so a change of the shared
machine's speed hits them alike. Every process compiles the pruned student as that version's
`workbench_runtime` stage does (its `compile_model` defaults plus `kernel_choice="measure"` where
the version has it), then:
- test accuracy on all rt-sentiment test sentences (this checkout's split, handed to every
  version as data; first round only: the outputs do not change from round to round);
- batch-1 and batch-8 forwards at sequence length 128 (no padding), timed in turns with PyTorch's
  dynamic int8 of the same model (`quantize_dynamic`, x86 engine: the demo's int8 stage) in the
  same process, 2 threads, each turn after a 0.1 s pause and one untimed call as in `workbench
  bench`: the speed-up over torch int8 is a same-process ratio. `--pause 0` runs the turns back
  to back with no untimed call (torch's spinning threads then overlap our turn).
The last lines summarize: per version the median forward and the median same-process ratio.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPEATS = 15          # timed turns per engine and batch in one process
CALLS = {1: 10, 8: 2}  # forwards per timed turn
PAUSE_S = 0.1          # before each turn (workbench.bench.worker.QUIET_S); --pause 0: turns back to back


def _worker(model_dir: str, test_file: str, pause_s: float) -> dict:
    import workbench  # first, as a user's script would (a version may set OpenMP defaults on import)
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from workbench.runtime import compile_model

    torch.set_num_threads(2)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    params = inspect.signature(compile_model).parameters
    kwargs = {"quantize": True, "sparse_threshold": 0.5}
    if "kernel_choice" in params:
        kwargs["kernel_choice"] = "measure"
    engine = compile_model(model, **kwargs)
    qmodel = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    out: dict = {"workbench": os.path.dirname(workbench.__file__), "compile": kwargs}
    if test_file:
        with open(test_file) as f:
            test = json.load(f)
        pred = []
        for i in range(0, len(test["text"]), 32):
            enc = tok(test["text"][i:i + 32], padding=True, truncation=True, max_length=128, return_tensors="np")
            pred.append(engine(enc["input_ids"], enc["attention_mask"]).argmax(1))
        out["accuracy"] = float(np.mean(np.concatenate(pred) == np.array(test["label"])))
        out["test_sentences"] = len(test["label"])
    for batch, calls in CALLS.items():
        enc = tok(["x " * 200] * batch, truncation=True, max_length=128, return_tensors="np")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        tids, tmask = torch.from_numpy(ids), torch.from_numpy(mask)

        def ours() -> None:
            engine(ids, mask)

        def torch_int8() -> None:
            with torch.inference_mode():
                qmodel(input_ids=tids, attention_mask=tmask)

        for fn in (ours, torch_int8):
            for _ in range(3):
                fn()
        times: dict[str, list[float]] = {"ours": [], "torch_int8": []}
        for _ in range(REPEATS):
            for name, fn in (("ours", ours), ("torch_int8", torch_int8)):
                # as in `workbench bench`: a pause in which the other engine's threads stop
                # spinning (torch's OpenMP threads spin ~10 ms after a call and would share the
                # cores with ours), then one untimed call
                if pause_s:
                    time.sleep(pause_s)
                    fn()
                t = time.perf_counter()
                for _ in range(calls):
                    fn()
                times[name].append((time.perf_counter() - t) / calls * 1e3)
        ratio = np.array(times["torch_int8"]) / np.array(times["ours"])
        out[f"b{batch}"] = {"ours_ms": float(np.median(times["ours"])),
                            "torch_int8_ms": float(np.median(times["torch_int8"])),
                            "ratio": float(np.median(ratio))}
    return out


def main() -> None:
    if sys.argv[1] == "--worker":
        print(json.dumps(_worker(sys.argv[2], sys.argv[3], float(sys.argv[4]))), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("versions", nargs="+", help="NAME=CLONE")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pause", type=float, default=PAUSE_S, help="seconds before each turn; 0: back to back")
    a = parser.parse_args()
    model_dir, rounds, pause_s = os.path.abspath(a.model_dir), a.rounds, a.pause
    versions = dict(v.split("=", 1) for v in a.versions)
    # the test split from this checkout's loader, handed to every version as data
    from workbench.data.tasks import load_task
    test = load_task("rt-sentiment", seed=0).splits["test"]
    test_file = os.path.join(tempfile.mkdtemp(), "test.json")
    with open(test_file, "w") as f:
        json.dump({"text": list(test["text"]), "label": [int(v) for v in test["label"]]}, f)
    results: dict[str, list[dict]] = {name: [] for name in versions}
    for r in range(rounds):
        for name, clone in versions.items():
            clone = os.path.abspath(clone)
            env = dict(os.environ, PYTHONPATH=clone)
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", model_dir,
                                   test_file if r == 0 else "", str(pause_s)], cwd=clone, env=env, capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"{name} ({clone}) failed:\n{proc.stderr[-3000:]}")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            if not res["workbench"].startswith(clone):
                sys.exit(f"{name}: imported workbench from {res['workbench']}, not {clone}")
            rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True)
            res["commit"] = rev.stdout.strip()
            results[name].append(res)
            print(f"round {r + 1} {name}: {json.dumps(res)}", flush=True)
    print()
    print("| version | commit | test accuracy | b=1 ms | b=1 vs torch int8 | b=8 ms | b=8 vs torch int8 |")
    print("|---|---|---|---|---|---|---|")
    for name, rs in results.items():
        cells = []
        for b in ("b1", "b8"):
            ms = [x[b]["ours_ms"] for x in rs]
            ratio = [x[b]["ratio"] for x in rs]
            cells.append(f"{np.median(ms):.2f} ({min(ms):.2f}-{max(ms):.2f})")
            cells.append(f"{np.median(ratio):.2f}x ({min(ratio):.2f}-{max(ratio):.2f})")
        print(f"| {name} | `{rs[0]['commit']}` | {rs[0]['accuracy']:.4f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
