"""Per-layer kernel choice (`workbench.runtime.choice`): the choice follows the timer (a fake one
here: tests never assert wall-clock speed), a sparser model never gets a slower kernel than
dense, and the outputs do not depend on the choice (dense and block-sparse int8 are both exact
integer GEMMs with the same epilogue)."""
import copy
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("workbench_ext.int8", reason="workbench_ext not built")
from workbench.bench.models import prune  # noqa: E402
from workbench.runtime import EngineModule, compile_model  # noqa: E402
from workbench.runtime import choice as C  # noqa: E402


def _ids():
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 120, (3, 10))
    ids[:, 0] = 2
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    return ids, mask


def _cost(kind: str, fn, x) -> float:
    """A fake timer: dense pays for every multiply-add, sparse for its non-zero blocks with 30%
    overhead plus a fixed cost."""
    layer = getattr(fn, "layer", fn)  # a static layer wraps its kernel
    rows = x.shape[0]
    if kind.endswith("sparse"):
        return 1e-9 * (1.3 * rows * layer.nnz_blocks * 4 + 2000)
    return 1e-9 * rows * layer.N * layer.K


@pytest.fixture
def pruned(tiny_bert):
    prune(tiny_bert, 0.8)
    return tiny_bert


@pytest.fixture
def without_library(monkeypatch):
    """The library kernel (torch's `_int_mm`) out of the candidates, for the tests about the
    dense / sparse choice (its own tests are below)."""
    from workbench.runtime import kernels as K

    monkeypatch.setattr(K, "has_library_int8", lambda: False)


def test_choice_follows_the_timer(pruned, monkeypatch, without_library):
    fast_sparse = {"layers.0.qkv", "layers.2.ffn1", "layers.3.out"}
    timed = []

    def fake(name, kind, fn, x):
        timed.append((name, kind, x.shape))
        return 1.0 if (kind == "int8_sparse") == (name in fast_sparse) else 2.0

    monkeypatch.setattr(C, "time_kernel", fake)
    engine = compile_model(pruned, kernel_choice="measure", choice_shape=(2, 16))
    lin = engine.meta["linears"]
    for name, lm in lin.items():
        if lm["block_sparsity"] >= C.MIN_SPARSITY:
            assert lm["kind"] == ("int8_sparse" if name in fast_sparse else "int8_dense"), name
            assert lm["choice"]["ms"] == ({"int8_dense": 2000.0, "int8_sparse": 1000.0} if name in fast_sparse
                                          else {"int8_dense": 1000.0, "int8_sparse": 2000.0})
        else:  # the head (not pruned): never worth timing
            assert lm["kind"] == "int8_dense" and lm["choice"]["ms"] is None, name
    # timed at the layer's real rows: batch x seq, the [CLS] rows for the last layer's out/FFN
    shapes = {(n, s[0]) for n, _, s in timed}
    assert ("layers.0.qkv", 32) in shapes and ("layers.3.qkv", 32) in shapes and ("layers.3.ffn1", 2) in shapes
    assert ("layers.2.ffn1", 32) in shapes
    summary = engine.describe()["kernels_per_layer"]
    assert summary.startswith("measure: qkv/out/ffn1/ffn2 SDDD DDDD DDSD DSDD; head DD"), summary


def test_candidates_take_turns_and_keep_their_fastest_call(pruned, monkeypatch, without_library):
    """A slow spell of the machine must hit both candidates: the timed calls alternate, and
    each candidate's fastest call counts (here the sparse kernel's 3rd call, the dense one's 5th)."""
    order: dict[str, list[str]] = {}

    def fake(name, kind, fn, x):
        calls = order.setdefault(name, [])
        calls.append(kind)
        n = calls.count(kind)
        return (0.5 if n == 3 else 3.0) if kind == "int8_sparse" else (1.0 if n == 5 else 2.0)

    monkeypatch.setattr(C, "time_kernel", fake)
    engine = compile_model(pruned, kernel_choice="measure", choice_shape=(2, 16))
    lm = engine.meta["linears"]["layers.0.qkv"]
    assert order["layers.0.qkv"] == ["int8_dense", "int8_sparse"] * C.TIMED_CALLS
    assert lm["choice"]["ms"] == {"int8_dense": 1000.0, "int8_sparse": 500.0} and lm["kind"] == "int8_sparse"


@pytest.mark.parametrize("quantize", [True, False])
def test_sparser_model_never_gets_a_slower_kernel(tiny_bert, monkeypatch, quantize):
    monkeypatch.setattr(C, "time_kernel", lambda name, kind, fn, x: _cost(kind, fn, x))
    totals = []
    for sparsity in (0.0, 0.5, 0.7, 0.9):
        model = prune(__import__("copy").deepcopy(tiny_bert), sparsity) if sparsity else tiny_bert
        engine = compile_model(model, quantize=quantize, kernel_choice="measure", choice_shape=(1, 32))
        total = 0.0
        for name, lm in engine.meta["linears"].items():
            ms = lm["choice"].get("ms")
            if ms:
                dense = ms[C.kinds("int8" if quantize else "fp32")[0]]
                assert ms[lm["kind"]] <= dense, name  # never slower than dense
                total += ms[lm["kind"]]
            else:
                assert lm["kind"].endswith("dense")
        totals.append(total)
    assert totals[3] < totals[2] < totals[1]  # sparser: cheaper choices
    assert engine.sparse_layers()  # at 90% the fake timer prefers the sparse kernel


def test_outputs_identical_whichever_kernel(pruned):
    ids, mask = _ids()
    engines = {mode: compile_model(pruned, kernel_choice=mode) for mode in ("dense", "sparse", "threshold", "measure")}
    assert not engines["dense"].sparse_layers()
    assert len(engines["sparse"].sparse_layers()) == len(engines["sparse"].meta["linears"])
    out = {mode: e(ids, mask) for mode, e in engines.items()}
    for mode in out:
        np.testing.assert_array_equal(out[mode], out["dense"], err_msg=mode)
    # fp32: dense BLAS and the sparse fp32 kernel agree within fp32 rounding
    fp = [compile_model(pruned, quantize=False, kernel_choice=m)(ids, mask) for m in ("dense", "sparse")]
    np.testing.assert_allclose(fp[0], fp[1], atol=1e-5)


def test_choice_survives_save_and_load(pruned, tmp_path, monkeypatch):
    monkeypatch.setattr(C, "time_kernel", lambda name, kind, fn, x: 1.0 if kind == "int8_sparse" else 2.0)
    engine = compile_model(pruned, kernel_choice="measure")
    loaded = EngineModule.load(engine.save(tmp_path / "e")).engine
    assert loaded.meta["linears"] == engine.meta["linears"]
    assert loaded.impls == engine.impls and sorted(loaded.sparse_layers()) == sorted(engine.sparse_layers())
    assert C.kernels_of(EngineModule(loaded)) == {"int8_sparse": 16, "int8_dense": 2}
    assert C.kernels_of(pruned) is None


def test_bad_choice_settings_fail(tiny_bert):
    from workbench.config import ConfigError, parse_config
    from workbench.runtime.recipe import WorkbenchRuntimeConfig

    with pytest.raises(ValueError, match="kernel_choice must be one of measure"):
        compile_model(tiny_bert, kernel_choice="fastest")
    with pytest.raises(ValueError, match="dtype"):
        compile_model(tiny_bert, dtype="fp8")
    for shape in [(0, 128), "1x128", (1, 128, 1), (True, 128)]:
        with pytest.raises(ValueError, match=r"choice_shape must be \(batch, seq\), two ints >= 1"):
            compile_model(tiny_bert, kernel_choice="measure", choice_shape=shape)
    where = "stage 'rt' recipe 'workbench_runtime'"
    with pytest.raises(ConfigError, match="'kernel_choice'"):
        parse_config(WorkbenchRuntimeConfig, {"kernel_choice": "fastest"}, where)
    with pytest.raises(ConfigError, match="'choice_shape'"):
        parse_config(WorkbenchRuntimeConfig, {"choice_shape": [1]}, where)
    assert parse_config(WorkbenchRuntimeConfig, {}, where).kernel_choice == "measure"


@pytest.mark.parametrize("sparse_time,want", [(0.95, "int8_dense"), (0.85, "int8_sparse")])
def test_sparse_must_win_by_the_margin(pruned, monkeypatch, without_library, sparse_time, want):
    """Timing noise is 10-20 %: a sparse kernel only a little faster in the setup timing stays dense."""
    monkeypatch.setattr(C, "time_kernel", lambda name, kind, fn, x: sparse_time if kind == "int8_sparse" else 1.0)
    engine = compile_model(pruned, kernel_choice="measure")
    timed = [lm for lm in engine.meta["linears"].values() if lm["choice"].get("ms")]
    assert timed and all(lm["kind"] == want for lm in timed)


def test_kernel_switches_with_the_row_count(pruned, monkeypatch):
    """Timed at batch 2 and batch 8: a layer whose kernel wins at one and loses at the other keeps
    both and picks by the call's row count (switch at the geometric mean of the timed rows);
    outputs are the same either way, and the choice survives save / load."""
    monkeypatch.setattr(C, "time_kernel", lambda name, kind, fn, x:
                        (1.0 if kind == "int8_sparse" else 2.0) if x.shape[0] < 64 else (2.0 if kind == "int8_sparse" else 1.0))
    engine = compile_model(pruned, kernel_choice="measure", choice_shape=(2, 16), choice_batches=(8,))
    lm = engine.meta["linears"]["layers.0.ffn1"]
    assert lm["kind"] == "int8_sparse"
    assert [(b["rows"], b["kind"]) for b in lm["choice"]["by_rows"]] == [(32, "int8_sparse"), (128, "int8_dense")]
    assert C.row_ranges(lm) == [(0, "int8_sparse"), (64, "int8_dense")]
    switch = engine._linears["layers.0.ffn1"]
    assert isinstance(switch, C.RowSwitch) and "from 64 rows" in engine.impls["layers.0.ffn1"]
    assert "; from 64 rows DDDD" in C.layer_summary(engine.meta)
    calls = []
    for i, part in enumerate(switch.parts):
        switch.parts[i] = lambda x, _p=part, _i=i, **kw: calls.append((_i, x.shape[0])) or _p(x, **kw)
    x = np.random.default_rng(0).standard_normal((70, lm["K"])).astype(np.float32)
    for rows in (1, 63, 64, 70):
        switch(x[:rows])
    assert calls == [(0, 1), (0, 63), (1, 64), (1, 70)]
    ids, mask = _ids()
    dense = compile_model(pruned, kernel_choice="dense")
    big_ids, big_mask = np.tile(ids, (3, 1)), np.tile(mask, (3, 1))  # 9 x 10 rows: past the switch
    np.testing.assert_array_equal(engine(big_ids, big_mask), dense(big_ids, big_mask))
    np.testing.assert_array_equal(engine(ids[:1], mask[:1]), dense(ids[:1], mask[:1]))
    loaded = type(engine).load(engine.save(Path(tempfile.mkdtemp()) / "e"))
    assert loaded.impls == engine.impls and isinstance(loaded._linears["layers.0.ffn1"], C.RowSwitch)
    with pytest.raises(ValueError, match="choice_batches"):
        compile_model(pruned, kernel_choice="measure", choice_batches=(0,))


def test_tile_sparse_is_timed_on_amx_and_vnni_for_tile_pruned_layers(tiny_bert, monkeypatch, without_library):
    """On AMX and AVX-512 VNNI (faked elsewhere: the tile-sparse layer then runs the dense kernel
    of this CPU, same bits) a layer pruned in 16x64 blocks gets the tile-sparse kernel as a third
    candidate and keeps it when it is fastest; 1x4-pruned layers (no zero tiles) never time it."""
    from workbench.recipes.prune.magnitude import magnitude_prune_
    from workbench.runtime import kernels as K

    monkeypatch.setattr(K, "has_tile_sparse", lambda: True)
    fake_ms = {"int8_tile_sparse": 0.5, "int8_sparse": 1.5, "int8_dense": 2.0}
    monkeypatch.setattr(C, "time_kernel", lambda name, kind, fn, x: fake_ms[kind])
    model = copy.deepcopy(tiny_bert)
    magnitude_prune_(model, 0.5, block=(16, 64))
    engine = compile_model(model, kernel_choice="measure", choice_shape=(2, 16))
    lin = engine.meta["linears"]
    tiled = [n for n, lm in lin.items() if lm["tile_sparsity"] >= C.MIN_TILE_SPARSITY]
    assert len(tiled) == 16, {n: lm["tile_sparsity"] for n, lm in lin.items()}   # 4 layers x qkv/out/ffn1/ffn2
    for name in tiled:
        assert lin[name]["kind"] == "int8_tile_sparse", name
        assert set(lin[name]["choice"]["ms"]) == {"int8_dense", "int8_sparse", "int8_tile_sparse"}, name
    assert "T" in engine.describe()["kernels_per_layer"]
    ids, mask = _ids()
    np.testing.assert_array_equal(engine(ids, mask), compile_model(model, kernel_choice="dense")(ids, mask))

    one_by_four = prune(copy.deepcopy(tiny_bert), 0.8)
    lin = compile_model(one_by_four, kernel_choice="measure", choice_shape=(2, 16)).meta["linears"]
    assert all(lm["tile_sparsity"] < C.MIN_TILE_SPARSITY for lm in lin.values())
    assert all("int8_tile_sparse" not in (lm["choice"].get("ms") or {}) for lm in lin.values())


@pytest.mark.parametrize("library_time,want", [(0.8, "int8_dense"), (0.7, "int8_library")])
def test_library_kernel_is_timed_for_every_int8_linear_and_kept_only_by_the_margin(tiny_bert, monkeypatch,
                                                                                  library_time, want):
    """torch's `_int_mm` (oneDNN) is a candidate of every int8 Linear, the head included; it is
    kept only when it beats dense by the margin (and whole forwards gain: faked here), and the
    engine's outputs are the dense engine's bits either way (the compiled layer loop runs it like
    any int8 layer)."""
    from workbench.runtime import kernels as K

    if not K.has_library_int8():
        pytest.skip(f"no library kernel here: {K.library_int8_problem()}")
    from workbench.runtime import library_check

    monkeypatch.setattr(C, "time_kernel", lambda name, kind, fn, x: library_time if kind == "int8_library" else 1.0)
    monkeypatch.setattr(library_check, "time_forward", lambda label, engine, ids, mask: 1.0 if label == "with" else 2.0)
    engine = compile_model(tiny_bert, kernel_choice="measure", choice_shape=(2, 16))
    lin = engine.meta["linears"]
    assert all(set(lm["choice"]["ms"]) == {"int8_dense", "int8_library"} and lm["kind"] == want for lm in lin.values())
    summary = engine.describe()["kernels_per_layer"]
    code = "L" if want == "int8_library" else "D"
    assert summary.startswith(f"measure: qkv/out/ffn1/ffn2 {code * 4} {code * 4} {code * 4} {code * 4}; head {code * 2}")
    if want == "int8_library":
        assert all("LibraryInt8Linear" in impl for impl in engine.impls.values())
        assert engine.describe()["layer_loop"].startswith("compiled")
    ids, mask = _ids()
    np.testing.assert_array_equal(engine(ids, mask), compile_model(tiny_bert, kernel_choice="dense")(ids, mask))


def test_library_mode_and_loading_where_the_library_does_not_run(pruned, monkeypatch, tmp_path):
    """`kernel_choice="library"` puts every int8 Linear on it (fp32 engines stay dense); a saved
    engine that chose it loads where torch's kernel does not run on the dense kernel, says so,
    and computes the same outputs."""
    from workbench.runtime import kernels as K

    if not K.has_library_int8():
        pytest.skip(f"no library kernel here: {K.library_int8_problem()}")
    ids, mask = _ids()
    engine = compile_model(pruned, kernel_choice="library")
    assert {lm["kind"] for lm in engine.meta["linears"].values()} == {"int8_library"}
    want = compile_model(pruned, kernel_choice="dense")(ids, mask)
    np.testing.assert_array_equal(engine(ids, mask), want)
    fp32 = compile_model(pruned, quantize=False, kernel_choice="library")
    assert {lm["kind"] for lm in fp32.meta["linears"].values()} == {"fp32_dense"}
    saved = engine.save(tmp_path / "e")
    monkeypatch.setattr(K, "has_library_int8", lambda: False)
    monkeypatch.setattr(K, "library_int8_problem", lambda: "torch._int_mm does not run here (test)")
    loaded = type(engine).load(saved)
    assert all("DenseInt8Linear" in i and "int8_library asked for" in i for i in loaded.impls.values())
    np.testing.assert_array_equal(loaded(ids, mask), want)
    assert "int8_library" not in C.candidates("int8", 0.0)
    monkeypatch.undo()
    assert C.candidates("int8", 0.0) == ["int8_dense", "int8_library"]
    assert C.candidates("int8", 0.0, library=False) == ["int8_dense"]


@pytest.mark.parametrize("batches", [(), (8,)])
def test_library_picks_are_reverted_when_whole_forwards_do_not_gain(tiny_bert, monkeypatch, batches):
    """Layers timed alone prefer the library kernel, but the engine with those picks runs whole
    forwards slower (fake timers): every pick goes back to the dense kernel (at every row count),
    and the meta says what was measured."""
    from workbench.runtime import kernels as K
    from workbench.runtime import library_check

    if not K.has_library_int8():
        pytest.skip(f"no library kernel here: {K.library_int8_problem()}")
    lib_layers = {"layers.0.out", "layers.2.ffn2", "head.pre"}
    monkeypatch.setattr(C, "time_kernel", lambda name, kind, fn, x:
                        0.5 if (kind == "int8_library") == (name in lib_layers) else 1.0)
    forwards = []

    def fake_forward(label, engine, ids, mask):
        forwards.append((label, ids.shape))
        return {"with": 1.0, "without": 0.95}[label]

    monkeypatch.setattr(library_check, "time_forward", fake_forward)
    engine = compile_model(tiny_bert, kernel_choice="measure", choice_shape=(2, 16), choice_batches=batches)
    lin, check = engine.meta["linears"], engine.meta["library_check"]
    assert check["kept"] is False and sorted(check["layers"]) == sorted(lib_layers)
    assert (check["ms_with"], check["ms_without"]) == (1000.0 * (1 + len(batches)), 950.0 * (1 + len(batches)))
    assert {(label, shape) for label, shape in forwards} == {(lb, (b, 16)) for lb in ("with", "without")
                                                             for b in (2, *batches)}
    for name, lm in lin.items():
        assert lm["kind"] == "int8_dense" and all(k == "int8_dense" for _, k in C.row_ranges(lm)), name
        assert ("library_reverted" in lm["choice"]) == (name in lib_layers), name
    assert "L" not in engine.describe()["kernels_per_layer"]
    assert engine.describe()["library_check"] == check
    assert library_check.summary(engine.meta).startswith("library kernel picks (3 Linears) reverted to dense: whole forwards")
    # a gain smaller than the margin is not enough either; a larger one keeps the picks
    monkeypatch.setattr(library_check, "time_forward", lambda label, engine, ids, mask: 0.95 if label == "with" else 1.0)
    assert compile_model(tiny_bert, kernel_choice="measure", choice_shape=(2, 16)).meta["library_check"]["kept"] is False
    monkeypatch.setattr(library_check, "time_forward", lambda label, engine, ids, mask: 0.85 if label == "with" else 1.0)
    kept = compile_model(tiny_bert, kernel_choice="measure", choice_shape=(2, 16))
    assert kept.meta["library_check"]["kept"] is True
    assert {n for n, lm in kept.meta["linears"].items() if lm["kind"] == "int8_library"} == lib_layers
