"""Tests for the workbench_ext int8 kernels and CPU dispatch: every kernel vs a numpy reference, on
odd shapes, for every ISA path the CPU has (others are skipped with the reason), 1 and 2 threads.
The int8 GEMM is checked EXACTLY against an int64 reference computed from the same quantized
activations, and approximately against the float linear layer; the AMX / VNNI code also by
emulation on any x86 CPU. The shared ISA fixture (`isa`) and shapes live here; the fp32 and
elementwise kernels are in test_kernel_ops.py, attention in test_attention.py."""
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


def test_item_order_hands_each_thread_its_share_of_every_segment():
    """wb_epi_item (the order of a kernel's work items; col_segments): 0 keeps the kernel's own
    order (rows or columns outermost); k >= 1 puts columns outermost in k interleaved segments,
    so the first half of the items (the pool's first thread's own range) covers the first half
    of every segment. DistilBERT's fused QKV at batch 1 on the sparse VNNI kernel: 2304 columns
    in 72 blocks of 32, 2 tiles of 64 rows; thread 0 computes Q, K and V of heads 0-5, the heads
    attention gives it."""
    MB, NB = 2, 72
    every = sorted((m, n) for m in range(MB) for n in range(NB))
    for k, rows_first in ((0, True), (0, False), (1, True), (3, True), (3, False), (5, True)):
        assert sorted(map(tuple, int8._item_order(MB, NB, k, rows_first).tolist())) == every, (k, rows_first)
    own_rows = int8._item_order(MB, NB, 0, True)
    np.testing.assert_array_equal(own_rows[:NB], [[0, n] for n in range(NB)])           # rows outermost
    own_cols = int8._item_order(MB, NB, 0, False)
    np.testing.assert_array_equal(own_cols[:2 * MB], [[0, 0], [1, 0], [0, 1], [1, 1]])  # columns outermost
    by_heads = int8._item_order(MB, NB, 3, True)
    first_half = by_heads[:MB * NB // 2]
    assert set(first_half[:, 0]) == {0, 1}                                      # every row
    heads_0_5 = [n for seg in range(3) for n in range(24 * seg, 24 * seg + 12)]  # 384 columns of Q, K, V
    assert sorted(set(first_half[:, 1].tolist())) == heads_0_5
    # columns that do not split into k segments: columns outermost in their own order
    np.testing.assert_array_equal(int8._item_order(2, 7, 3, True), own := int8._item_order(2, 7, 1, True))
    np.testing.assert_array_equal(own[:, 1], np.repeat(np.arange(7), 2))


@pytest.mark.parametrize("cls", [int8.DenseInt8Linear, int8.BlockSparseInt8Linear, int8.TileSparseInt8Linear])
@pytest.mark.parametrize("act_bits", [8, 7])
def test_item_order_changes_no_bit(isa, cls, act_bits):
    """Every int8 kernel on this ISA (AVX2: the int16 and the u8 / 7-bit kernels) gives the same
    bits whatever the order of its work items (col_segments 0..4), with 1 and 2 threads, on
    shapes whose column blocks split into 3 segments and shapes whose do not."""
    for M, K, N in ((70, 130, 192), (1, 64, 288), (33, 200, 90), (128, 96, 2304 // 4)):
        rng = _rng("order", cls.__name__, act_bits, M, K, N)
        w, ws, b = _weights(rng, N, K, block_sparsity=0.7 if cls is int8.BlockSparseInt8Linear else 0.0)
        layer = cls(w, ws, b, act_bits=act_bits)
        x = (rng.standard_normal((M, K)) * 3).astype(np.float32)
        for nt in THREADS:
            want = layer(x, num_threads=nt)
            for k in range(5):
                np.testing.assert_array_equal(layer._forward_in_order(x, k, nt), want,
                                              err_msg=f"M={M} K={K} N={N} col_segments={k} threads={nt}")


@pytest.mark.parametrize("M", [5, 37, 70, 128])
def test_sparse_vnni_row_groups_change_no_bit(M):
    """The 1x4 sparse kernel on AVX-512 VNNI (and under AMX) tiles its rows in 1 to 4 groups of 16
    (`int8._set_sparse_vnni_groups`, the A/B switch; 0, the default, picks by K): every setting
    gives the same bits, equal to the exact integer reference, and a value outside 0..4 is refused."""
    if "avx512_vnni" not in AVAILABLE:
        pytest.skip(f"needs avx512_vnni (available: {AVAILABLE})")
    rng = _rng("groups", M)
    for K in (200, 1600):   # the default takes up to 4 groups, then (K > 1536) up to 2
        w, ws, b = _weights(rng, 72, K, block_sparsity=0.8, empty_rows=True)
        x = (rng.standard_normal((M, K)) * 3).astype(np.float32)
        layer = int8.BlockSparseInt8Linear(w, ws, b, isa="avx512_vnni")
        q, s, z, acc = _int_reference(x, w)
        want = acc.astype(np.float32) * (s[:, None] * ws[None, :]) + b
        outs = {}
        try:
            for groups in (0, 1, 2, 3, 4):
                assert int8._set_sparse_vnni_groups(groups) == (groups - 1 if groups else 0)
                outs[groups] = layer(x, num_threads=2)
        finally:
            assert int8._set_sparse_vnni_groups(0) == 4
        np.testing.assert_allclose(outs[0], want, rtol=1e-5, atol=1e-4)
        for groups in (1, 2, 3, 4):
            np.testing.assert_array_equal(outs[groups], outs[0], err_msg=f"K={K} groups={groups}")
    with pytest.raises(ValueError, match="1 to 4"):
        int8._set_sparse_vnni_groups(5)


@pytest.mark.parametrize("M,N", [(70, 48), (64, 32), (5, 96), (70, 90)])
@pytest.mark.parametrize("activation", [None, "gelu"])
def test_sparse_epilogue_direct_and_buffered_stores_agree(M, N, activation):
    """The AVX-512 sparse epilogue stores rows straight after its transpose where every output row
    starts a cache line (its own aligned outputs, N a multiple of 16) and through a row buffer
    otherwise (odd N, a caller's unaligned out=): the same bits as the float reference either way."""
    if "avx512_vnni" not in AVAILABLE:
        pytest.skip(f"needs avx512_vnni (available: {AVAILABLE})")
    cpu.set_isa("avx512_vnni")
    try:
        rng = _rng("epi", M, N)
        w, ws, b = _weights(rng, N, 200, block_sparsity=0.7, empty_rows=True)
        x = (rng.standard_normal((M, 200)) * 3).astype(np.float32)
        layer = int8.BlockSparseInt8Linear(w, ws, b)
        q, s, z, acc = _int_reference(x, w)
        want = acc.astype(np.float32) * (s[:, None] * ws[None, :]) + b
        if activation:
            want = ops.gelu(want)
        direct = layer(x, activation=activation)
        unaligned = np.empty(M * N + 1, np.float32)[1:].reshape(M, N)
        assert unaligned.ctypes.data % 64
        layer(x, out=unaligned, activation=activation)
        int8._set_sparse_epi_direct(0)
        try:
            buffered = layer(x, activation=activation)
        finally:
            int8._set_sparse_epi_direct(1)
        np.testing.assert_allclose(direct, want, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(direct, buffered)
        np.testing.assert_array_equal(direct, unaligned)
    finally:
        cpu.set_isa(None)


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
    """TileSparseInt8Linear (AMX and AVX-512 VNNI: skips all-zero 16x64 weight blocks; elsewhere
    the dense kernel) gives the exact integer result and the dense layer's bits, with zero tiles,
    a tile with one weight in its last corner, and ragged edges, through ``qmatmul`` (quantized
    rows packed for the kernel) and ``__call__`` (quantized and packed in one job on VNNI);
    nnz_tiles counts the blocks it keeps."""
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
    the plain one, each in panel-pair-major and grouped item order (groups of 2 pairs here, so
    several), give the same bits, float + GELU and int32 alike. (The emulation test checks the
    same on every machine.)"""
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
            for order in (0, 1):
                for tuning in ((0, 2, 0, 1), (1, 2, 2, 2), (0, 0, 4, 3)):   # default first
                    int8._set_amx_pipelined(on)
                    int8._set_amx_order(order, 2 * 32 * layer.Kp)   # 2 panel pairs' weights
                    int8._set_amx_tuning(*tuning)
                    out[on, order, tuning] = [layer(x, num_threads=nt, activation="gelu") for nt in THREADS]
                    np.testing.assert_array_equal(layer.qmatmul(q, z, num_threads=2), acc)
    finally:
        int8._set_amx_pipelined(1)
        int8._set_amx_order(0)
        int8._set_amx_tuning(0, 2, 0, 1)
    for variant in out:
        for a, c in zip(out[1, 0, (0, 2, 0, 1)], out[variant]):
            np.testing.assert_array_equal(a, c)


def test_amx_tuning_switch_is_checked_and_gives_back_the_previous():
    """The AMX operand tunings (amx_ab.py's A/B) start at the default, refuse values the kernel
    does not have, naming them, and say what was set before (so a script can restore it)."""
    assert int8._set_amx_tuning(0, 2, 0, 1) == (0, 2, 0, 1)
    with pytest.raises(ValueError, match=r"got \(2, 2, 0, 1\)"):
        int8._set_amx_tuning(2, 2, 0, 1)
    with pytest.raises(ValueError, match="b_next 0..3"):
        int8._set_amx_tuning(0, 2, 0, 4)
    try:
        assert int8._set_amx_tuning(1, 3, 2, 2) == (0, 2, 0, 1)
    finally:
        assert int8._set_amx_tuning(0, 2, 0, 1) == (1, 3, 2, 2)


def test_amx_timing_probe_is_off_by_default_and_checked():
    """The AMX timing probe (wrong outputs by design, for amx_ab.py) starts off, takes only its
    five modes, and says what was set before. On AMX CPUs, modes 1 and 4 write no output and
    turning the probe off gives the exact kernel back (emulation checks every mode on every
    machine)."""
    assert int8._set_amx_probe(0) == 0
    with pytest.raises(ValueError, match="must be 0, 1, 2, 3 or 4, got 5"):
        int8._set_amx_probe(5)
    if "amx" not in cpu.available_isas():
        return
    rng = np.random.default_rng(5)
    w, ws, b = _weights(rng, 64, 128)
    x = rng.standard_normal((40, 128)).astype(np.float32)
    layer = int8.DenseInt8Linear(w, ws, b, isa="amx")
    want = layer(x, num_threads=2)
    for mode in (1, 4):
        out = np.full((40, 64), 7.0, np.float32)
        try:
            assert int8._set_amx_probe(mode) == 0
            layer(x, num_threads=2, out=out)
        finally:
            assert int8._set_amx_probe(0) == mode
        assert (out == 7.0).all(), mode
    np.testing.assert_array_equal(layer(x, num_threads=2), want)


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


@pytest.mark.parametrize("nbytes", [1, 100, 4095, 4096, 70001, 1 << 20])
def test_buffers_of_a_page_or_more_start_a_page(nbytes):
    """The kernels' buffers (packed weights, the encoder's activations and scratch, outputs) start
    a cache line, and a page when they fill one: where a buffer started in its page varied by
    process, and so did the speed (three copies of one 90 %-sparse engine 9 % apart;
    results/bench/zen5-process-level/)."""
    a = int8._aligned_bytes(nbytes)
    assert a.nbytes == nbytes and a.dtype == np.uint8
    assert a.ctypes.data % (4096 if nbytes >= 4096 else 64) == 0, (nbytes, a.ctypes.data % 4096)


@pytest.mark.parametrize("layer_cls", ["DenseInt8Linear", "BlockSparseInt8Linear", "TileSparseInt8Linear"])
def test_packed_weights_start_a_cache_line(isa, layer_cls):
    """Every packed weight array starts on a 64-byte boundary on every ISA: NumPy's own large
    arrays start 16 or 32 bytes past a line (it varies by process), and at 16 half of the AVX2
    kernels' 32-byte weight loads straddle two lines."""
    rng = _rng("align", layer_cls)
    w, ws, b = _weights(rng, 3072, 768, block_sparsity=0.5)
    layer = getattr(int8, layer_cls)(w, ws, b, isa=isa)
    arrays = layer._packed_arrays()
    assert arrays or layer_cls == "BlockSparseInt8Linear"   # its CSR arrays serve off AVX2
    for a in arrays:
        assert a.ctypes.data % 64 == 0, (isa, layer_cls, a.dtype, a.shape, a.ctypes.data % 64)
