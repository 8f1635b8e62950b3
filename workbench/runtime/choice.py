"""Per-layer kernel choice at compile time: each Linear runs on the kernel that is fastest for it.

    engine = compile_model(model, kernel_choice="measure", choice_shape=(1, 128))
    engine.describe()["linears"]["layers.0.ffn1"]["choice"]   # {"mode": "measure", "ms": {...}}

`kernel_choice` modes:

* ``measure`` (the `workbench_runtime` recipe's default): every candidate kernel is built and
  timed on a random input at the layer's real shape (batch x seq rows; batch rows for the last
  layer's attention output / FFN and the heads, which run on the [CLS] rows only), in this
  process with its thread count; after one warm-up call each, the candidates take turns for
  `TIMED_CALLS` rounds and each one's fastest call counts (a few ms per layer); sparse must win
  by `SPARSE_MARGIN`. Candidates: the dense kernel, the 1x4 block-sparse one when at least
  `MIN_SPARSITY` of the layer's blocks are zero (below that it never wins: it does the same
  multiply-adds with index overhead), and on AMX and AVX-512 VNNI CPUs the tile-sparse one
  (`int8.TileSparseInt8Linear`: skips whole 16x64 weight blocks) when at least
  `MIN_TILE_SPARSITY` of those blocks are zero -- AMX cannot skip 1x4 blocks inside a tile, and
  on VNNI a kept tile shares each activation load among its 16 columns, which the 1x4 kernel
  cannot. Ties go to dense.
  With more batch sizes (`compile_model(choice_batches=...)`) each is timed too, and a layer whose fastest kernel
  changes with the row count keeps both (`RowSwitch`: the switch sits at the geometric mean of
  the two timed row counts) -- block-sparse wins at batch 1 and can lose at batch 8, where the
  dense kernel's register blocking pays off.
* ``dense`` / ``sparse``: every layer on that kernel (deterministic; tests, ablations).
* ``threshold``: block sparsity >= `sparse_threshold` -> sparse (the rule before this module;
  `compile_model`'s default, deterministic).

Dense and sparse int8 kernels compute the same exact s32 sums and the same epilogue, so the
choice never changes an int8 engine's outputs (tests/test_runtime_choice.py); fp32 dense (BLAS)
and fp32 sparse agree within fp32 rounding.

The library kernel (``int8_library``, `int8.LibraryInt8Linear`): torch's `_int_mm`, oneDNN's
exact s8 x s8 -> s32 GEMM, between this package's per-token quantization and epilogue, so its
outputs are the dense kernel's bits. It is a `measure` candidate of every int8 Linear (not the
static-grid ones) where it runs; it must win by `LIBRARY_MARGIN`, and its picks stay only if whole
forwards with them are faster (`workbench.runtime.library_check`). On the Zen 4
development machine (AVX-512 VNNI) they never are: the layer 128 x 768 -> 3072 on 2 threads took
0.82 ms against the dense kernel's 0.70 (best of 40 calls; results/bench/zen4-library/, README
"Library kernel").
It is there for CPUs where oneDNN is the faster one, e.g. AMX cores, where this package's own
AMX kernel is short of the hardware (results/bench/emr-amx/). ``library``: every int8 Linear on
it (ablations; the bench's `wb-int8-onednn`).

Before `_int_mm` (exact, any quantization), torch's fbgemm was measured as a third candidate and
left out: `torch.ops.quantized.linear_dynamic` and the static
`linear_with_input_q_dq_qweight_dq_output_fp32` quantize activations per tensor (outputs would
change with the choice) and were never faster on a Zen 5 (1 thread, 128 x 768 x 2304: ours 0.51
ms, fbgemm dynamic 1.50 / static 0.64).
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np

from workbench.runtime import kernels as K
from workbench.runtime import static as S

MODES = ("measure", "dense", "sparse", "threshold", "library")
MIN_SPARSITY = 0.3
"""`measure`: the sparse kernel is a candidate from this fraction of all-zero 1x4 blocks."""
MIN_TILE_SPARSITY = 0.25
"""`measure`, AMX and AVX-512 VNNI only: the tile-sparse kernel is a candidate from this fraction
of all-zero 16x64 blocks."""
TIMED_CALLS = 7
MARGIN = 0.10
"""`measure`: a candidate other than the dense kernel (sparse, tile-sparse) must beat it by this
fraction to be chosen. Timing one Linear alone for a few calls is noisy (10-20 % on a shared
2-core VM); without a margin a 70 %-sparse DistilBERT picked sparse for 7 of 26 Linears and ran
0.83x as fast as its dense engine."""
LIBRARY_MARGIN = 0.25
"""`measure`: the library kernel's margin. Its calls also hand the cores from this package's pool
to torch's OpenMP threads and back, which a layer timed alone does not show: in one bench of the
dense DistilBERT (Zen 4, 2 threads) it was kept, at the 10 % margin, for 4 of the 6
attention-output Linears (~0.2 ms each on our kernel, 0.33-0.50 ms on it in later timings).
Picks that pass this margin are then checked on whole forwards (`library_check`)."""
ABBREV = {"int8_dense": "D", "int8_sparse": "S", "int8_tile_sparse": "T", "int8_library": "L", "fp32_dense": "f",
          "fp32_sparse": "s", "bf16_dense": "b", "empty": "-"}


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"kernel_choice must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def kinds(family: str) -> tuple[str, str]:
    """(dense, sparse) kernel kinds of a weight family: int8, fp32 or bf16 (bf16 has no sparse
    kernel: its sparse layers run the fp32 block-sparse one)."""
    return f"{family}_dense", ("int8_sparse" if family == "int8" else "fp32_sparse")


def layer_rows(name: str, num_layers: int, batch: int, seq: int) -> int:
    """Rows a Linear multiplies in a static forward at (batch, seq)."""
    parts = name.split(".")
    if parts[0] == "embeddings":
        return batch * seq  # embeddings.project: every token
    if parts[0] != "layers":
        return batch  # head.*, exit.*: the [CLS] rows
    if int(parts[1]) == num_layers - 1 and parts[2] != "qkv":
        return batch  # the CLS-only last layer
    return batch * seq


def time_kernel(name: str, kind: str, fn: Callable[[np.ndarray], Any], x: np.ndarray) -> float:
    """Seconds of one call of `fn(x)`. (Tests replace this function with a fake timer.)"""
    t0 = time.perf_counter()
    fn(x)
    return time.perf_counter() - t0


def candidates(family: str, sparsity: float, tile_sparsity: float = 0.0, library: bool = True) -> list[str]:
    """The kernel kinds `measure` times for one Linear, dense first. `library`: the library
    kernel may run this layer (False for static-grid layers, which have their own)."""
    dense, sparse = kinds(family)
    out = [dense]
    if sparsity >= MIN_SPARSITY:
        out.append(sparse)
    if family == "int8" and tile_sparsity >= MIN_TILE_SPARSITY and K.has_tile_sparse():
        out.append("int8_tile_sparse")
    if family == "int8" and library and K.has_library_int8():
        out.append("int8_library")
    return out


def _timed(name: str, kinds_: list[str], build: Callable[[str], Callable[[np.ndarray], Any]],
           in_features: int, rows: int) -> tuple[str, dict[str, float]]:
    """Every candidate warmed up, then `TIMED_CALLS` rounds in which they take turns; each keeps
    its fastest call. Taking turns puts a slow spell of the shared machine on all candidates
    instead of on whichever happened to be timed then. Another kind must beat the dense one
    (`kinds_[0]`) by `MARGIN` (the library kernel by `LIBRARY_MARGIN`); the fastest of those that
    do wins."""
    x = np.random.default_rng(0).standard_normal((rows, in_features)).astype(np.float32)
    fns = {k: build(k) for k in kinds_}
    for fn in fns.values():
        fn(x)
    best_s = {k: float("inf") for k in fns}
    for _ in range(TIMED_CALLS):
        for k, fn in fns.items():
            best_s[k] = min(best_s[k], time_kernel(name, k, fn, x))
    ms = {k: v * 1e3 for k, v in best_s.items()}
    dense = kinds_[0]
    beat = [k for k in kinds_[1:]
            if ms[k] < ms[dense] * (1.0 - (LIBRARY_MARGIN if k == "int8_library" else MARGIN))]
    best = min(beat, key=ms.__getitem__) if beat else dense
    return best, {k: round(v, 4) for k, v in ms.items()}


def choose(name: str, family: str, sparsity: float, build: Callable[[str], Callable[[np.ndarray], Any]],
           in_features: int, *, mode: str, threshold: float, rows: int,
           more_rows: tuple[int, ...] = (), tile_sparsity: float = 0.0,
           library: bool = True) -> tuple[str, dict[str, Any]]:
    """The kernel kind for one Linear and how it was chosen (kept in the engine meta).
    `build(kind)` makes the layer's callable on that kind (only called by `measure`).
    `more_rows`: further row counts to time (`measure`); the choice then records
    `by_rows: [{"rows", "kind", "ms"}, ...]` and the engine switches kernels by row count.
    `tile_sparsity`: fraction of all-zero 16x64 weight blocks (int8; 0 keeps the tile-sparse
    kernel out). `library`: whether the library kernel may run this layer (`candidates`)."""
    dense, sparse = kinds(family)
    if mode == "library" and family == "int8" and library:
        return "int8_library", {"mode": mode}
    if mode in ("dense", "library"):   # library: fp32 / bf16 and static-grid layers stay dense
        return dense, {"mode": mode}
    if mode == "sparse":
        return sparse, {"mode": mode}
    if mode == "threshold":
        return (sparse if sparsity >= threshold else dense), {"mode": mode, "threshold": threshold}
    kinds_ = candidates(family, sparsity, tile_sparsity, library)
    if len(kinds_) == 1:
        return dense, {"mode": mode, "rows": rows, "ms": None}  # nothing to compare
    best, ms = _timed(name, kinds_, build, in_features, rows)
    info: dict[str, Any] = {"mode": mode, "rows": rows, "ms": ms}
    more = sorted({int(r) for r in more_rows if int(r) > rows})
    if more:
        info["by_rows"] = [{"rows": rows, "kind": best, "ms": ms}]
        for r in more:
            kind, ms_r = _timed(name, kinds_, build, in_features, r)
            info["by_rows"].append({"rows": r, "kind": kind, "ms": ms_r})
    return best, info


def row_ranges(lm: dict[str, Any]) -> list[tuple[int, str]]:
    """[(from_rows, kind), ...] of one Linear: where its kernel changes with the row count
    (one entry when it never does)."""
    ranges = [(0, lm["kind"])]
    by_rows = (lm.get("choice") or {}).get("by_rows") or []
    for prev, cur in zip(by_rows, by_rows[1:]):
        if cur["kind"] != ranges[-1][1]:
            ranges.append((int(math.ceil(math.sqrt(prev["rows"] * cur["rows"]))), cur["kind"]))
    return ranges


def kind_at(lm: dict[str, Any], rows: int) -> str:
    """The kernel kind one Linear runs at `rows` rows."""
    return [kind for start, kind in row_ranges(lm) if start <= rows][-1]


class RowSwitch:
    """A Linear with one kernel per range of row counts (`row_ranges`); outputs never depend
    on which runs (the int8 kernels are exact; fp32 ones agree to rounding)."""

    def __init__(self, parts: list[tuple[int, Callable[..., Any]]]) -> None:
        self.parts = [fn for _, fn in parts]
        self.starts = [r for r, _ in parts]

    def __call__(self, x: np.ndarray, **kw: Any) -> Any:
        i = len(self.starts) - 1
        while i and x.shape[0] < self.starts[i]:
            i -= 1
        return self.parts[i](x, **kw)


def build_linear(name: str, lm: dict[str, Any], tensors: dict[str, np.ndarray],
                 bias: np.ndarray | None) -> tuple[Callable[[np.ndarray], Any], str]:
    """The callable for one engine meta entry and the name of the implementation it runs on."""
    ranges = row_ranges(lm)
    if len(ranges) > 1:
        built = [(r, build_linear(name, {**lm, "kind": kind, "choice": {}}, tensors, bias)) for r, kind in ranges]
        impl = "; ".join(f"from {r} rows {b[1]}" for r, b in built)
        return RowSwitch([(r, b[0]) for r, b in built]), impl
    if lm.get("static"):
        return S.make_static_linear(name, lm, tensors, bias)
    return K.make_linear(lm["kind"], tensors[f"{name}.weight"], tensors.get(f"{name}.scale"), bias,
                         act_bits=int(lm.get("act_bits", 8)))


# ---- reporting ---------------------------------------------------------------------------------
def kind_counts(meta: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for lm in meta["linears"].values():
        kind = lm["kind"] + ("+static" if lm.get("static") else "")
        out[kind] = out.get(kind, 0) + 1
    return out


def layer_summary(meta: dict[str, Any]) -> str:
    """One line: the kernel of every Linear, e.g. `measure: qkv/out/ffn1/ffn2 DSSS DSSS ...;
    head DD (D int8 dense, S int8 sparse, ...)` -- for bench rows and logs."""
    lin = meta["linears"]
    code = lambda n, rows=0: ABBREV.get(kind_at(lin[n], rows), "?") if n in lin else "."  # noqa: E731

    def layers(rows: int) -> str:
        return " ".join("".join(code(f"layers.{i}.{r}", rows) for r in ("qkv", "out", "ffn1", "ffn2"))
                        for i in range(meta["num_layers"]))

    used = sorted({kind for lm in lin.values() for _, kind in row_ranges(lm)})
    legend = ", ".join(f"{ABBREV.get(k, '?')} {k}" for k in used)
    static = " static-grid" if any(lm.get("static") for lm in lin.values()) else ""
    # where layers change kernel at larger row counts, e.g. at batch 8
    switches = sorted({r for lm in lin.values() for r, _ in row_ranges(lm)[1:]})
    more = "".join(f"; from {r} rows {layers(r)}" for r in switches)
    project = f"embedding projection {code('embeddings.project')}; " if "embeddings.project" in lin else ""
    return (f"{meta.get('kernel_choice', 'threshold')}{static}: {project}qkv/out/ffn1/ffn2 {layers(0)}; "
            f"head {code('head.pre')}{code('head.cls')}{more} ({legend})")


def kernels_of(model: Any) -> dict[str, int] | None:
    """Kernel kinds and counts of a compiled model (an `EngineModule` or an `Engine`), None for
    any other model: what a run's speed metrics record as `kernels`."""
    engine = getattr(model, "engine", model)
    meta = getattr(engine, "meta", None)
    if not isinstance(meta, dict) or "linears" not in meta:
        return None
    return kind_counts(meta)
