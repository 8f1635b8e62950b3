# Argument checks shared by the kernel modules (inline, so no runtime module is needed).
# Uses the NumPy C API (no Python attribute lookups) since it runs on every kernel call.
import numpy as np
cimport numpy as cnp


cdef inline object check_array(object a, str name, object dtype, int ndim):
    """Return `a` if it is an aligned, C-contiguous, native-byte-order numpy array of `dtype`
    with `ndim` dims (-1: >= 1), else raise TypeError (type / dtype) or ValueError (ndim /
    layout) naming the argument."""
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name} must be a numpy.ndarray of {np.dtype(dtype).name}, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef int want = cnp.dtype(dtype).num
    if cnp.PyArray_TYPE(arr) != want or not cnp.PyArray_ISNOTSWAPPED(arr):
        raise TypeError(f"{name} must have dtype {np.dtype(dtype).name}, got {a.dtype}")
    cdef int nd = cnp.PyArray_NDIM(arr)
    if ndim >= 0 and nd != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(a.shape)}")
    if ndim < 0 and nd < 1:
        raise ValueError(f"{name} must have at least 1 dimension, got a 0-D array")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    if not cnp.PyArray_ISALIGNED(arr):
        raise ValueError(f"{name} is not aligned to its dtype (use np.ascontiguousarray / .copy())")
    if cnp.PyArray_SIZE(arr) >= 2147483647:
        raise ValueError(f"{name} is too large ({a.size} elements; kernels index with int32)")
    return a


cdef inline int check_threads(object num_threads) except -1:
    if num_threads is None:
        return 0
    n = int(num_threads)
    if n < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    return n


cdef inline tuple check_weight(object w, str name, object dtype, object bias):
    """Check a layer's weight `w` [N, K] (N, K >= 1, `dtype`) and its optional float32 `bias`
    [N]; return (N, K). Errors name the argument."""
    check_array(w, name, dtype, 2)
    N, K = w.shape
    if N < 1 or K < 1:
        raise ValueError(f"{name} must have N >= 1 and K >= 1, got shape {tuple(w.shape)}")
    if bias is not None:
        check_array(bias, "bias", np.float32, 1)
        if bias.shape[0] != N:
            raise ValueError(f"bias must have shape ({N},) to match {name} {tuple(w.shape)}, got {tuple(bias.shape)}")
    return N, K
