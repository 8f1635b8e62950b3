# The runtime's input check in one pass over a batch (wb_inputs.h), included by ops.pyx
# (`scan_batch`) and encoder.pyx (`Int8Encoder.classify_tokens`), after `_ptr` and `check_array`.

cdef extern from "wb_inputs.h" nogil:
    int wb_scan_batch(const int64_t *ids, const int64_t *mask, const int64_t *tt, long B, long S,
                      long vocab, long types, int64_t *counts, int *prefix, long *last)


cdef tuple _scan_batch(object ids, object mask, object tt, long vocab, long types):
    """(ok, counts, prefix, last) of `workbench_ext.ops.scan_batch`; a wrong array (dtype, shape,
    layout) raises, naming it."""
    check_array(ids, "ids", np.int64, 2)
    for a, name in ((mask, "mask"), (tt, "tt")):
        if a is not None and check_array(a, name, np.int64, 2).shape != ids.shape:
            raise ValueError(f"{name} must have the shape of ids {ids.shape}, got {a.shape}")
    cdef long B = ids.shape[0], S = ids.shape[1], last = 0
    counts = np.empty(B, np.int64)
    cdef const int64_t *pm = <const int64_t*>_ptr(mask) if mask is not None else NULL
    cdef const int64_t *pt = <const int64_t*>_ptr(tt) if tt is not None else NULL
    cdef const int64_t *pi = <const int64_t*>_ptr(ids)
    cdef int64_t *pc = <int64_t*>_ptr(counts)
    cdef int ok, prefix = 1
    with nogil:
        ok = wb_scan_batch(pi, pm, pt, B, S, vocab, types, pc, &prefix, &last)
    return bool(ok), counts, bool(prefix), last
