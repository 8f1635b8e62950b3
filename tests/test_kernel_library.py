"""The int8 layer on a library GEMM (`int8.LibraryInt8Linear`: torch's `_int_mm`, oneDNN, between
this package's quantization and epilogue): on every ISA the CPU has, its outputs are the dense
kernel's bits -- with and without bias, fused GELU, 7-bit activations, a static grid, the integer
core (`qmatmul`) -- and it leaves torch's thread count as it found it."""
import numpy as np
import pytest

pytest.importorskip("workbench_ext.cpu", reason="workbench_ext not built (python setup.py build_ext --inplace)")
torch = pytest.importorskip("torch")
from workbench_ext import int8  # noqa: E402

from test_kernels import SHAPES, THREADS, _int_reference, _rng, _weights, isa  # noqa: E402,F401

if int8.library_int8_available() is not None:  # pragma: no cover - depends on the torch build
    pytest.skip(int8.library_int8_available(), allow_module_level=True)


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.int32)


@pytest.mark.parametrize("M,K,N", SHAPES + [(128, 768, 96)])
@pytest.mark.parametrize("threads", THREADS)
def test_library_layer_gives_the_dense_kernels_bits(isa, M, K, N, threads):
    rng = _rng("library", M, K, N)
    w, ws, b = _weights(rng, N, K)
    x = (rng.standard_normal((M, K)) * 3 + rng.standard_normal((M, 1))).astype(np.float32)
    for bias in (b, None):
        for act_bits in (8, 7):
            dense = int8.DenseInt8Linear(w, ws, bias, act_bits=act_bits)
            lib = int8.LibraryInt8Linear(w, ws, bias, act_bits=act_bits)
            assert lib.isa == isa
            for activation in (None, "gelu"):
                want = dense(x, num_threads=threads, activation=activation)
                got = lib(x, num_threads=threads, activation=activation)
                np.testing.assert_array_equal(_bits(got), _bits(want), err_msg=f"{bias is None=} {act_bits=} {activation}")
    q, s, z, acc = _int_reference(x, w)
    np.testing.assert_array_equal(int8.LibraryInt8Linear(w, ws, b).qmatmul(q, z, num_threads=threads), acc)


def test_library_layer_static_grid_and_extreme_values(isa):
    rng = _rng("library-static")
    w, ws, b = _weights(rng, 40, 130)
    x = rng.standard_normal((9, 130)).astype(np.float32)
    dense, lib = int8.DenseInt8Linear(w, ws, b), int8.LibraryInt8Linear(w, ws, b)
    np.testing.assert_array_equal(_bits(lib.static(x, 0.02, 100)), _bits(dense.static(x, 0.02, 100)))
    # the largest sums: activations at 255 against zero point 0 and weights at -128 / 127
    w = np.full((8, 1030), -128, np.int8)
    w[1::2] = 127
    q = np.full((3, 1030), 255, np.uint8)
    zp = np.zeros(3, np.int32)
    lib = int8.LibraryInt8Linear(w, np.ones(8, np.float32), None)
    np.testing.assert_array_equal(lib.qmatmul(q, zp), q.astype(np.int64) @ w.astype(np.int64).T)


def test_library_layer_restores_torch_threads():
    rng = _rng("library-threads")
    w, ws, b = _weights(rng, 64, 256)
    x = rng.standard_normal((32, 256)).astype(np.float32)
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    lib = int8.LibraryInt8Linear(w, ws, b)
    lib(x, num_threads=other)
    assert torch.get_num_threads() == before
    assert repr(lib).startswith("LibraryInt8Linear(N=64, K=256")
