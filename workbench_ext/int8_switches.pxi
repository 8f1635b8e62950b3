# Included by int8.pyx (one module, split by job): the kernels' A/B switches and the tests' views
# of their internals. Timing-only knobs for the benches' A/B scripts; every setting gives the same
# outputs, and none is part of the public API.

cdef extern from "wb_int8.h" nogil:
    void wb_epi_item(const wb_epi_t *e, long t, int MB, int NB, int rows_first, int *mb, int *nb)


def _item_order(int MB, int NB, int col_segments, bint rows_first):
    """Tests: the output tile (row tile, column block) of each work item of an MB x NB grid,
    int32[MB * NB, 2], in the order of ``col_segments`` (wb_epi_item in wb_epilogue.h) for a
    kernel whose own order is rows outermost (``rows_first``) or columns outermost."""
    cdef wb_epi_t e
    e.col_segments = col_segments
    out = np.empty((<long>MB * NB, 2), np.int32)
    cdef int32_t[:, :] o = out
    cdef int mb, nb
    cdef long t
    for t in range(<long>MB * NB):
        wb_epi_item(&e, t, MB, NB, rows_first, &mb, &nb)
        o[t, 0] = mb
        o[t, 1] = nb
    return out


def _set_sparse_pair_cols(int on):
    """Experiment switch (AVX2 16-row sparse kernel): process two output columns per loop."""
    global wb_sparse_pair_cols
    wb_sparse_pair_cols = on


def _set_amx_pipelined(int on):
    """Experiment switch (AMX dense kernel): 1 runs each work item's epilogue between the next
    item's tile multiplies (the default), 0 the plain worker (multiply, store, then epilogue).
    Same results either way; for the A/B in `python -m workbench.bench.gemm` on AMX CPUs."""
    global wb_amx_pipelined
    wb_amx_pipelined = 1 if on else 0


def _set_amx_order(int order, long group_bytes=1 << 20):
    """Experiment switch (AMX dense kernel): the order of the 32x32 work items; 0 panel-pair
    major, 1 grouped (panel pairs whose weights fit `group_bytes` at a time, row blocks outer
    within a group; a layer whose weights all fit stays panel-pair-major).  Same results either way (wb_int8_dense_amx.h).  On an Emerald Rapids the
    grouped order made DistilBERT's GEMMs 0.99-1.15x faster but not the whole forward
    (results/bench/emr-amx/amx_ab.txt), so 0 stays the default."""
    global wb_amx_order, wb_amx_group_bytes
    wb_amx_order = 1 if order else 0
    wb_amx_group_bytes = group_bytes


def _set_amx_probe(int mode):
    """Timing probe (AMX dense kernel, pipelined worker): **outputs are wrong while it is not 0**.
    0 off (the default); 1 skips the epilogue, 2 the tile loads and prefetches, 3 the TDPBUSDs,
    4 writes the epilogue's outputs to a small scratch instead of the output, so that the A/B on
    an AMX CPU (results/bench/emr-amx/amx_ab.py --probe) can say what an item's time is made of.  Returns the previous mode."""
    global wb_amx_probe
    if mode not in (0, 1, 2, 3, 4):
        raise ValueError(f"AMX probe mode must be 0, 1, 2, 3 or 4, got {mode}")
    previous = wb_amx_probe
    wb_amx_probe = mode
    return previous


def _set_amx_tuning(int a_packed, int a_ahead, int b_ahead, int b_next):
    """Experiment switch (AMX dense kernel): where the workers get their operands from, for the
    A/B on AMX CPUs (results/bench/emr-amx/amx_ab.py).  ``a_packed`` 1 copies the activations into
    tile order first (each tile load reads 1 KB in a row); ``a_ahead`` is how many K chunks ahead
    A is prefetched (0 none), ``b_ahead`` likewise for the item's weight panels; ``b_next`` prefetches the next panel pair's weights: 0 not, 1 into
    L2 during the pair's first row block, 2 into L2 spread over all its row blocks, 3 likewise
    into L1.  Same results with every setting.  Returns the previous (a_packed, a_ahead, b_ahead,
    b_next); the default is (0, 2, 0, 1)."""
    global wb_amx_tuning
    if a_packed not in (0, 1) or not 0 <= a_ahead <= 8 or not 0 <= b_ahead <= 8 or b_next not in (0, 1, 2, 3):
        raise ValueError(f"AMX tuning needs a_packed 0/1, a_ahead and b_ahead 0..8, b_next 0..3; got "
                         f"{(a_packed, a_ahead, b_ahead, b_next)}")
    previous = (wb_amx_tuning.a_packed, wb_amx_tuning.a_ahead, wb_amx_tuning.b_ahead, wb_amx_tuning.b_next)
    wb_amx_tuning.a_packed = a_packed
    wb_amx_tuning.a_ahead = a_ahead
    wb_amx_tuning.b_ahead = b_ahead
    wb_amx_tuning.b_next = b_next
    return previous


def _set_sparse_epi_direct(int on):
    """Experiment switch (AVX-512 VNNI sparse epilogue): 1 stores output rows straight after the
    transpose where every row starts a cache line (the default), 0 always through the row buffer.
    Same results either way."""
    global wb_sparse_epi_direct
    wb_sparse_epi_direct = 1 if on else 0


def _set_sparse_vnni_groups(int groups):
    """Experiment switch (AVX-512 VNNI / AMX 1x4 sparse kernel): the most 16-row groups one tile
    of activations takes, 1 to 4, or 0 (the default): by the layer's K, 4 groups or 2 where K >
    1536 (wb_int8_sparse_vnni.h says what was measured).  Same results either way (the packing and
    the kernel read the same value); for the A/B in results/bench/emr-amx/amx_ab.py.  Returns the
    previous value."""
    global wb_spv_gmax
    if not 0 <= groups <= 4:
        raise ValueError(f"sparse VNNI row groups must be 0 (by K) or 1 to 4, got {groups}")
    previous = wb_spv_gmax
    wb_spv_gmax = groups
    return previous
