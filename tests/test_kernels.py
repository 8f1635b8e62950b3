"""Tests for the workbench_ext Cython kernels: every kernel vs a numpy/torch reference, on odd
shapes, for every ISA path the CPU has (others are skipped with the reason), 1 and 2 threads.
The int8 GEMM is checked EXACTLY against an int64 reference computed from the same quantized
activations, and approximately against the float linear layer."""
import numpy as np
import pytest

cpu = pytest.importorskip("workbench_ext.cpu", reason="workbench_ext not built (python setup.py build_ext --inplace)")
from workbench_ext import int8, ops, sparse  # noqa: E402

ALL_ISAS = ["amx", "avx512_vnni", "avx2", "portable"]
AVAILABLE = cpu.available_isas()
THREADS = [1, 2]

# (M, K, N): M=1, odd K (not a multiple of 4 or 64), N=1/7, plus one mid-size shape
SHAPES = [(1, 1, 1), (1, 3, 7), (2, 5, 1), (7, 67, 7), (16, 130, 33), (33, 64, 17), (5, 256, 48), (70, 200, 90),
          (18, 1030, 21)]


@pytest.fixture(params=ALL_ISAS)
def isa(request):
    name = request.param
    if name not in AVAILABLE:
        pytest.skip(f"CPU lacks ISA {name!r} (available: {AVAILABLE}; features: "
                    f"{sorted(k for k, v in cpu.features().items() if v)})")
    cpu.set_isa(name)
    yield name
    cpu.set_isa(None)


def _rng(*key):
    return np.random.default_rng(abs(hash(key)) % (2**32))


def _weights(rng, N, K, block_sparsity=0.0, empty_rows=False):
    w = rng.integers(-128, 128, size=(N, K)).astype(np.int8)
    if block_sparsity > 0:
        Kb = (K + 3) // 4
        keep = rng.random((N, Kb)) >= block_sparsity
        mask = np.repeat(keep, 4, axis=1)[:, :K]
        w = np.where(mask, w, 0).astype(np.int8)
    if empty_rows and N > 1:
        w[::2] = 0
    w_scale = (rng.random(N).astype(np.float32) + 0.5) * np.float32(0.01)
    bias = rng.standard_normal(N).astype(np.float32)
    return w, w_scale, bias


def _int_reference(x, w):
    q, s, z = ops.quantize_per_token(x)
    acc = (q.astype(np.int64) - z[:, None].astype(np.int64)) @ w.astype(np.int64).T
    return q, s, z, acc


# ----------------------------------------------------------------------------------- cpu
def test_cpu_features_and_isas():
    f = cpu.features()
    for key in ("amx_int8", "avx512_vnni", "avx512bw", "avx2", "fma"):
        assert isinstance(f[key], bool)
    isas = cpu.available_isas()
    assert isas[-1] == "portable" and set(isas) <= set(ALL_ISAS)
    assert isas == [i for i in ALL_ISAS if i in isas]            # best first
    assert cpu.active_isa() in isas
    if f["amx_int8"]:
        assert f["amx_permission"]


def test_cpu_env_and_set_isa(monkeypatch):
    monkeypatch.setenv("WORKBENCH_ISA", "portable")
    assert cpu.active_isa() == "portable"
    layer = int8.DenseInt8Linear(np.ones((2, 3), np.int8), np.ones(2, np.float32), None)
    assert layer.isa == "portable"
    monkeypatch.setenv("WORKBENCH_ISA", "nonsense")
    with pytest.raises(ValueError, match="nonsense"):
        cpu.active_isa()
    monkeypatch.delenv("WORKBENCH_ISA")
    assert cpu.active_isa() == AVAILABLE[0]
    cpu.set_isa("portable")
    try:
        assert cpu.active_isa() == "portable"
        layer(np.ones((1, 3), np.float32))
        assert layer.isa == "portable"
    finally:
        cpu.set_isa(None)
    assert cpu.active_isa() == AVAILABLE[0]
    with pytest.raises(ValueError, match="unknown ISA"):
        cpu.set_isa("sse9")


@pytest.mark.parametrize("name", ALL_ISAS)
def test_cpu_forcing_unavailable_isa_raises(name, monkeypatch):
    if name in AVAILABLE:
        pytest.skip(f"{name} is available here, nothing to refuse")
    with pytest.raises(ValueError, match=rf"{name}.*available.*portable"):
        cpu.set_isa(name)
    monkeypatch.setenv("WORKBENCH_ISA", name)
    with pytest.raises(ValueError, match=name):
        cpu.active_isa()
    with pytest.raises(ValueError, match=name):
        int8.DenseInt8Linear(np.ones((2, 3), np.int8), np.ones(2, np.float32), isa=name)


# ---------------------------------------------------------------------------------- int8
@pytest.mark.parametrize("cls", [int8.DenseInt8Linear, int8.BlockSparseInt8Linear])
@pytest.mark.parametrize("M,K,N", SHAPES)
@pytest.mark.parametrize("threads", THREADS)
def test_int8_exact_vs_int_reference(isa, cls, M, K, N, threads):
    rng = _rng(cls.__name__, M, K, N)
    sp = 0.7 if cls is int8.BlockSparseInt8Linear else 0.0
    w, ws, b = _weights(rng, N, K, block_sparsity=sp, empty_rows=sp > 0)
    x = (rng.standard_normal((M, K)) * 3 + rng.standard_normal((M, 1))).astype(np.float32)
    layer = cls(w, ws, b)
    assert layer.isa == isa and layer.N == N and layer.K == K
    q, s, z, acc = _int_reference(x, w)
    np.testing.assert_array_equal(layer.qmatmul(q, z, num_threads=threads), acc)
    y = layer(x, num_threads=threads)
    assert y.shape == (M, N) and y.dtype == np.float32
    expect = acc.astype(np.float32) * (s[:, None] * ws[None, :]) + b
    np.testing.assert_allclose(y, expect, rtol=1e-6, atol=1e-6)
    # close to the float layer: error bounded by the activation quantization step
    wf = w.astype(np.float32) * ws[:, None]
    yf = x @ wf.T + b
    step = (s[:, None] * np.abs(wf).sum(axis=1)[None, :])
    assert np.all(np.abs(y - yf) <= 0.5 * step + 1e-4)


@pytest.mark.parametrize("cls", [int8.DenseInt8Linear, int8.BlockSparseInt8Linear])
@pytest.mark.parametrize("M,K,N", [(1, 3, 7), (7, 67, 7), (33, 64, 17), (70, 200, 90), (40, 1030, 21)])
def test_int8_fused_gelu_matches_ops_gelu(isa, cls, M, K, N):
    """activation="gelu" applies GELU to each output tile in the epilogue: bit-identical to
    ops.gelu on the unfused output (ragged widths included), on every ISA and kernel layout."""
    rng = np.random.default_rng(M * 1000 + K + N)
    w, w_scale, bias = _weights(rng, N, K, block_sparsity=0.6 if cls is int8.BlockSparseInt8Linear else 0.0)
    x = rng.standard_normal((M, K)).astype(np.float32)
    layer = cls(w, w_scale, bias)
    for nt in THREADS:
        got = layer(x, num_threads=nt, activation="gelu")
        np.testing.assert_array_equal(got, ops.gelu(layer(x, num_threads=nt)))
    assert not np.array_equal(got, layer(x))  # GELU did change the output
    with pytest.raises(ValueError, match="activation"):
        layer(x, activation="relu6")


@pytest.mark.parametrize("M,K,N", [(1, 3, 7), (7, 67, 7), (33, 64, 17), (70, 200, 90), (18, 1030, 40)])
def test_int8_tile_sparse_exact_and_counts_tiles(isa, M, K, N):
    """TileSparseInt8Linear (AMX: skips all-zero 16x64 weight blocks; elsewhere the dense kernel)
    gives the exact integer result and the dense layer's bits, with zero tiles, a tile with one
    weight in its last corner, and ragged edges; nnz_tiles counts the blocks it keeps."""
    from workbench.runtime.kernels import tile_sparsity
    rng = _rng("tile", M, K, N)
    w, ws, b = _weights(rng, N, K)
    NP, chunks = -(-N // 16), -(-K // 64)
    zero = rng.random((NP, chunks)) < 0.6
    for p, c in zip(*np.nonzero(zero)):
        w[16 * p:16 * p + 16, 64 * c:64 * c + 64] = 0
    p, c = np.argwhere(zero)[0] if zero.any() else (0, 0)
    w[min(16 * p + 15, N - 1), min(64 * c + 63, K - 1)] = 5   # a block kept for one corner weight
    layer = int8.TileSparseInt8Linear(w, ws, b)
    assert layer.isa == isa and layer.num_tiles == NP * chunks
    assert layer.nnz_tiles == round((1 - tile_sparsity(w)) * NP * chunks)
    x = (rng.standard_normal((M, K)) * 2).astype(np.float32)
    q, s, z, acc = _int_reference(x, w)
    for nt in THREADS:
        np.testing.assert_array_equal(layer.qmatmul(q, z, num_threads=nt), acc)
    dense = int8.DenseInt8Linear(w, ws, b)
    np.testing.assert_array_equal(layer(x, activation="gelu"), dense(x, activation="gelu"))


@pytest.mark.parametrize("M,K,N", [(1, 64, 32), (33, 200, 90), (128, 768, 96), (70, 1030, 65)])
def test_int8_amx_workers_agree(M, K, N):
    """On AMX CPUs: the pipelined worker (epilogue between the next item's tile multiplies) and
    the plain one give the same bits, float + GELU and int32 alike. (The emulation test checks
    the same on every machine.)"""
    if "amx" not in cpu.available_isas():
        pytest.skip("CPU lacks AMX (the logic is checked by test_vnni_amx_logic_by_emulation)")
    rng = np.random.default_rng(M + K + N)
    w, ws, b = _weights(rng, N, K)
    x = rng.standard_normal((M, K)).astype(np.float32)
    layer = int8.DenseInt8Linear(w, ws, b, isa="amx")
    q, s, z, acc = _int_reference(x, w)
    out = {}
    try:
        for on in (1, 0):
            int8._set_amx_pipelined(on)
            out[on] = [layer(x, num_threads=nt, activation="gelu") for nt in THREADS]
            np.testing.assert_array_equal(layer.qmatmul(q, z, num_threads=2), acc)
    finally:
        int8._set_amx_pipelined(1)
    for a, c in zip(out[0], out[1]):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("threads", THREADS)
def test_int8_extreme_values_no_overflow(isa, threads):
    # |q - zp| = 255 against w = -128 everywhere: the s16 path must not saturate
    K, N = 300, 9
    w = np.full((N, K), -128, np.int8)
    w[1] = 127
    x = np.zeros((3, K), np.float32)
    x[0] = 1.0                         # zp = 0, q = 255
    x[1] = -1.0                        # zp = 255, q = 0
    x[2, ::2], x[2, 1::2] = 5.0, -5.0
    q, s, z, acc = _int_reference(x, w)
    for cls in (int8.DenseInt8Linear, int8.BlockSparseInt8Linear):
        layer = cls(w, np.ones(N, np.float32), None)
        np.testing.assert_array_equal(layer.qmatmul(q, z, num_threads=threads), acc)
        np.testing.assert_allclose(layer(x, num_threads=threads), acc * s[:, None], rtol=1e-6)


def test_int8_exact_at_the_k_limit(isa):
    # K near the documented limit (65535): the sums reach +-2.1e9, so every correction term of
    # a kernel (the AVX2 pair-product form's per-row and per-column sums among them) must wrap
    # mod 2^32 exactly, with no step (such as halving a doubled sum) that is not
    K, N = 65472, 3
    w = np.empty((N, K), np.int8)
    w[0], w[1], w[2, ::2], w[2, 1::2] = 127, -128, -128, 127
    q = np.zeros((3, K), np.uint8)
    q[0] = 255                               # zp 0: q - zp = 255 throughout
    q[1, ::2] = 255                          # zp 255: q - zp alternates 0, -255
    q[2, ::2], q[2, 1::2] = 255, 0           # zp 0: 255, 0
    z = np.array([0, 255, 0], np.int32)
    acc = (q.astype(np.int64) - z[:, None]) @ w.astype(np.int64).T
    assert np.abs(acc).max() > 2**31 * 0.99 and np.abs(acc).max() < 2**31
    for cls in (int8.DenseInt8Linear, int8.BlockSparseInt8Linear):
        np.testing.assert_array_equal(cls(w, np.ones(N, np.float32), None).qmatmul(q, z), acc)


def test_int8_all_zero_and_empty(isa):
    N, K = 7, 67
    w = np.zeros((N, K), np.int8)
    ws = np.ones(N, np.float32)
    b = np.arange(N, dtype=np.float32)
    x = np.random.default_rng(1).standard_normal((5, K)).astype(np.float32)
    for cls in (int8.DenseInt8Linear, int8.BlockSparseInt8Linear):
        layer = cls(w, ws, b)
        np.testing.assert_array_equal(layer(x), np.broadcast_to(b, (5, N)))
        assert layer(np.zeros((0, K), np.float32)).shape == (0, N)
    sp = int8.BlockSparseInt8Linear(w, ws, b)
    assert sp.nnz_blocks == 0 and sp.block_sparsity == 1.0
    # all-zero activations
    layer = int8.DenseInt8Linear(np.ones((N, K), np.int8), ws, b)
    np.testing.assert_array_equal(layer(np.zeros((2, K), np.float32)), np.broadcast_to(b, (2, N)))


def test_int8_paths_bit_identical():
    rng = _rng("identical")
    w, ws, b = _weights(rng, 45, 131, block_sparsity=0.5)
    x = rng.standard_normal((19, 131)).astype(np.float32)
    for cls in (int8.DenseInt8Linear, int8.BlockSparseInt8Linear):
        outs = {isa: cls(w, ws, b, isa=isa)(x) for isa in AVAILABLE}
        for isa, y in outs.items():
            np.testing.assert_array_equal(y, outs["portable"], err_msg=f"{cls.__name__} {isa}")


def test_concurrent_calls_while_switching_isa():
    """Calls from several Python threads (kernels run without the GIL) while another thread
    flips cpu.set_isa: every call must use one consistent packed layout (bit-identical int8)."""
    import threading
    rng = _rng("concurrent")
    w, ws, b = _weights(rng, 70, 90, block_sparsity=0.5)
    x = rng.standard_normal((21, 90)).astype(np.float32)
    layers = [int8.DenseInt8Linear(w, ws, b), int8.BlockSparseInt8Linear(w, ws, b)]
    refs = [layer(x) for layer in layers]
    bad = []

    def work(i):
        for it in range(40):
            if i == 0 and it % 5 == 0:
                cpu.set_isa(AVAILABLE[(it // 5) % len(AVAILABLE)])
            for layer, ref in zip(layers, refs):
                if not np.array_equal(layer(x, num_threads=1 + it % 2), ref):
                    bad.append((i, it, type(layer).__name__))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        cpu.set_isa(None)
    assert not bad, bad[:5]


def test_out_buffer_and_default_threads():
    rng = _rng("out")
    w, ws, b = _weights(rng, 13, 40, block_sparsity=0.5)
    x = rng.standard_normal((6, 40)).astype(np.float32)
    for layer in (int8.DenseInt8Linear(w, ws, b), int8.BlockSparseInt8Linear(w, ws, b),
                  sparse.BlockSparseFp32Linear(w.astype(np.float32), b)):
        ref = layer(x, num_threads=1)
        out = np.full((6, 13), np.nan, np.float32)
        assert layer(x, out=out) is out
        np.testing.assert_array_equal(out, ref)
        with pytest.raises(ValueError, match="out"):
            layer(x, out=np.empty((6, 12), np.float32))
        with pytest.raises(TypeError, match="out"):
            layer(x, out=np.empty((6, 13), np.float64))


@pytest.mark.parametrize("rows", [16, 32])
@pytest.mark.parametrize("M,K,N", SHAPES)
def test_block_sparse_int8_avx2_tile_rows(M, K, N, rows, monkeypatch):
    if "avx2" not in AVAILABLE:
        pytest.skip(f"CPU lacks ISA 'avx2' (available: {AVAILABLE})")
    monkeypatch.setattr(int8, "SPARSE_AVX2_ROWS", rows)
    rng = _rng("rows", M, K, N)
    w, ws, b = _weights(rng, N, K, block_sparsity=0.6, empty_rows=True)
    x = rng.standard_normal((M, K)).astype(np.float32)
    q, s, z, acc = _int_reference(x, w)
    layer = int8.BlockSparseInt8Linear(w, ws, b, isa="avx2")
    ref = int8.BlockSparseInt8Linear(w, ws, b, isa="portable")(x)
    for nt in THREADS:
        np.testing.assert_array_equal(layer.qmatmul(q, z, num_threads=nt), acc)
        np.testing.assert_array_equal(layer(x, num_threads=nt), ref)


@pytest.mark.parametrize("chunk", [1, 3, 16])
def test_block_sparse_int8_k_chunks(isa, chunk, monkeypatch):
    monkeypatch.setattr(int8, "SPARSE_KB_CHUNK", chunk)
    rng = _rng("chunks", chunk)
    w, ws, b = _weights(rng, 19, 203, block_sparsity=0.6, empty_rows=True)
    x = rng.standard_normal((21, 203)).astype(np.float32)
    q, s, z, acc = _int_reference(x, w)
    layer = int8.BlockSparseInt8Linear(w, ws, b)
    for nt in THREADS:
        np.testing.assert_array_equal(layer.qmatmul(q, z, num_threads=nt), acc)


def test_block_sparse_int8_format():
    w = np.zeros((3, 10), np.int8)
    w[0, 1] = 5          # block 0
    w[0, 9] = -3         # block 2 (K padded to 12)
    w[2, 4:8] = [1, 2, 3, 4]
    layer = int8.BlockSparseInt8Linear(w, np.ones(3, np.float32), None)
    assert layer.nnz_blocks == 3 and layer.Kb == 3
    np.testing.assert_array_equal(layer.row_ptr, [0, 2, 2, 3])
    np.testing.assert_array_equal(layer.col_idx, [0, 2, 1])
    np.testing.assert_array_equal(layer.values, [[0, 5, 0, 0], [0, -3, 0, 0], [1, 2, 3, 4]])


def test_int8_repacks_when_isa_changes():
    rng = _rng("repack")
    w, ws, b = _weights(rng, 20, 70)
    x = rng.standard_normal((4, 70)).astype(np.float32)
    layer = int8.DenseInt8Linear(w, ws, b)
    y0 = layer(x)
    for isa in AVAILABLE:
        cpu.set_isa(isa)
        try:
            np.testing.assert_array_equal(layer(x), y0)
            assert layer.isa == isa
        finally:
            cpu.set_isa(None)


def run_emulation(tmp_path, source: str) -> str:
    """Build workbench_ext/testing/<source> against the kernel headers with gcc -fopenmp and run
    it; returns its stdout ("OK", or "SKIP" where it says so). Skips without a C toolchain."""
    import shutil
    import subprocess
    from pathlib import Path
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler to build the ISA emulation test")
    ext = Path(cpu.__file__).resolve().parent
    src = ext / "testing" / source
    if not src.exists():
        pytest.skip(f"{src} not found (installed without sources)")
    probe = tmp_path / "probe.c"
    probe.write_text("#include <immintrin.h>\n#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n")
    ok = subprocess.run([cc, "-std=c11", "-fopenmp", str(probe), "-o", str(tmp_path / "probe")],
                        capture_output=True, text=True, timeout=60)
    if ok.returncode != 0:
        pytest.skip(f"{cc} cannot build C11 + OpenMP + immintrin.h programs: {ok.stderr[-300:]}")
    exe = tmp_path / src.stem
    build = subprocess.run([cc, "-O1", "-std=c11", "-fopenmp", f"-I{ext}", str(src), "-o", str(exe), "-lm"],
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, f"the kernels do not compile against the emulation: {build.stderr[-2000:]}"
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.strip()


def test_vnni_amx_logic_by_emulation(tmp_path):
    """The AVX-512 VNNI / AMX kernels compiled against scalar emulations of their intrinsics
    (workbench_ext/testing/emulate_isa.c): checks packing, tiling, tile config and padding
    exactly on any x86 CPU.  Real-hardware runs happen in test_int8_* when the CPU has them."""
    assert run_emulation(tmp_path, "emulate_isa.c") == "OK"


# --------------------------------------------------------------------------- fp32 sparse
@pytest.mark.parametrize("M,K,N", SHAPES)
@pytest.mark.parametrize("threads", THREADS)
def test_block_sparse_fp32(isa, M, K, N, threads):
    rng = _rng("fp32", M, K, N)
    w = rng.standard_normal((N, K)).astype(np.float32)
    Kb = (K + 3) // 4
    mask = np.repeat(rng.random((N, Kb)) >= 0.7, 4, axis=1)[:, :K]
    w = np.where(mask, w, 0).astype(np.float32)
    if N > 1:
        w[1] = 0
    b = rng.standard_normal(N).astype(np.float32)
    x = rng.standard_normal((M, K)).astype(np.float32)
    layer = sparse.BlockSparseFp32Linear(w, b)
    y = layer(x, num_threads=threads)
    np.testing.assert_allclose(y, x.astype(np.float64) @ w.T.astype(np.float64) + b, rtol=1e-4, atol=1e-4)
    y0 = sparse.BlockSparseFp32Linear(w, None)(x, num_threads=threads)
    np.testing.assert_allclose(y0, x.astype(np.float64) @ w.T.astype(np.float64), rtol=1e-4, atol=1e-4)
    zero = sparse.BlockSparseFp32Linear(np.zeros((N, K), np.float32), b)
    assert zero.nnz_blocks == 0
    np.testing.assert_array_equal(zero(x), np.broadcast_to(b, (M, N)))


# ----------------------------------------------------------------------------------- ops
torch = pytest.importorskip("torch")

OPS_SHAPES = [(1, 1), (3, 7), (5, 768), (2, 3, 130)]


@pytest.mark.parametrize("shape", OPS_SHAPES)
@pytest.mark.parametrize("threads", THREADS)
def test_gelu(isa, shape, threads):
    x = (_rng("gelu", shape).standard_normal(shape) * 4).astype(np.float32)
    x.flat[0] = 12.0
    y = ops.gelu(x, num_threads=threads)
    # float64 reference: torch's float32 erf differs by ISA (AVX2 vs AVX-512 builds differ by
    # ~1e-6 near erf = -1), ours is within 5e-7 of the exact value on every path
    ref = torch.nn.functional.gelu(torch.from_numpy(x).double()).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


def _same_bits_on_avx512_and_avx2(fn, x, what=""):
    paths = [i for i in ("avx512_vnni", "avx2") if i in AVAILABLE]
    if len(paths) < 2:
        pytest.skip(f"needs avx512_vnni and avx2 (available: {AVAILABLE})")
    outs = []
    for name in paths:
        cpu.set_isa(name)
        try:
            outs.append(fn(x))
        finally:
            cpu.set_isa(None)
    np.testing.assert_array_equal(outs[0], outs[1], err_msg=what)


def test_softmax_avx512_and_avx2_identical():
    """The AVX-512 softmax row computes the same exponentials (16 lanes) and sums them in the AVX2
    order: the same bits, for row lengths with and without 16- / 8-element tails."""
    for H in (1, 7, 8, 15, 16, 24, 37, 128, 131):
        x = (np.random.default_rng(H).standard_normal((5, H)) * 6).astype(np.float32)
        x[0, 0] = -1e30  # a masked key
        _same_bits_on_avx512_and_avx2(ops.softmax, x, f"H={H}")


def test_gelu_avx512_and_avx2_identical():
    """The AVX-512 GELU runs the AVX2 one's operations on 16 lanes: the same bits (so the int8
    epilogue's fused GELU does not depend on which of the two a machine has)."""
    x = (np.random.default_rng(3).standard_normal(16 * 40 + 13) * 5).astype(np.float32)
    x[:6] = [0.0, -0.0, 3.9, -3.9, 40.0, -40.0]
    _same_bits_on_avx512_and_avx2(ops.gelu, x)


@pytest.mark.parametrize("shape", OPS_SHAPES)
@pytest.mark.parametrize("threads", THREADS)
def test_layernorm_and_fused(isa, shape, threads):
    rng = _rng("ln", shape)
    H = shape[-1]
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    r = rng.standard_normal(shape).astype(np.float32)
    bias, g, be = (rng.standard_normal(H).astype(np.float32) for _ in range(3))
    t = torch.from_numpy
    ref = torch.nn.functional.layer_norm(t(x), (H,), t(g), t(be), 1e-12).numpy()
    np.testing.assert_allclose(ops.layernorm(x, g, be, 1e-12, num_threads=threads), ref, rtol=1e-4, atol=1e-4)
    ref2 = torch.nn.functional.layer_norm(t(x) + t(bias) + t(r), (H,), t(g), t(be), 1e-5).numpy()
    y2 = ops.add_bias_residual_layernorm(x, bias, r, g, be, 1e-5, num_threads=threads)
    np.testing.assert_allclose(y2, ref2, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", OPS_SHAPES)
@pytest.mark.parametrize("threads", THREADS)
def test_softmax(isa, shape, threads):
    x = (_rng("sm", shape).standard_normal(shape) * 30).astype(np.float32)
    x.flat[0] = 1e30                     # stability: no overflow
    y = ops.softmax(x, num_threads=threads)
    np.testing.assert_allclose(y, torch.softmax(torch.from_numpy(x), -1).numpy(), rtol=1e-5, atol=1e-7)
    m = np.full((2, 5), -np.inf, np.float32)
    m[0, 2] = 0.0
    np.testing.assert_allclose(ops.softmax(m)[0], [0, 0, 1, 0, 0])
    assert np.all(np.isfinite(ops.softmax(m)[0]))


def _quant_reference(x):
    lo = np.minimum(x.min(axis=1), 0).astype(np.float32)
    hi = np.maximum(x.max(axis=1), 0).astype(np.float32)
    s = ((hi - lo) / np.float32(255)).astype(np.float32)
    ok = s > 0
    s = np.where(ok, s, np.float32(1)).astype(np.float32)
    z = np.where(ok, np.clip(np.rint(-lo / s), 0, 255), 0).astype(np.int32)
    inv = (np.float32(1) / s).astype(np.float32)
    q = np.clip(np.rint(x * inv[:, None]) + z[:, None].astype(np.float32), 0, 255).astype(np.uint8)
    return q, s, z


@pytest.mark.parametrize("M,K", [(1, 1), (3, 5), (4, 67), (9, 768), (2, 0)])
@pytest.mark.parametrize("threads", THREADS)
def test_quantize_per_token(isa, M, K, threads):
    x = (_rng("q", M, K).standard_normal((M, K)) * 2).astype(np.float32)
    if M > 2:
        x[1] = 0.0
        x[2] = np.abs(x[2])
    q, s, z = ops.quantize_per_token(x, num_threads=threads)
    if K == 0:
        assert q.shape == (M, 0)
        return
    rq, rs, rz = _quant_reference(x)
    np.testing.assert_array_equal(s, rs)
    np.testing.assert_array_equal(z, rz)
    np.testing.assert_array_equal(q, rq)
    recon = (q.astype(np.float32) - z[:, None]) * s[:, None]
    assert np.all(np.abs(recon - x) <= 0.5 * s[:, None] + 1e-6)


@pytest.mark.parametrize("threads", THREADS)
def test_quantize_static(isa, threads):
    x = (_rng("qs").standard_normal((3, 4, 50)) * 3).astype(np.float32)
    q = ops.quantize_static(x, 0.05, 128, num_threads=threads)
    inv = np.float32(1) / np.float32(0.05)
    ref = np.clip(np.rint(x * inv) + np.float32(128), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(q, ref)
    assert q.shape == x.shape and q.dtype == np.uint8


# ---------------------------------------------------------------------------- bad inputs
def _bad_cases():
    w = np.ones((4, 6), np.int8)
    ws = np.ones(4, np.float32)
    x = np.ones((2, 6), np.float32)
    d = int8.DenseInt8Linear(w, ws, None)
    sp = int8.BlockSparseInt8Linear(w, ws, None)
    f = sparse.BlockSparseFp32Linear(np.ones((4, 6), np.float32), None)
    v = np.ones(6, np.float32)
    return [
        ("w_s8", TypeError, lambda: int8.DenseInt8Linear(w.astype(np.int16), ws, None)),
        ("w_s8", TypeError, lambda: int8.DenseInt8Linear(w.tolist(), ws, None)),
        ("w_s8", ValueError, lambda: int8.DenseInt8Linear(w[None], ws, None)),
        ("w_s8", ValueError, lambda: int8.BlockSparseInt8Linear(np.ones((6, 4), np.int8).T, ws, None)),
        ("w_s8", ValueError, lambda: int8.DenseInt8Linear(np.ones((0, 6), np.int8), ws[:0], None)),
        ("w_scale", ValueError, lambda: int8.DenseInt8Linear(w, np.ones(3, np.float32), None)),
        ("w_scale", TypeError, lambda: int8.BlockSparseInt8Linear(w, ws.astype(np.float64), None)),
        ("bias", ValueError, lambda: int8.DenseInt8Linear(w, ws, np.ones(5, np.float32))),
        ("bias", TypeError, lambda: int8.BlockSparseInt8Linear(w, ws, np.ones(4, np.float64))),
        ("x", TypeError, lambda: d(x.astype(np.float64))),
        ("x", ValueError, lambda: d(np.ones((2, 7), np.float32))),
        ("x", ValueError, lambda: d(np.ones((2, 12), np.float32)[:, ::2])),
        ("x", ValueError, lambda: sp(np.ones(6, np.float32))),
        ("x", TypeError, lambda: sp(torch.ones(2, 6))),
        ("q", TypeError, lambda: d.qmatmul(x, np.zeros(2, np.int32))),
        ("zero_point", ValueError, lambda: d.qmatmul(np.ones((2, 6), np.uint8), np.zeros(3, np.int32))),
        ("num_threads", ValueError, lambda: d(x, num_threads=0)),
        ("w", TypeError, lambda: sparse.BlockSparseFp32Linear(w, None)),
        ("bias", ValueError, lambda: sparse.BlockSparseFp32Linear(np.ones((4, 6), np.float32), v)),
        ("x", ValueError, lambda: f(np.ones((3, 5), np.float32))),
        ("x", TypeError, lambda: f(np.ones((3, 6), np.float16))),
        ("x", TypeError, lambda: ops.gelu(np.ones(3, np.float64))),
        ("x", ValueError, lambda: ops.gelu(np.ones((4, 4), np.float32).T)),
        ("x", ValueError, lambda: ops.gelu(np.ones((), np.float32))),
        ("gamma", ValueError, lambda: ops.layernorm(np.ones((2, 6), np.float32), np.ones(5, np.float32), v)),
        ("beta", TypeError, lambda: ops.layernorm(np.ones((2, 6), np.float32), v, v.astype(np.float64))),
        ("residual", ValueError, lambda: ops.add_bias_residual_layernorm(np.ones((2, 6), np.float32), v, np.ones((3, 6), np.float32), v, v)),
        ("bias", ValueError, lambda: ops.add_bias_residual_layernorm(np.ones((2, 6), np.float32), np.ones(2, np.float32), np.ones((2, 6), np.float32), v, v)),
        ("x", TypeError, lambda: ops.softmax([1.0, 2.0])),
        ("x", ValueError, lambda: ops.quantize_per_token(np.ones(5, np.float32))),
        ("scale", ValueError, lambda: ops.quantize_static(x, 0.0, 3)),
        ("zero_point", ValueError, lambda: ops.quantize_static(x, 0.1, 300)),
        ("isa", ValueError, lambda: int8.DenseInt8Linear(w, ws, None, isa="bogus")),
    ]


def test_non_finite_inputs_do_not_crash(isa):
    w = np.ones((5, 9), np.int8)
    x = np.ones((4, 9), np.float32)
    x[0, 3] = np.nan
    x[1, 2] = np.inf
    x[2, :] = -np.inf
    x[3, 1] = 3e38
    for layer in (int8.DenseInt8Linear(w, np.ones(5, np.float32), None),
                  int8.BlockSparseInt8Linear(w, np.ones(5, np.float32), None),
                  sparse.BlockSparseFp32Linear(w.astype(np.float32), None)):
        assert layer(x).shape == (4, 5)
    q, s, z = ops.quantize_per_token(x)
    assert q.shape == x.shape and np.all((z >= 0) & (z <= 255))
    for fn in (ops.gelu, ops.softmax):
        assert fn(x).shape == x.shape
    ops.layernorm(x, np.ones(9, np.float32), np.zeros(9, np.float32))
    ops.quantize_static(x, 0.1, 0)


def test_unaligned_input_rejected():
    buf = np.zeros(4 * 6 + 1, np.uint8)
    x = np.frombuffer(buf.data, dtype=np.float32, count=6, offset=1).reshape(1, 6)
    assert not x.flags.aligned
    with pytest.raises(ValueError, match="x is not aligned"):
        ops.gelu(x)


@pytest.mark.parametrize("idx", range(len(_bad_cases())))
def test_bad_inputs_raise(idx):
    name, exc, fn = _bad_cases()[idx]
    with pytest.raises(exc, match=name):
        fn()


# ------------------------------------------------------------------------------ attention
def _attn_case(B, S, nh, d, R, seed):
    rng = np.random.default_rng(seed)
    qkv = rng.standard_normal((B, S, 3, nh, d)).astype(np.float32)
    k = qkv[:, :, 1].transpose(0, 2, 3, 1)                       # [B, nh, d, S] strided view
    v = qkv[:, :, 2].transpose(0, 2, 1, 3)                       # [B, nh, S, d]
    q = qkv[:, :R, 0].transpose(0, 2, 1, 3)                      # [B, nh, R, d]
    mask = np.ones((B, S), np.float32)
    mask[-1, S // 2 + 1:] = 0                                    # padding in the last row
    bias = ((1 - mask) * np.finfo(np.float32).min).astype(np.float32)[:, None, None, :]
    return q, k, v, bias


@pytest.mark.parametrize("B,S,nh,d,R", [(1, 1, 1, 1, 1), (2, 37, 3, 5, 37), (2, 128, 12, 64, 128),
                                        (3, 70, 4, 33, 1), (1, 64, 2, 96, 64)])
@pytest.mark.parametrize("threads", THREADS)
def test_fused_attention_vs_torch(isa, B, S, nh, d, R, threads):
    import torch
    from workbench_ext import attention
    q, k, v, bias = _attn_case(B, S, nh, d, R, B * S + d)
    ref = torch.softmax(torch.from_numpy(q.copy()) @ torch.from_numpy(k.copy()) + torch.from_numpy(bias), -1)
    ref = (ref @ torch.from_numpy(v.copy())).permute(0, 2, 1, 3).numpy()
    out = attention.attention(q, k, v, bias, num_threads=threads)
    assert out.shape == (B, R, nh, d) and out.flags.c_contiguous
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=3e-5)  # fp32, unscaled scores up to ~30


@pytest.mark.parametrize("B,S,nh,d", [(1, 1, 1, 1), (2, 37, 3, 5), (2, 128, 12, 64)])
@pytest.mark.parametrize("threads", THREADS)
def test_fused_attention_significance(isa, B, S, nh, d, threads):
    """significance=True: the same ctx, plus each key's probabilities summed over the queries
    that are not padding (what token dropping ranks keys by)."""
    import torch
    from workbench_ext import attention
    q, k, v, bias = _attn_case(B, S, nh, d, S, B * S + d + 1)
    probs = torch.softmax(torch.from_numpy(q.copy()) @ torch.from_numpy(k.copy()) + torch.from_numpy(bias), -1)
    qmask = torch.from_numpy((bias == 0).astype(np.float32))          # [B, 1, 1, S]: real queries
    want = (qmask @ probs)[:, :, 0].numpy()                            # [B, nh, S]
    ctx, sig = attention.attention(q, k, v, bias, num_threads=threads, significance=True)
    np.testing.assert_array_equal(ctx, attention.attention(q, k, v, bias, num_threads=threads))
    assert sig.shape == (B, nh, S)
    np.testing.assert_allclose(sig, want, rtol=1e-4, atol=1e-5)
    if B > 1:  # the padded keys of the last row get (almost) nothing from its real queries
        assert sig[-1, :, S // 2 + 1:].max() < 1e-6
    if S > 1:
        with pytest.raises(ValueError, match="R == S"):
            attention.attention(q[:, :, :1], k, v, bias, significance=True)


def test_fused_attention_simd_paths_identical():
    """AVX-512 and AVX2 tile differently (wb_attn_simd.h) but run the same FMA chain per output
    (no reordered sums) and share the softmax row: bit-identical outputs."""
    from workbench_ext import attention
    paths = [i for i in ("avx512_vnni", "avx2") if i in AVAILABLE]
    if len(paths) < 2:
        pytest.skip(f"needs avx512_vnni and avx2 (available: {AVAILABLE})")
    q, k, v, bias = _attn_case(2, 50, 3, 40, 50, 7)
    outs = []
    for name in paths:
        cpu.set_isa(name)
        try:
            outs.append(attention.attention(q, k, v, bias))
        finally:
            cpu.set_isa(None)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_fused_attention_bad_inputs():
    from workbench_ext import attention
    q, k, v, bias = _attn_case(2, 8, 2, 4, 8, 1)
    with pytest.raises(ValueError, match="k must have shape"):
        attention.attention(q, k[:, :1], v, bias)
    with pytest.raises(ValueError, match="mask_bias"):
        attention.attention(q, k, v, bias[:1])
    with pytest.raises(TypeError, match="float32"):
        attention.attention(q.astype(np.float64), k, v, bias)
    with pytest.raises(ValueError, match="contiguous along head_dim"):
        attention.attention(q[..., ::2], k[:, :, ::2], v[..., ::2], bias)


def test_engine_refuses_missing_kernels(monkeypatch):
    """No silent NumPy engine: a missing compiled module fails with the build command, unless
    the NumPy path is asked for by name."""
    from workbench.runtime import kernels as K
    monkeypatch.setattr(K, "_ext_attn", None)
    monkeypatch.delenv("WORKBENCH_KERNELS", raising=False)
    with pytest.raises(K.KernelsMissingError, match="setup.py build_ext --inplace") as exc:
        K.require_compiled()
    assert "workbench_ext.attention" in str(exc.value)
    monkeypatch.setenv("WORKBENCH_KERNELS", "numpy")
    K.require_compiled()  # asked for by name: allowed
    assert K.kernel_report()["attention"].startswith("numpy")
