# Argument checks shared by the kernel modules (inline, so no runtime module is needed).
import numpy as np


cdef inline object check_array(object a, str name, object dtype, int ndim):
    """Return `a` if it is a C-contiguous numpy array of `dtype` with `ndim` dims (-1: >= 1),
    else raise TypeError (type / dtype) or ValueError (ndim / layout) naming the argument."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of {np.dtype(dtype).name}, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype).name}, got {a.dtype}")
    if ndim >= 0 and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(a.shape)}")
    if ndim < 0 and a.ndim < 1:
        raise ValueError(f"{name} must have at least 1 dimension, got a 0-D array")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    if not a.flags.aligned:
        raise ValueError(f"{name} is not aligned to its dtype (use np.ascontiguousarray / .copy())")
    if a.size >= 2**31 - 1:
        raise ValueError(f"{name} is too large ({a.size} elements; kernels index with int32)")
    return a


cdef inline int check_threads(object num_threads) except -1:
    if num_threads is None:
        return 0
    n = int(num_threads)
    if n < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    return n
