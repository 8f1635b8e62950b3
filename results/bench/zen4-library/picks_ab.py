"""Same process, 2 threads, batch 1, seq 128: the bench's noisy library picks against all-dense."""
import copy, time
import numpy as np
import workbench, torch
from workbench.bench.models import distilbert, minilm, make_inputs
from workbench.runtime import compile_model
from workbench.runtime.engine import Engine
from workbench_ext import cpu
cpu.set_num_threads(2); torch.set_num_threads(2)
ROLES = ("qkv", "out", "ffn1", "ffn2")
for label, make, code in (("minilm", minilm, "DDDL DDDD LDLD LDDD DDDD LDDD"), ("distilbert", distilbert, "DDDD DDDD DDDD DDDD DLDD DDDD")):
    m = make().eval()
    dense = compile_model(m, kernel_choice="dense")
    meta = copy.deepcopy(dense.meta)
    for i, layer in enumerate(code.split()):
        for role, c in zip(ROLES, layer):
            if c == "L":
                meta["linears"][f"layers.{i}.{role}"]["kind"] = "int8_library"
    picked = Engine(meta, dense.tensors)
    inp = make_inputs(m, 1, 128); ids, mask = inp["input_ids"].numpy(), inp["attention_mask"].numpy()
    assert np.array_equal(picked(ids, mask), dense(ids, mask))
    ts = {"dense": [], "picks": []}
    for r in range(60):
        for k, e in (("dense", dense), ("picks", picked)):
            time.sleep(0.02); e(ids, mask)
            t = time.perf_counter(); e(ids, mask); ts[k].append(time.perf_counter() - t)
    md = {k: float(np.median(v)) * 1e3 for k, v in ts.items()}
    print(label, code, {k: round(v, 3) for k, v in md.items()}, f"dense/picks speed ratio {md['picks']/md['dense']:.3f}")
